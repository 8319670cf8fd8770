"""Near-duplicate families in the preprocessing job: find them, and split (or thin) by family.

:class:`FindFamilies` turns the dedup's sketches (``partita.near_duplicates``) into one map of
every piece that has a near-duplicate to its family:

* ``BandKeys`` and ``GroupByBand``: each sketch's LSH band keys, grouped, name the candidate
  pairs (only fingerprints cross this shuffle: 42 entries of about 35 bytes a piece);
* ``JoinSketches``: each candidate pair meets both pieces' sketches (a join on fingerprints,
  so that no worker holds every sketch; only candidates' sketches enter it, filtered on a side
  input of the candidate pieces), and ``Verify`` keeps the pairs that are one work;
* ``UnionFind``: one global combine joins the verified pairs into families (connected
  components). It holds only the pieces of verified pairs, so its memory grows with the
  near-duplicates, not with the corpus (one dict entry each; a corpus where every piece had a
  near-duplicate would hold about 200 bytes a piece).

Families chain: A~B and B~C make one family even when A and C share little (a movement,
the whole work, and another movement of it). That is what keeping copies apart needs, and its
risk is a family that grows by chains of stock figures: ``info.json`` reports the largest
family's size, to be looked at when it is a large share of the corpus.

:class:`AssignFamilies` gives each survivor its family's id, which draws its split
(:func:`split_key`), and under ``keep-one`` drops every member but the longest.
"""

from __future__ import annotations

import itertools

import apache_beam as beam
from apache_beam import metrics

from beam_pipelines import elements
from beam_pipelines import info as info_lib
from partita import near_duplicates
from partita import notes as notes_lib

SAME_SPLIT = 'same-split'
KEEP_ONE = 'keep-one'
OFF = 'off'
MODES = (SAME_SPLIT, KEEP_ONE, OFF)
# A band shared by more pieces than this pairs each only with its neighbours in fingerprint
# order: all pairs would grow with the square of a crowded band (a stock figure many short
# pieces share), and a true family still meets in its other bands.
MAX_BAND_PIECES = 64


def split_key(survivor: elements.Survivor) -> str:
  """What draws the survivor's split: a hash of its family's id, else its own fingerprint (hex).

  A piece without a near-duplicate is split as before the search existed.
  """
  if survivor.family:
    return near_duplicates.family_split_key(survivor.family)
  return survivor.fingerprint.hex()


def band_entries(sketch: elements.PieceSketch):
  """A sketch's (band key, fingerprint) pairs."""
  for key in near_duplicates.band_keys(sketch.minhash):
    yield key, sketch.fingerprint


class CandidatePairsFn(beam.DoFn):
  """(band key, fingerprints) -> each pair of them (smaller fingerprint first)."""

  def __init__(self):
    self._crowded = metrics.Metrics.counter('near_duplicates', 'crowded_bands')

  def process(self, band):
    """Yields every pair of the band's pieces, or neighbours only in a crowded band."""
    pieces = sorted(band[1])
    if len(pieces) > MAX_BAND_PIECES:
      self._crowded.inc()
      yield from zip(pieces, pieces[1:])
      return
    yield from itertools.combinations(pieces, 2)


def pair_pieces(pair: tuple[bytes, bytes]):
  """Both pieces of a candidate pair, as keys of a lookup."""
  yield pair[0], None
  yield pair[1], None


def pair_ends(pair: tuple[bytes, bytes]):
  """A candidate pair, keyed by each of its two pieces."""
  yield pair[0], pair
  yield pair[1], pair


def sketch_per_pair(joined):
  """(fingerprint, {sketches, pairs}) -> (pair, the piece's sketch) for each of its pairs."""
  sketches, pairs = joined[1]['sketches'], joined[1]['pairs']
  for sketch in sketches:
    for pair in pairs:
      yield pair, sketch


class VerifyPairFn(beam.DoFn):
  """(pair, its two sketches) -> both pieces as FamilyMembers, if they are one work."""

  def __init__(self):
    self._candidates = metrics.Metrics.counter('near_duplicates', 'candidate_pairs')
    self._verified = metrics.Metrics.counter('near_duplicates', 'verified_pairs')

  def process(self, pair_and_sketches):
    """Yields the pair's two members when the sketches say they are near-duplicates."""
    a, b = pair_and_sketches[1]
    self._candidates.inc()
    if near_duplicates.same_work(near_duplicates.Sketch(a.minhash, a.shingles),
                                 near_duplicates.Sketch(b.minhash, b.shingles)):
      self._verified.inc()
      yield (elements.FamilyMember(a.fingerprint, a.name, a.notes),
             elements.FamilyMember(b.fingerprint, b.name, b.notes))


class UnionFindFn(beam.CombineFn):
  """Verified pairs -> {fingerprint: partita.near_duplicates.Member} for every piece in one.

  The accumulator is a union-find (``parent``) and each piece's notes and name (``sizes``).
  """

  def create_accumulator(self):
    """No pair yet."""
    return {}, {}

  def add_input(self, accumulator, element):
    """Joins the pair's two pieces."""
    parent, sizes = accumulator
    near_duplicates.join(parent, element[0].fingerprint, element[1].fingerprint)
    for member in element:
      sizes[member.fingerprint] = (member.notes, member.name)
    return accumulator

  def merge_accumulators(self, accumulators):
    """Joins every piece with its parent of every union-find."""
    parent, sizes = self.create_accumulator()
    for other_parent, other_sizes in accumulators:
      for piece, its_parent in other_parent.items():
        near_duplicates.join(parent, piece, its_parent)
      sizes.update(other_sizes)
    return parent, sizes

  def extract_output(self, accumulator):
    """Each piece's family id and whether keep-one keeps it."""
    return near_duplicates.families(*accumulator)


class FindFamilies(beam.PTransform):
  """PieceSketches -> one dict: each piece that has a near-duplicate -> its family (a Member)."""

  def expand(self, sketches):
    """Bands, candidate pairs, the join with the sketches, verification, union-find."""
    pairs = (sketches
             | 'BandKeys' >> beam.FlatMap(band_entries).with_output_types(tuple[bytes, bytes])
             | 'GroupByBand' >> beam.GroupByKey()
             | 'CandidatePairs' >> beam.ParDo(CandidatePairsFn())
             | 'DistinctPairs' >> beam.Distinct())
    # Only the sketches of candidates enter the join: most pieces have none.
    candidates = (pairs
                  | 'CandidatePieces' >> beam.FlatMap(pair_pieces)
                  | 'DistinctPieces' >> beam.Distinct())
    wanted = sketches | 'CandidateSketches' >> beam.Filter(
        lambda sketch, pieces: sketch.fingerprint in pieces, beam.pvalue.AsDict(candidates))
    return ({'sketches': wanted | 'ByFingerprint' >> beam.Map(lambda s: (s.fingerprint, s)),
             'pairs': pairs | 'PairEnds' >> beam.FlatMap(pair_ends)}
            | 'JoinSketches' >> beam.CoGroupByKey()
            | 'SketchPerPair' >> beam.FlatMap(sketch_per_pair)
            | 'GroupByPair' >> beam.GroupByKey()
            | 'Verify' >> beam.ParDo(VerifyPairFn())
            | 'UnionFind' >> beam.CombineGlobally(UnionFindFn()))


@beam.typehints.with_output_types(elements.Survivor)
class AssignFamilyFn(beam.DoFn):
  """Survivor -> the survivor with its family's id; under keep-one, a dropped member's stats.

  A dropped member (``keep-one``, not its family's longest) goes to ``stats`` as its split and
  :func:`beam_pipelines.info.near_duplicate_stats`: it and its exact copies stay accounted for.
  """

  def __init__(self, mode: str, split_ratios: dict[str, float]):
    self._keep_one = mode == KEEP_ONE
    self._split_ratios = split_ratios
    self._dropped = metrics.Metrics.counter('near_duplicates', 'dropped')

  def process(self, survivor: elements.Survivor, members: dict):
    """Yields the survivor with its family, or its statistics on ``stats`` if dropped."""
    member = members.get(survivor.fingerprint)
    if member is None:
      yield survivor
      return
    survivor = survivor._replace(family=member.family)
    if self._keep_one and not member.kept:
      self._dropped.inc()
      split = notes_lib.split_for(split_key(survivor), self._split_ratios)
      yield beam.pvalue.TaggedOutput('stats', (split,
                                               info_lib.near_duplicate_stats(survivor.copies)))
      return
    yield survivor


class AssignFamilies(beam.PTransform):
  """Survivors -> survivors with their family's id, and the per-split stats of those dropped.

  ``members`` is :class:`FindFamilies`' output. Outputs a dict: ``survivors`` and ``stats``
  (split, the summed :func:`beam_pipelines.info.near_duplicate_stats` of keep-one's drops).
  """

  def __init__(self, members, mode: str, split_ratios: dict[str, float]):
    super().__init__()
    self._members = members
    self._mode = mode
    self._split_ratios = split_ratios

  def expand(self, survivors):
    """Looks each survivor up in the family map (a side input) and sums the drops per split."""
    assigned = survivors | 'Assign' >> beam.ParDo(
        AssignFamilyFn(self._mode, self._split_ratios),
        beam.pvalue.AsSingleton(self._members)).with_outputs('stats', main='survivors')
    return {'survivors': assigned.survivors,
            'stats': assigned.stats | 'SumDroppedPerSplit' >> beam.CombinePerKey(
                info_lib.SumStatsFn())}
