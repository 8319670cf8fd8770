"""Near-duplicate pieces: a compact sketch of each piece, and whether two sketches are one work.

Full corpora hold the same work several times: transposed, at another tempo, cut out of a
longer file, or with a voice left out or doubled. Such copies have different notes, so the
exact dedup (``partita.notes.content_fingerprint``) keeps them all; this module finds them.

What a piece is compared by: two lines of notes, each a sequence of tokens. The **onsets'
tops** (:func:`onset_tops`) are the highest note of each onset; the **top line**
(:func:`top_line`) drops from them every note that a higher, still sounding one covers, so
that a copy without its bass or an inner voice keeps it. The first is blind to how long notes
last (the sustain pedal lengthens them in one copy and not another, and on classical-midi that
alone kept a pair of sequencings of one Scarlatti sonata at a Jaccard similarity of 0.09 on the
top line, 0.70 on the onsets' tops); the second to voices under the melody. Each step of a line
is a token of its pitch interval (so transpositions match) and the ratio of its inter-onset
interval to the one before it, quantised to half octaves (so tempo changes and mild rubato
match). A piece is the set of both lines' runs of :data:`SHINGLE_TOKENS` tokens (its
*shingles*), hashed to 64 bits.

The sketch (:func:`sketch`) is a MinHash of that set by one-permutation hashing: the hash range
is cut into :data:`BINS` bins and each bin keeps the smallest hash that falls in it (its top 16
bits after the bin's own), empty bins borrowing from the next full one (densification by
rotation, Shrivastava and Li, ICML 2014). One hash per shingle instead of one per shingle and
permutation makes it cheap enough to compute in the parse itself. Two sketches agree in a bin
with a probability about the sets' Jaccard similarity (:func:`jaccard`).

Which pairs are compared: those that agree in all :data:`ROWS_PER_BAND` bins of at least one
band (:func:`candidate_pairs`, locality-sensitive hashing): a pair of Jaccard similarity ``s`` is
a candidate with probability ``1 - (1 - s**3)**42``: 0.29 at 0.2, 0.68 at 0.3, 0.996 at 0.5.
Which candidates are one work (:func:`same_work`): a Jaccard similarity of at least
:data:`MIN_JACCARD` and at least :data:`MIN_CONTAINMENT` of the smaller piece's shingles in the
other. The second keeps two unrelated pieces that share a stock figure (a scale run, an
Alberti bass) apart: such a figure is a few shingles, a small share of either piece.

Families (:func:`find_families`) are the connected components of the verified pairs, so they
chain: A~B and B~C make one family even when A and C share little (a movement, the whole work,
and another movement of it). That is what keeping copies apart needs; its risk is a family grown
by chains of stock figures, which is why ``info.json`` reports the largest family's size. The
search runs on a table of every piece's sketch (:class:`SketchTable`, about 300 bytes a piece:
15 MB at 50,000 pieces), in arrays, so that its memory and time do not depend on how many
candidates there are per band.

Plain numpy: no Beam here (``beam_pipelines.preprocess`` calls it).
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

import numpy as np

# Notes whose onsets lie within this many seconds are one onset (a chord, perhaps rolled).
CHORD_SECONDS = 0.03
# A note leaves the top line when one of this many onsets before it holds a higher note that
# is still sounding; a longer look-back costs one more vector comparison per onset each.
TOP_LINE_LOOKBACK = 8
# Inter-onset ratios are quantised to steps of 2**(1 / RHYTHM_STEPS_PER_OCTAVE), clipped to
# +-RHYTHM_MAX_STEPS (a ratio of 4 or 1/4).
RHYTHM_STEPS_PER_OCTAVE = 2
RHYTHM_MAX_STEPS = 4
# Tokens per shingle: five steps of the top line, six notes.
SHINGLE_TOKENS = 5
# A piece with fewer distinct shingles gets no sketch and joins no family.
MIN_SHINGLES = 8
# The sketch: BINS bins of 16 bits, 256 bytes a piece.
BINS = 128
BIN_BITS = 7  # log2(BINS)
VALUE_BITS = 16
ROWS_PER_BAND = 3
BANDS = BINS // ROWS_PER_BAND
# Verification thresholds (see the module docstring).
MIN_JACCARD = 0.2
MIN_CONTAINMENT = 0.5
# A band shared by more pieces than this pairs each only with its neighbours in fingerprint
# order: all pairs would grow with the square of a crowded band (a stock figure many short
# pieces share), and a true family still meets in its other bands.
MAX_BAND_PIECES = 64
# Candidate pairs are verified this many at a time (bounds the bins compared at once: 8 MB of
# temporaries, where 65,536 took 40 MB of the searching worker's peak at 50,000 files, for the
# same speed).
VERIFY_BATCH = 8192
# Odd 64-bit constants: the golden ratio's fraction (Fibonacci hashing) for the shingles'
# polynomial, and splitmix64's finaliser for mixing a hash's bits.
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)
# Larger than any note's end in seconds (parse_midi rejects pieces over 4 hours).
_PITCH_KEY = 1e6
# Intervals are shifted by this to make every one a positive digit.
_INTERVAL_OFFSET = 128
# A borrowed bin adds this times its distance to the bin it borrowed from (mod 2**16), so
# that two sketches agree on borrowed bins only when they borrowed alike.
_BORROW_STEP = 0x9E37


class Sketch(NamedTuple):
  """A piece's MinHash (``BINS`` little-endian uint16, as bytes) and its number of shingles."""
  minhash: bytes
  shingles: int


def onset_tops(pitch: np.ndarray, step: np.ndarray,
               duration: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The onsets (seconds), top pitches and top notes' ends of a piece's onsets.

  From a notes dict's ``pitch``, ``step`` and ``duration`` in the data contract's order; notes
  within :data:`CHORD_SECONDS` of an onset belong to it.
  """
  onset = np.cumsum(step.astype(np.float64))
  starts = np.flatnonzero(np.concatenate([[True], np.diff(onset) > CHORD_SECONDS]))
  # One reduction finds each onset's top pitch and, among its notes of that pitch, the latest
  # end: the key's whole part is the pitch, its fraction of a million the end in seconds.
  end = onset + duration.astype(np.float64)
  top = np.maximum.reduceat(pitch.astype(np.float64) * _PITCH_KEY + end, starts)
  top_pitch = np.floor(top / _PITCH_KEY).astype(np.int64)
  return onset[starts], top_pitch, top - top_pitch * _PITCH_KEY


def top_line(onset: np.ndarray, pitch: np.ndarray,
             end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The onsets and pitches of :func:`onset_tops` that no higher, still sounding top covers.

  A top note is covered when one of the :data:`TOP_LINE_LOOKBACK` onsets before it has a
  higher top note that has not ended.
  """
  covered = np.zeros(len(onset), bool)
  for back in range(1, TOP_LINE_LOOKBACK + 1):
    covered[back:] |= ((end[:-back] > onset[back:] + CHORD_SECONDS)
                       & (pitch[:-back] > pitch[back:]))
  return onset[~covered], pitch[~covered]


def tokens(onset: np.ndarray, pitch: np.ndarray) -> np.ndarray:
  """One token per step of a top line after its first: interval and quantised onset ratio."""
  interval = np.diff(pitch)[1:]
  gap = np.maximum(np.diff(onset), CHORD_SECONDS)
  ratio = np.clip(np.round(np.log2(gap[1:] / gap[:-1]) * RHYTHM_STEPS_PER_OCTAVE),
                  -RHYTHM_MAX_STEPS, RHYTHM_MAX_STEPS).astype(np.int64)
  return (interval + _INTERVAL_OFFSET) * (2 * RHYTHM_MAX_STEPS + 1) + ratio + RHYTHM_MAX_STEPS


def mix(values: np.ndarray) -> np.ndarray:
  """splitmix64's finaliser: every bit of the result depends on every bit of ``values``."""
  # Array arithmetic on integers wraps silently (only numpy scalars warn of overflow).
  values = (values ^ (values >> np.uint64(30))) * _MIX_1
  values = (values ^ (values >> np.uint64(27))) * _MIX_2
  return values ^ (values >> np.uint64(31))


def shingles(*token_arrays: np.ndarray) -> np.ndarray:
  """The sorted, distinct 64-bit hashes of every run of :data:`SHINGLE_TOKENS` tokens of each."""
  hashes = [np.zeros(0, np.uint64)]
  for token_values in token_arrays:
    digits = token_values.astype(np.uint64)
    count = len(digits) - SHINGLE_TOKENS + 1
    if count < 1:
      continue
    polynomial = digits[:count].copy()
    for offset in range(1, SHINGLE_TOKENS):  # wraps silently, as in mix()
      polynomial = polynomial * _MULTIPLIER + digits[offset:offset + count]
    hashes.append(polynomial)
  return sorted_distinct(mix(np.concatenate(hashes)))


def sorted_distinct(values: np.ndarray) -> np.ndarray:
  """``values``' distinct elements in ascending order."""
  # Sorting and masking: np.unique (hashing, in numpy 2) took 15x as long on this machine.
  values = np.sort(values)
  distinct = np.ones(len(values), bool)
  distinct[1:] = values[1:] != values[:-1]
  return values[distinct]


def minhash(hashes: np.ndarray) -> np.ndarray:
  """One-permutation MinHash of sorted distinct ``hashes``, densified (BINS uint16)."""
  bin_of = (hashes >> np.uint64(64 - BIN_BITS)).astype(np.int64)
  first = np.searchsorted(bin_of, np.arange(BINS))
  full = first < len(hashes)
  full[full] = bin_of[first[full]] == np.arange(BINS)[full]
  value = ((hashes[np.minimum(first, len(hashes) - 1)] >> np.uint64(64 - BIN_BITS - VALUE_BITS))
           & np.uint64(2**VALUE_BITS - 1)).astype(np.int64)
  # Each empty bin borrows from the next full one, circularly, marked by its distance.
  full_bins = np.flatnonzero(full)
  position = np.searchsorted(full_bins, np.arange(BINS)) % len(full_bins)
  lender = full_bins[position]
  distance = (lender - np.arange(BINS)) % BINS
  return ((value[lender] + distance * _BORROW_STEP) % 2**VALUE_BITS).astype(np.uint16)


def sketch(piece: dict[str, np.ndarray]) -> Sketch | None:
  """A notes dict's :class:`Sketch`, or None when it has under :data:`MIN_SHINGLES` shingles.

  Its shingles are those of its onsets' top notes and of its top line (see the module
  docstring).
  """
  onset, pitch, end = onset_tops(piece['pitch'], piece['step'], piece['duration'])
  hashes = shingles(tokens(onset, pitch), tokens(*top_line(onset, pitch, end)))
  if len(hashes) < MIN_SHINGLES:
    return None
  return Sketch(minhash(hashes).astype('<u2').tobytes(), len(hashes))


def similarities(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """The estimated Jaccard similarity of each row of two ``[pairs, BINS]`` MinHash arrays."""
  return np.mean(a == b, axis=1)


def containments(similarity: np.ndarray, shingles_a: np.ndarray,
                 shingles_b: np.ndarray) -> np.ndarray:
  """The share of each pair's smaller shingle set in the larger, from similarity and sizes."""
  shared = similarity * (shingles_a + shingles_b) / (1 + similarity)
  return np.minimum(shared / np.minimum(shingles_a, shingles_b), 1.0)


def one_work(minhashes: np.ndarray, shingle_counts: np.ndarray, pairs: np.ndarray) -> np.ndarray:
  """Whether each row ``(i, j)`` of ``pairs`` are near-duplicates (see the module docstring)."""
  verdict = np.zeros(len(pairs), bool)
  for start in range(0, len(pairs), VERIFY_BATCH):
    i, j = pairs[start:start + VERIFY_BATCH].T
    similarity = similarities(minhashes[i], minhashes[j])
    verdict[start:start + VERIFY_BATCH] = (
        (similarity >= MIN_JACCARD)
        & (containments(similarity, shingle_counts[i], shingle_counts[j]) >= MIN_CONTAINMENT))
  return verdict


def jaccard(a: bytes, b: bytes) -> float:
  """The Jaccard similarity of two pieces' shingle sets, estimated from their MinHashes."""
  return float(similarities(np.frombuffer(a, '<u2')[None], np.frombuffer(b, '<u2')[None])[0])


def containment(similarity: float, shingles_a: int, shingles_b: int) -> float:
  """The share of the smaller set in the larger, from their Jaccard similarity and sizes."""
  return float(containments(np.float64(similarity), shingles_a, shingles_b))


def same_work(a: Sketch, b: Sketch) -> bool:
  """Whether two sketches are near-duplicates (see the module docstring)."""
  minhashes = np.stack([np.frombuffer(a.minhash, '<u2'), np.frombuffer(b.minhash, '<u2')])
  return bool(one_work(minhashes, np.array([a.shingles, b.shingles], np.float64),
                       np.array([[0, 1]]))[0])


def band_values(minhashes: np.ndarray, band: int) -> np.ndarray:
  """Each row's LSH key in ``band``: its :data:`ROWS_PER_BAND` bins there as one integer."""
  values = np.zeros(len(minhashes), np.uint64)
  for column in range(band * ROWS_PER_BAND, (band + 1) * ROWS_PER_BAND):
    values = (values << np.uint64(VALUE_BITS)) | minhashes[:, column].astype(np.uint64)
  return values


def candidate_pairs(minhashes: np.ndarray) -> np.ndarray:
  """The distinct pairs ``(i, j)``, ``i < j``, of rows that agree in every bin of some band.

  Within a band of more than :data:`MAX_BAND_PIECES` rows, only neighbours (in row order) pair.
  """
  rows = len(minhashes)
  codes = np.zeros(0, np.int64)  # i * rows + j: one integer a pair, sorted and distinct
  for band in range(BANDS):
    values = band_values(minhashes, band)
    order = np.argsort(values, kind='stable')  # rows of one value together, ascending
    ordered = values[order]
    group = np.cumsum(np.concatenate([[False], ordered[1:] != ordered[:-1]]))
    group_size = np.bincount(group)[group]
    # Row k of the order pairs with row k + d of its group: every pair once, as d grows to
    # the largest uncrowded group's size; a crowded group pairs neighbours only (d = 1).
    largest = int(group_size[group_size <= MAX_BAND_PIECES].max(initial=1))
    found = [codes]
    for distance in range(1, max(largest, 2)):
      same = group[distance:] == group[:-distance]
      if distance > 1:
        same &= group_size[distance:] <= MAX_BAND_PIECES
      found.append(order[:-distance][same] * rows + order[distance:][same])
    codes = sorted_distinct(np.concatenate(found))
  return np.stack([codes // rows, codes % rows], axis=1) if rows else np.zeros((0, 2), np.int64)


class Member(NamedTuple):
  """A member of a family: its family's id, and whether ``keep-one`` keeps it."""
  family: bytes
  kept: bool


class SketchTable(NamedTuple):
  """Sketched inputs, one row each: its piece's fingerprint, its name, notes and :class:`Sketch`.

  ``minhashes`` is ``[n, BINS]`` uint16; the others are sequences of length n.
  """
  fingerprints: list
  names: list
  notes: np.ndarray
  shingles: np.ndarray
  minhashes: np.ndarray


class Families(NamedTuple):
  """What the search found.

  ``members``: each piece of a family of two or more, its fingerprint -> its :class:`Member`;
  how many candidate pairs it compared, and how many of them were one work.
  """
  members: dict
  candidate_pairs: int
  verified_pairs: int


NO_FAMILIES = Families({}, 0, 0)


def find_families(table: SketchTable) -> Families:
  """The :class:`Families` of the pieces of ``table``.

  Rows of one fingerprint (copies of one piece) count once. Families are the connected
  components of the verified candidate pairs. A family's id is its smallest fingerprint; the
  member ``keep-one`` keeps is the one with the most notes, then the smallest name.
  """
  # One row a piece, in fingerprint order: of the rows of one piece's copies, the
  # smallest-named (the copy the exact dedup keeps).
  order = sorted(range(len(table.fingerprints)),
                 key=lambda row: (table.fingerprints[row], table.names[row]))
  order = [row for i, row in enumerate(order)
           if i == 0 or table.fingerprints[row] != table.fingerprints[order[i - 1]]]
  fingerprints = [table.fingerprints[i] for i in order]
  minhashes = table.minhashes[order]
  pairs = candidate_pairs(minhashes)
  verified = pairs[one_work(minhashes, table.shingles[order].astype(np.float64), pairs)]
  if not len(verified):
    return Families({}, len(pairs), 0)
  # Rows are in fingerprint order, so each family's smallest row holds its id.
  family = smallest_connected(verified, len(order))
  in_family = sorted_distinct(verified.ravel())
  longest = {}
  for row in in_family:
    original = order[row]
    rank = (-int(table.notes[original]), table.names[original])
    best = longest.get(family[row])
    if best is None or rank < best[0]:
      longest[family[row]] = (rank, row)
  return Families({fingerprints[row]: Member(fingerprints[family[row]],
                                             bool(row == longest[family[row]][1]))
                   for row in in_family}, len(pairs), len(verified))


def smallest_connected(pairs: np.ndarray, count: int) -> np.ndarray:
  """For each of ``count`` rows, the smallest row that ``pairs`` (rows ``(i, j)``) connect it to.

  The connected components of the graph, each named by its smallest row: each round gives both
  ends of every pair the smaller of their labels, then each row its label's label, until none
  changes (a few rounds: families are small). A label only falls, and stays in its row's
  component, whose smallest row keeps its own. scipy's ``connected_components`` does the same,
  but importing ``scipy.sparse`` took 0.23 s, in the job's one step that runs on one core
  (docs/experiments.md, "note-seq as an extra, one sink for the three splits").
  """
  label = np.arange(count)
  while True:
    low = np.minimum(label[pairs[:, 0]], label[pairs[:, 1]])
    lowered = label.copy()
    np.minimum.at(lowered, pairs[:, 0], low)
    np.minimum.at(lowered, pairs[:, 1], low)
    lowered = lowered[lowered]
    if np.array_equal(lowered, label):
      return label
    label = lowered


def family_split_key(family: bytes) -> str:
  """The hex digest that draws a family's split: a hash of its id, not the id itself.

  The id is the smallest fingerprint of the family's members, and the smallest of k uniform
  hashes lies near 0: drawn from the id itself, on a 5,000-file corpus of variants 96% of the
  pieces went to train (the first split). A hash of the id is uniform again.
  """
  return hashlib.sha256(family).hexdigest()


def family_counts(found: Families) -> dict[str, int]:
  """The counts of what the search found, for info.json.

  How many families of two or more pieces, how many pieces they hold, the largest's size; how
  many candidate pairs the search compared and verified.
  """
  sizes: dict[bytes, int] = {}
  for member in found.members.values():
    sizes[member.family] = sizes.get(member.family, 0) + 1
  return {'families': len(sizes), 'pieces_in_families': len(found.members),
          'largest_family': max(sizes.values(), default=0),
          'candidate_pairs': found.candidate_pairs, 'verified_pairs': found.verified_pairs}
