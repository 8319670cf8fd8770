"""The dataset's info.json: per-piece statistics summed per split, and :class:`WriteInfo`.

:class:`WriteInfo` is the job's last step, which writes info.json and the COMPLETED marker once
every shard exists.
"""

from __future__ import annotations

import collections
import dataclasses
import fractions
import hashlib
import json

import apache_beam as beam
from apache_beam.io import filesystems
import numpy as np

from beam_pipelines import outputs as beam_outputs
from partita import contract, metre, near_duplicates
from partita import labels as labels_lib


def exact(value: float) -> fractions.Fraction:
  """A float as the exact number it is, so that sums of them are the same in any order.

  A split's sums are merged in whatever order the runner's bundles give: float additions would
  make info.json differ in its last digits between runs, runners and local modes.
  """
  return fractions.Fraction(float(value))


def piece_stats(piece: dict[str, np.ndarray], copies: int, num_chunks: int, window_length: int,
                label: str = labels_lib.UNKNOWN, label_conflict: bool = False) -> dict:
  """Additive statistics of one piece labelled ``label`` (summed per split by :class:`SumStatsFn`).

  ``label_conflict``: its copies carried different labels. Sums of real numbers are
  :func:`exact`.
  """
  step = piece['step'].astype(np.float64)
  duration = piece['duration'].astype(np.float64)
  return {
      'pieces': 1,
      'duplicates': copies - 1,
      'near_duplicates': 0,
      'notes': len(step),
      'chunks': num_chunks,
      'windows': contract.num_windows(len(step), window_length),
      # From the first onset to the last note end (not always the end of the last-onset note).
      'seconds': exact(np.max(np.cumsum(step) + duration)),
      'step_sum': exact(step.sum()),
      'step_sq_sum': exact(np.square(step).sum()),
      'duration_sum': exact(duration.sum()),
      'duration_sq_sum': exact(np.square(duration).sum()),
      'pitch_histogram': np.bincount(piece['pitch'], minlength=128).astype(np.int64),
      'labels': collections.Counter({label: 1}),
      'label_conflicts': int(label_conflict),
      **metre_stats(piece),
  }


def metre_stats(piece: dict[str, np.ndarray]) -> dict:
  """Additive statistics of a piece's metre (``partita.metre``).

  Whether it has a grid, and over its notes the sum of log tempos and the count of each bar
  length (quarter notes, as text).
  """
  quarter_seconds = piece['quarter_seconds'].astype(np.float64)
  gridded = quarter_seconds > 0
  return {
      'gridded_pieces': int(gridded.any()),
      'gridded_notes': int(gridded.sum()),
      'log_quarter_seconds_sum': exact(np.log(quarter_seconds[gridded]).sum()),
      'bar_quarters': collections.Counter(
          {f'{length:g}': int(count) for length, count in zip(*np.unique(
              piece['bar_quarters'][gridded].astype(np.float64), return_counts=True))}),
  }


def lost_piece_stats(copies: int, near_duplicates: int = 0) -> dict:
  """The statistics of a piece whose surviving input was lost after the dedup.

  None of its notes is written; its other copies are still duplicates. ``near_duplicates``: 1
  for a piece dropped as a near-duplicate (:func:`near_duplicate_stats`).
  """
  return {'pieces': 0, 'duplicates': copies - 1, 'near_duplicates': near_duplicates,
          'notes': 0, 'chunks': 0, 'windows': 0,
          'seconds': exact(0), 'step_sum': exact(0), 'step_sq_sum': exact(0),
          'duration_sum': exact(0), 'duration_sq_sum': exact(0),
          'pitch_histogram': np.zeros(128, dtype=np.int64),
          'labels': collections.Counter(), 'label_conflicts': 0, 'gridded_pieces': 0,
          'gridded_notes': 0, 'log_quarter_seconds_sum': exact(0),
          'bar_quarters': collections.Counter()}


def near_duplicate_stats(copies: int) -> dict:
  """The statistics of a piece that ``--near-duplicates keep-one`` dropped for a longer one.

  It counts as one near-duplicate, its other copies as duplicates; none of its notes is written.
  """
  return lost_piece_stats(copies, near_duplicates=1)


class SumStatsFn(beam.CombineFn):
  """Sums :func:`piece_stats` dicts key by key."""

  def create_accumulator(self):
    """No statistics yet."""
    return {}

  def add_input(self, accumulator, element):
    """Adds one piece's statistics."""
    return self.merge_accumulators([accumulator, element])

  def merge_accumulators(self, accumulators):
    """Sums the statistics key by key."""
    total = {}
    for accumulator in accumulators:
      for key, value in accumulator.items():
        total[key] = total[key] + value if key in total else value
    return total

  def extract_output(self, accumulator):
    """The sums as they are."""
    return accumulator


def summarize_split(stats: dict) -> dict:
  """JSON-ready per-split summary with timing mean/std and pitch histogram."""
  summary = {key: stats.get(key, 0) for key in ('pieces', 'duplicates', 'near_duplicates',
                                                 'notes', 'chunks', 'windows', 'label_conflicts',
                                                 'gridded_pieces', 'gridded_notes')}
  summary['labels'] = dict(sorted(stats.get('labels', {}).items()))
  notes = summary['notes']
  if not notes:  # no piece written (perhaps lost pieces' duplicates)
    return {**summary, 'seconds': 0.0}
  summary['seconds'] = round(float(stats['seconds']), 3)
  for name in ('step', 'duration'):
    mean = stats[f'{name}_sum'] / notes
    variance = max(stats[f'{name}_sq_sum'] / notes - mean**2, 0)
    summary[f'{name}_mean'] = float(mean)
    summary[f'{name}_std'] = float(variance)**0.5
  summary['pitch_histogram'] = stats['pitch_histogram'].tolist()
  if summary['gridded_notes']:
    # To the microsecond, MIDI's own resolution of a tempo.
    summary['quarter_seconds_geometric_mean'] = round(float(
        np.exp(float(stats['log_quarter_seconds_sum'] / summary['gridded_notes']))), 6)
    summary['bar_quarters'] = dict(sorted(stats['bar_quarters'].items(),
                                          key=lambda item: float(item[0])))
  return summary


def metre_summary(train: dict) -> dict:
  """info.json's ``metre``: how much of the training split has a grid, and where generation starts.

  Where generation from no prime starts: its tempo and bar length (the training notes' geometric
  mean tempo and most common bar length; MIDI's defaults where no training piece has a grid).
  """
  bars = train.get('bar_quarters', {})
  return {
      'gridded_pieces': train.get('gridded_pieces', 0),
      'gridded_notes': train.get('gridded_notes', 0),
      'quarter_seconds': train.get('quarter_seconds_geometric_mean',
                                   metre.DEFAULT_QUARTER_SECONDS),
      # The shortest of the most common, so that ties resolve the same way on every run.
      'bar_quarters': (float(min(bars, key=lambda length: (-bars[length], float(length))))
                       if bars else metre.DEFAULT_BAR_QUARTERS),
  }


def build_info(config, split_stats: dict[str, dict], dead_letter_reasons: dict[str, int],
               input_digests: list[str], written_files: list[str],
               families_found=None) -> dict:
  """The content of info.json.

  ``config`` is the run's :class:`beam_pipelines.preprocess.PreprocessConfig`; the rest is what
  :class:`WriteInfo` gathers: summed :func:`piece_stats` per split, dead letters per reason, one
  digest per input, the paths of the files written, and the near-duplicate families
  (``partita.near_duplicates.Families``; None when the search is off).
  """
  splits = {}
  # Relative names, so a dataset folder can be moved or copied to gs:// as a whole.
  relative_files = sorted(f[len(config.output):].lstrip('/') for f in written_files)
  for split in contract.SPLITS:
    splits[split] = summarize_split(split_stats.get(split, {}))
    # Matched on the relative name: an output folder under e.g. .../train/ must not match.
    splits[split]['files'] = [f for f in relative_files if f.startswith(f'{split}/')]
  dead_letters = dict(sorted(dead_letter_reasons.items()))
  # Pieces that --near-duplicates keep-one dropped for a longer member of their family.
  dropped = sum(splits[s]['near_duplicates'] for s in contract.SPLITS)
  train = splits['train']
  label_pieces = collections.defaultdict(dict)
  for split in contract.SPLITS:
    for label, pieces in splits[split]['labels'].items():
      label_pieces[label][split] = pieces
  return {
      'format_version': contract.FORMAT_VERSION,
      'features': {**contract.FEATURE_DTYPES, contract.LABEL_FEATURE: 'bytes'},
      'window_length': config.window_length,
      'stride': config.stride,
      'compression': 'GZIP' if config.compress else '',
      'shard_patterns': {split: contract.shard_pattern(split) for split in contract.SPLITS},
      'counts': {
          'files_in': len(input_digests),
          'pieces_written': sum(splits[s]['pieces'] for s in contract.SPLITS),
          'duplicates': sum(splits[s]['duplicates'] for s in contract.SPLITS),
          'near_duplicates': dropped,
          'dead_letters': sum(dead_letters.values()),
          'dead_letter_reasons': dead_letters,
          # Pieces whose copies carried different known labels (the smallest-named one's won).
          'label_conflicts': sum(splits[s]['label_conflicts'] for s in contract.SPLITS),
      },
      'labels': labels_lib.vocabulary(label_pieces, config.min_label_pieces, config.label_name),
      'timing': {name: {'mean': train.get(f'{name}_mean', 0.0),
                        'std': train.get(f'{name}_std', 1.0)}
                 for name in ('step', 'duration')},
      'metre': metre_summary(train),
      'near_duplicates': {
          'mode': config.near_duplicates,
          **near_duplicates.family_counts(families_found or near_duplicates.NO_FAMILIES),
          'dropped': dropped,
      },
      'splits': splits,
      'input_fingerprint': hashlib.sha256(''.join(sorted(input_digests)).encode()).hexdigest(),
      'options': dataclasses.asdict(config),
  }


class WriteInfoFn(beam.DoFn):
  """Writes info.json, then the completion marker; yields the counts."""

  def __init__(self, config):
    """``config``: the run's :class:`beam_pipelines.preprocess.PreprocessConfig`."""
    self._config = config

  def process(self, unused_element, split_stats, dead_letter_reasons, input_digests,
              written_files, families_found=None):
    """Writes info.json from the side inputs, then the marker; yields the counts."""
    info = build_info(self._config, split_stats, dead_letter_reasons, input_digests,
                      written_files, families_found)
    output = self._config.output
    beam_outputs.write_atomically(filesystems.FileSystems.join(output, contract.INFO_FILE),
                                  json.dumps(info, indent=1).encode())
    beam_outputs.write_atomically(
        filesystems.FileSystems.join(output, contract.COMPLETED_MARKER),
        (json.dumps(info['counts']) + '\n').encode())
    yield info['counts']


class WriteInfo(beam.PTransform):
  """Writes info.json, then the COMPLETED marker, once every output file is written.

  Outputs the run's counts (the marker's content).

  Applied to a dict of PCollections: ``split_stats`` (split, summed :func:`piece_stats`),
  ``dead_letters`` (every dead-letter record), ``input_digests`` (one per input, see
  :class:`beam_pipelines.inputs.ReadInputs`), ``written_files`` (every shard and dead-letter
  file; waiting for them is what makes the marker come last) and, unless the near-duplicate
  search is off, ``families_found`` (the one ``partita.near_duplicates.Families`` of
  :class:`beam_pipelines.families.FindFamilies`).
  """

  def __init__(self, config):
    """``config``: the run's :class:`beam_pipelines.preprocess.PreprocessConfig`."""
    super().__init__()
    self._config = config

  def expand(self, outputs):
    """Counts the dead letters by reason and writes info.json once, after every written file."""
    reasons = outputs['dead_letters'] | 'CountReasons' >> beam_outputs.CountByReason()
    families = ({'families_found': beam.pvalue.AsSingleton(outputs['families_found'])}
                if 'families_found' in outputs else {})
    return (outputs['written_files'].pipeline
            | 'Once' >> beam.Create([None])
            | 'Write' >> beam.ParDo(
                WriteInfoFn(self._config),
                split_stats=beam.pvalue.AsDict(outputs['split_stats']),
                dead_letter_reasons=beam.pvalue.AsDict(reasons),
                input_digests=beam.pvalue.AsList(outputs['input_digests']),
                written_files=beam.pvalue.AsList(outputs['written_files']), **families))
