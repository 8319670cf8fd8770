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
band (:func:`band_keys`, locality-sensitive hashing): a pair of Jaccard similarity ``s`` is a
candidate with probability ``1 - (1 - s**3)**42``: 0.29 at 0.2, 0.68 at 0.3, 0.996 at 0.5.
Which candidates are one work (:func:`same_work`): a Jaccard similarity of at least
:data:`MIN_JACCARD` and at least :data:`MIN_CONTAINMENT` of the smaller piece's shingles in the
other. The second keeps two unrelated pieces that share a stock figure (a scale run, an
Alberti bass) apart: such a figure is a few shingles, a small share of either piece.

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
  group = np.cumsum(np.concatenate([[0], np.diff(onset) > CHORD_SECONDS]))
  starts = np.flatnonzero(np.concatenate([[True], np.diff(group) > 0]))
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
  with np.errstate(over='ignore'):
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
    with np.errstate(over='ignore'):
      for offset in range(1, SHINGLE_TOKENS):
        polynomial = polynomial * _MULTIPLIER + digits[offset:offset + count]
    hashes.append(polynomial)
  # Sorting and masking: np.unique took 15x as long on this machine (numpy 2).
  hashes = np.sort(mix(np.concatenate(hashes)))
  distinct = np.ones(len(hashes), bool)
  distinct[1:] = hashes[1:] != hashes[:-1]
  return hashes[distinct]


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


def band_keys(minhash_bytes: bytes) -> list[bytes]:
  """The sketch's LSH keys: each band's index and its bins' values."""
  band_bytes = ROWS_PER_BAND * VALUE_BITS // 8
  return [bytes([band]) + minhash_bytes[band * band_bytes:(band + 1) * band_bytes]
          for band in range(BANDS)]


def jaccard(a: bytes, b: bytes) -> float:
  """The Jaccard similarity of two pieces' shingle sets, estimated from their MinHashes."""
  return float(np.mean(np.frombuffer(a, '<u2') == np.frombuffer(b, '<u2')))


def containment(similarity: float, shingles_a: int, shingles_b: int) -> float:
  """The share of the smaller set in the larger, from their Jaccard similarity and sizes."""
  shared = similarity * (shingles_a + shingles_b) / (1 + similarity)
  return min(shared / min(shingles_a, shingles_b), 1.0)


def same_work(a: Sketch, b: Sketch) -> bool:
  """Whether two sketches are near-duplicates (see the module docstring)."""
  similarity = jaccard(a.minhash, b.minhash)
  return (similarity >= MIN_JACCARD
          and containment(similarity, a.shingles, b.shingles) >= MIN_CONTAINMENT)


def root(parent: dict[bytes, bytes], piece: bytes) -> bytes:
  """The representative of ``piece``'s family in the union-find ``parent`` (path halving)."""
  while parent.get(piece, piece) != piece:
    parent[piece] = parent.get(parent[piece], parent[piece])
    piece = parent[piece]
  return piece


def join(parent: dict[bytes, bytes], a: bytes, b: bytes) -> None:
  """Puts ``a`` and ``b`` in one family of the union-find ``parent``; the smaller root wins."""
  root_a, root_b = root(parent, a), root(parent, b)
  if root_a != root_b:
    parent[max(root_a, root_b)] = min(root_a, root_b)
    parent.setdefault(min(root_a, root_b), min(root_a, root_b))


class Member(NamedTuple):
  """A member of a family: its family's id, and whether ``keep-one`` keeps it."""
  family: bytes
  kept: bool


def families(parent: dict[bytes, bytes],
             sizes: dict[bytes, tuple[int, str]]) -> dict[bytes, Member]:
  """Each piece of the union-find ``parent``'s families of two or more, as a :class:`Member`.

  A family's id is its smallest fingerprint (the union-find's root, as :func:`join` keeps it).
  ``sizes`` maps each piece to its number of notes and name: the kept member is the one with the
  most notes, then the smallest name.
  """
  by_family: dict[bytes, list[bytes]] = {}
  for piece in parent:
    by_family.setdefault(root(parent, piece), []).append(piece)
  members = {}
  for family, pieces in by_family.items():
    kept = min(pieces, key=lambda piece: (-sizes[piece][0], sizes[piece][1]))
    members.update({piece: Member(family, piece == kept) for piece in pieces})
  return members


def family_split_key(family: bytes) -> str:
  """The hex digest that draws a family's split: a hash of its id, not the id itself.

  The id is the smallest fingerprint of the family's members, and the smallest of k uniform
  hashes lies near 0: drawn from the id itself, on a 5,000-file corpus of variants 96% of the
  pieces went to train (the first split). A hash of the id is uniform again.
  """
  return hashlib.sha256(family).hexdigest()


def family_counts(members: dict[bytes, Member]) -> dict[str, int]:
  """How many families of two or more pieces, how many pieces they hold, the largest's size."""
  sizes: dict[bytes, int] = {}
  for member in members.values():
    sizes[member.family] = sizes.get(member.family, 0) + 1
  return {'families': len(sizes), 'pieces_in_families': len(members),
          'largest_family': max(sizes.values(), default=0)}
