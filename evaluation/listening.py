"""The evaluation's "measures a listener hears": pulse, key, texture and a two-sample test.

They are computed for the real continuations, the model's pieces and the n-gram's pieces side
by side.

:func:`summary` computes ``results['listening']`` from the three sets that
``evaluation.evaluate.generated_statistics`` builds from the same test primes: per set, the
median and mean over pieces of each measure of ``partita.listening`` (on-grid share, key
stability, notes per onset, pitch span per 4 s); the model's and the n-gram's median on-grid
share as a ratio of the real set's; the held-out accuracy of a random forest telling each
generated set from the real one, and the real set's even-indexed pieces from its odd-indexed
ones (the floor; ``evaluation.two_sample``); the overlapping areas of ``scale_consistency`` and
``pitch_class_entropy`` from the music statistics; and whether the model meets
:data:`TARGETS`. :func:`report_section` and :func:`headline_lines` show them.

No TensorFlow here: plain numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from evaluation import two_sample
from partita import listening as measures

GENERATED = ('model', 'n-gram')
SETS = ('real', *GENERATED)
REAL_HALVES = 'real halves'
OA_FEATURES = ('scale_consistency', 'pitch_class_entropy')
# What the model should reach: a median on-grid share at least 0.8 of the real one's, a
# two-sample accuracy against real of at most 75%, and an overlapping area of at least 0.75 on
# each of OA_FEATURES.
TARGETS = {'on_grid_ratio': 0.8, 'two_sample_accuracy': 0.75, 'music_stats_oa': 0.75}
MEASURE_TITLES = {'on_grid_share': 'on-grid share', 'key_stability': 'key stability',
                  'notes_per_onset': 'notes per onset',
                  'pitch_span': 'pitch span per 4 s (semitones)'}


def summary(sets: Mapping[str, Sequence[Mapping[str, np.ndarray]]], statistics: Mapping,
            seed: int = 0) -> dict:
  """``results['listening']`` from ``{'real' | 'model' | 'n-gram': pieces}`` and the statistics.

  The statistics are ``results['statistics']``; returns ``{'skipped': reason}`` when they were
  skipped.
  """
  if 'skipped' in statistics:
    return {'skipped': statistics['skipped']}
  per_set = {name: measures.set_measures(sets[name]) for name in SETS}
  real_grid = per_set['real']['on_grid_share']['median']
  tests = {name: two_sample.accuracy(sets['real'], sets[name], seed) for name in GENERATED}
  tests[REAL_HALVES] = two_sample.real_halves(sets['real'], seed)
  oa = {feature: {name: statistics['features'][feature][name]['oa'] for name in GENERATED}
        for feature in OA_FEATURES}
  result = {
      'pieces': len(sets['real']),
      'sets': per_set,
      'on_grid_ratio': {name: per_set[name]['on_grid_share']['median'] / real_grid
                        if real_grid > 0 else None for name in GENERATED},
      'two_sample': tests,
      'music_stats_oa': oa,
      'targets': dict(TARGETS),
  }
  result['model_meets_targets'] = _meets_targets(result)
  return result


def _meets_targets(result: Mapping) -> dict[str, bool | None]:
  """Each target, met by the model or not (None when its figure is missing)."""
  ratio = result['on_grid_ratio']['model']
  test = result['two_sample']['model']
  met = {'on_grid_ratio': None if ratio is None else ratio >= TARGETS['on_grid_ratio'],
         'two_sample_accuracy': None if 'skipped' in test
         else test['accuracy'] <= TARGETS['two_sample_accuracy']}
  for feature in OA_FEATURES:
    met[f'{feature}_oa'] = result['music_stats_oa'][feature]['model'] >= TARGETS['music_stats_oa']
  return met


def _verdict(met: bool | None) -> str:
  return {True: 'met', False: 'missed', None: 'n/a'}[met]


def _accuracy(test: Mapping) -> str:
  if 'skipped' in test:
    return 'skipped'
  return f"{test['accuracy']:.0%} +/- {test['standard_error']:.0%}"


def headline_lines(listening: Mapping) -> list[str]:
  """The listening measures' headline lines.

  Pulse and key, texture, the two-sample test and the model's targets.
  """
  if 'skipped' in listening:
    return [f"listening       skipped: {listening['skipped']}"]
  sets = listening['sets']

  def row(measure: str, digits: int) -> str:
    return ', '.join(f"{name} {sets[name][measure]['median']:.{digits}f}" for name in SETS)

  ratio = listening['on_grid_ratio']['model']
  tests = listening['two_sample']
  met = listening['model_meets_targets']
  oa = listening['music_stats_oa']
  return [
      f"listening       median on-grid share {row('on_grid_share', 3)} (model/real "
      f"{'n/a' if ratio is None else f'{ratio:.2f}'}); key stability {row('key_stability', 3)}",
      f"texture         median notes per onset {row('notes_per_onset', 2)}; pitch span per 4 s "
      f"{row('pitch_span', 1)} semitones",
      f"two-sample      forest accuracy telling real from model {_accuracy(tests['model'])}, "
      f"from n-gram {_accuracy(tests['n-gram'])}, real halves {_accuracy(tests[REAL_HALVES])} "
      f"(held out, {listening['pieces']} real pieces; 50% = indistinguishable)",
      f"targets         model on-grid ratio {'n/a' if ratio is None else f'{ratio:.2f}'} "
      f"(>= {TARGETS['on_grid_ratio']}): {_verdict(met['on_grid_ratio'])}; two-sample "
      f"accuracy {_accuracy(tests['model'])} (<= {TARGETS['two_sample_accuracy']:.0%}): "
      f"{_verdict(met['two_sample_accuracy'])}; "
      + '; '.join(f"OA {feature} {oa[feature]['model']:.3f} (>= {TARGETS['music_stats_oa']}): "
                  f"{_verdict(met[f'{feature}_oa'])}" for feature in OA_FEATURES)]


def table(listening: Mapping) -> list[str]:
  """The Markdown table: a row per figure, a column per set, and the model's target."""
  sets, met = listening['sets'], listening['model_meets_targets']
  lines = ['| measure | real | model | n-gram | target for the model |',
           '| --- | ---: | ---: | ---: | --- |']
  for measure, title in MEASURE_TITLES.items():
    digits = 1 if measure == 'pitch_span' else 3
    for statistic in ('median', 'mean'):
      lines.append(f'| {title}, {statistic} | ' + ' | '.join(
          f'{sets[name][measure][statistic]:.{digits}f}' for name in SETS) + ' |  |')
  ratios = listening['on_grid_ratio']
  lines.append('| on-grid share, median / real\'s | 1 | ' + ' | '.join(
      'n/a' if ratios[name] is None else f'{ratios[name]:.3f}' for name in GENERATED)
      + f" | >= {TARGETS['on_grid_ratio']}: {_verdict(met['on_grid_ratio'])} |")
  tests = listening['two_sample']
  lines.append(f'| two-sample accuracy against real (held out) | '
               f'{_accuracy(tests[REAL_HALVES])} (halves) | '
               + ' | '.join(_accuracy(tests[name]) for name in GENERATED)
               + f" | <= {TARGETS['two_sample_accuracy']:.0%}: "
               f"{_verdict(met['two_sample_accuracy'])} |")
  for feature in OA_FEATURES:
    values = listening['music_stats_oa'][feature]
    lines.append(f'| OA {feature} (music statistics) | | {values["model"]:.3f} | '
                 f'{values["n-gram"]:.3f} | >= {TARGETS["music_stats_oa"]}: '
                 f'{_verdict(met[f"{feature}_oa"])} |')
  return lines


def report_section(listening: Mapping) -> str:
  """The report's Markdown section of the listening measures."""
  if 'skipped' in listening:
    return f"## Measures a listener hears\n\nSkipped: {listening['skipped']}.\n"
  tests = listening['two_sample']
  folds = sorted({test['folds'] for test in tests.values() if 'folds' in test})
  return (
      '## Measures a listener hears\n\n'
      f"The same {listening['pieces']} primes and continuations as the music statistics. "
      '*On-grid share*: the share of a piece\'s distinct onsets (onsets less than 5 ms apart '
      'are one) within 20 ms of its own grid, whose spacing is the most common inter-onset '
      'interval rounded to 10 ms (halved when over 0.2 s) and whose origin is the first onset. '
      '*Key stability*: the share of sliding 32-note windows (stride 1) whose best-fitting '
      'Krumhansl-Kessler key (correlation with the note-count pitch-class histogram, 24 keys) is '
      'the whole piece\'s. *Notes per onset*: notes starting at each distinct onset, on average. '
      '*Pitch span*: highest minus lowest pitch starting in each 4-second stretch, median over '
      'stretches. Medians and means are over pieces. *Two-sample accuracy*: a random forest '
      f'({two_sample.TREES} trees) on {len(measures.FEATURE_NAMES)} plain features per piece '
      '(sorted pitch-class shares, pitch mean, spread and range, notes per onset, log-step and '
      'log-duration statistics, intervals, onset rate, on-grid share) tells each set from the '
      f"real one, scored by stratified {'/'.join(map(str, folds)) or '-'}-fold cross-validation:"
      ' 50% means it cannot tell them apart, +/- one binomial standard error; *real halves* '
      'tells the real set\'s even-indexed pieces from its odd-indexed ones, the floor.\n\n'
      + '\n'.join(table(listening)) + '\n')
