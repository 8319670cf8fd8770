"""Near-duplicate families in the preprocessing job: find them, and split (or thin) by family.

:class:`FindFamilies` is one global combine (:class:`FindFamiliesFn`) of the sketch of every
parsed input, straight from the parse, into a :class:`partita.near_duplicates.SketchTable` of
arrays: about 300 bytes a piece (its fingerprint, name, notes, shingle count and 256-byte
MinHash). Combiner lifting packs each bundle's sketches into one table before the shuffle, so
the shuffle carries those bytes and no notes; the worker that merges the tables runs the
locality-sensitive hashing, the verification and the connected components
(:func:`partita.near_duplicates.find_families`) in numpy, and outputs one
``partita.near_duplicates.Families``. Its memory is the table: 15 MB at 50,000 pieces, 300 MB
at a million, whatever the number of candidate pairs.

Why one combine rather than band keys in the shuffle and a join per candidate pair (the first
version): the local runner held those groups and joins as Python objects, so that the default
command's peak memory grew 1.59x from 2,400 to 50,000 files (docs/experiments.md, "Near-duplicate
families by default, in one global combine").

:class:`AssignFamilies` gives each survivor its family's id, which draws its split
(:func:`split_key`), and under ``keep-one`` drops every member but the longest.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam import metrics
import numpy as np

from beam_pipelines import elements
from beam_pipelines import info as info_lib
from partita import near_duplicates
from partita import notes as notes_lib

SAME_SPLIT = 'same-split'
KEEP_ONE = 'keep-one'
OFF = 'off'
MODES = (SAME_SPLIT, KEEP_ONE, OFF)
# Sketches held as Python objects before they join a table's arrays (about 600 against 300
# bytes a piece).
TABLE_ROWS = 4096


def split_key(survivor: elements.Survivor) -> str:
  """What draws the survivor's split: a hash of its family's id, else its own fingerprint (hex).

  A piece without a near-duplicate is split as before the search existed.
  """
  if survivor.family:
    return near_duplicates.family_split_key(survivor.family)
  return survivor.fingerprint.hex()


class FindFamiliesFn(beam.CombineFn):
  """PieceSketches -> their ``partita.near_duplicates.Families``.

  The accumulator is a list of sketches added since the last :meth:`compact` and the tables
  compacted so far; it crosses the shuffle as one :class:`~partita.near_duplicates.SketchTable`.
  """

  def create_accumulator(self):
    """No sketch yet: (sketches added, tables)."""
    return [], []

  def add_input(self, accumulator, sketch: elements.PieceSketch):
    """Keeps the sketch, in a table once :data:`TABLE_ROWS` of them wait."""
    accumulator[0].append(sketch)
    return self.compact(accumulator) if len(accumulator[0]) >= TABLE_ROWS else accumulator

  def compact(self, accumulator):
    """One table of everything the accumulator holds."""
    sketches, tables = accumulator
    if sketches:
      tables = tables + [near_duplicates.SketchTable(
          [s.fingerprint for s in sketches], [s.name for s in sketches],
          np.array([s.notes for s in sketches], np.int64),
          np.array([s.shingles for s in sketches], np.int64),
          np.stack([np.frombuffer(s.minhash, '<u2') for s in sketches]))]
    if len(tables) > 1:
      tables = [near_duplicates.SketchTable(
          [f for t in tables for f in t.fingerprints], [n for t in tables for n in t.names],
          np.concatenate([t.notes for t in tables]), np.concatenate([t.shingles for t in tables]),
          np.concatenate([t.minhashes for t in tables]))]
    return [], tables

  def merge_accumulators(self, accumulators):
    """The accumulators' sketches and tables together, compacted."""
    accumulators = list(accumulators)
    return self.compact(([s for a in accumulators for s in a[0]],
                         [t for a in accumulators for t in a[1]]))

  def extract_output(self, accumulator):
    """The families of every sketch (``partita.near_duplicates.find_families``)."""
    _, tables = self.compact(accumulator)
    return near_duplicates.find_families(tables[0]) if tables else near_duplicates.NO_FAMILIES


class FindFamilies(beam.PTransform):
  """PieceSketches -> one ``partita.near_duplicates.Families``."""

  def expand(self, sketches):
    """One global combine of the sketches (see the module docstring)."""
    return sketches | 'SketchTable' >> beam.CombineGlobally(FindFamiliesFn())


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

  def process(self, survivor: elements.Survivor, found: near_duplicates.Families):
    """Yields the survivor with its family, or its statistics on ``stats`` if dropped."""
    member = found.members.get(survivor.fingerprint)
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

  ``found`` is :class:`FindFamilies`' output. Outputs a dict: ``survivors`` and ``stats``
  (split, the summed :func:`beam_pipelines.info.near_duplicate_stats` of keep-one's drops).
  """

  def __init__(self, found, mode: str, split_ratios: dict[str, float]):
    super().__init__()
    self._found = found
    self._mode = mode
    self._split_ratios = split_ratios

  def expand(self, survivors):
    """Looks each survivor up in the family map (a side input) and sums the drops per split."""
    assigned = survivors | 'Assign' >> beam.ParDo(
        AssignFamilyFn(self._mode, self._split_ratios),
        beam.pvalue.AsSingleton(self._found)).with_outputs('stats', main='survivors')
    return {'survivors': assigned.survivors,
            'stats': assigned.stats | 'SumDroppedPerSplit' >> beam.CombinePerKey(
                info_lib.SumStatsFn())}
