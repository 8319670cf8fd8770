"""The measures a listener hears, the two-sample classifier and the evaluation's section.

The measures (partita.listening) on hand-made pieces with known answers, the two-sample
classifier (evaluation.two_sample) on synthetic sets, and the evaluation's section
(evaluation.listening).
"""

import numpy as np
import pytest

from evaluation import listening as listening_section
from evaluation import two_sample
from partita import listening

C_MAJOR = [60, 62, 64, 65, 67, 69, 71, 72]  # C D E F G A B C
G_MAJOR = [67, 69, 71, 72, 74, 76, 78, 79]  # G A B C D E F# G


def _piece(pitch, step, duration=0.4):
  pitch = np.asarray(pitch, dtype=np.int64)
  return {'pitch': pitch, 'step': np.asarray(step, dtype=np.float64),
          'duration': np.full(len(pitch), duration), 'velocity': np.full(len(pitch), 64)}


def _from_onsets(pitch, times):
  times = np.asarray(times, dtype=np.float64)
  return _piece(pitch, np.concatenate([[0.0], np.diff(times)]))


def test_onsets_every_half_second_are_all_on_the_grid():
  piece = _piece([60] * 10, [0.5] * 10)
  # The modal IOI, 0.5 s, is over 0.2 s: the grid is its half, 0.25 s.
  assert listening.grid_spacing(np.arange(10) * 0.5) == 0.25
  assert listening.on_grid_share(piece) == 1.0


def test_two_of_ten_onsets_60_ms_late_are_off_the_grid():
  times = np.arange(10) * 0.5
  times[[3, 7]] += 0.060  # IOIs 0.56 and 0.44 around each; 0.5 s is still the mode (5 of 9)
  assert listening.on_grid_share(_from_onsets([60] * 10, times)) == 0.8
  # 20 ms off is on the grid, 21 ms off is not (the first onset is the origin).
  times = np.arange(10) * 0.5
  times[3] += 0.020
  times[7] -= 0.021
  assert listening.on_grid_share(_from_onsets([60] * 10, times)) == 0.9


def test_the_grid_groups_chords_and_keeps_short_iois_whole():
  # Chords of 3 (notes 1 ms apart are one onset) every 0.2 s: 0.2 s is not over 0.2 s, so it
  # is the grid itself, and an onset at 0.1 s past one is off it.
  step = [0.0, 0.001, 0.001] + [0.198, 0.001, 0.001] * 5
  piece = _piece([60, 64, 67] * 6, step)
  assert listening.on_grid_share(piece) == 1.0
  times = [0.0, 0.2, 0.4, 0.6, 0.8, 0.9]
  assert listening.grid_spacing(np.array(times)) == pytest.approx(0.2)
  assert listening.on_grid_share(_from_onsets([60] * 6, times)) == pytest.approx(5 / 6)
  assert listening.on_grid_share(_piece([60, 64, 67], [0.0, 0.0, 0.0])) == 1.0  # one onset


def test_a_repeated_c_major_scale_stays_in_c_major():
  piece = _piece(C_MAJOR * 8, [0.25] * 64)
  assert listening.KEY_NAMES[listening.piece_key(piece)] == 'C major'
  assert len(listening.window_keys(piece)) == 64 - 32 + 1
  assert listening.key_stability(piece) == 1.0
  # Shorter than a window: the piece is its one window.
  assert listening.key_stability(_piece(C_MAJOR * 2, [0.25] * 16)) == 1.0


def test_key_profiles_find_the_tonic_of_transposed_and_minor_scales():
  a_minor_harmonic = [57, 59, 60, 62, 64, 65, 68, 69]
  assert listening.KEY_NAMES[listening.piece_key(_piece(a_minor_harmonic * 4, [0.25] * 32))] == (
      'A minor')
  e_flat_major = [pitch + 3 for pitch in C_MAJOR]
  assert listening.KEY_NAMES[listening.piece_key(_piece(e_flat_major * 4, [0.25] * 32))] == (
      'Eb major')
  # Every pitch class equally often correlates with no profile: no key, so no stability.
  chromatic = _piece(list(range(60, 72)) * 4, [0.25] * 48)
  assert listening.piece_key(chromatic) == listening.NO_KEY
  assert listening.key_stability(chromatic) == 0.0


def test_a_piece_modulating_halfway_keeps_its_key_in_about_half_its_windows():
  # 64 notes of C major, then 64 of G major: 97 windows of 32 notes. The piece's key is
  # C major. Windows 0..48 hold at least half their notes in the C major part (window 48 holds
  # 16 of each, and the C major profile fits that mix better than the G major one); windows
  # 49..96 hold more of the G major part and are in G major.
  piece = _piece(C_MAJOR * 8 + G_MAJOR * 8, [0.25] * 128)
  assert listening.KEY_NAMES[listening.piece_key(piece)] == 'C major'
  keys = listening.window_keys(piece)
  np.testing.assert_array_equal(keys, [0] * 49 + [7] * 48)
  assert listening.key_stability(piece) == 49 / 97


def test_chords_of_three_make_three_notes_per_onset():
  piece = _piece([60, 64, 67] * 4, [0.5, 0.0, 0.0] * 4)
  assert listening.notes_per_onset(piece) == 3.0
  assert listening.notes_per_onset(_piece(C_MAJOR, [0.25] * 8)) == 1.0


def test_pitch_span_is_the_median_over_four_second_stretches():
  # Onsets 0, 1, ..., 9 s: stretches [0, 4) span 12, [4, 8) span 2, [8, 12) span 24.
  pitch = [60, 72, 64, 66, 50, 51, 52, 50, 40, 64]
  piece = _piece(pitch, [1.0] * 10)
  assert listening.pitch_span(piece) == 12.0
  assert listening.pitch_span(_piece([60], [0.0])) == 0.0


def test_feature_vector_exact_values():
  # C E G as a chord every 0.5 s, four times: onsets 0, 0.5, 1, 1.5; the last ends at 1.9 s.
  piece = _piece([60, 64, 67] * 4, [0.5, 0.0, 0.0] * 4)
  features = dict(zip(listening.FEATURE_NAMES, listening.feature_vector(piece)))
  assert len(features) == 24
  assert [features[f'pitch_class_share_{rank}'] for rank in (1, 2, 3, 4)] == [1 / 3] * 3 + [0.0]
  assert features['pitch_mean'] == pytest.approx(191 / 3)
  assert features['pitch_range'] == 7.0 and features['notes_per_onset'] == 3.0
  assert features['log_step_mean'] == pytest.approx(np.log(0.5))
  assert features['log_step_std'] == 0.0
  assert features['log_duration_mean'] == pytest.approx(np.log(0.4))
  # Intervals 4, 3, -7, 4, 3, -7, 4, 3, -7, 4, 3: none over 7 semitones.
  assert features['mean_abs_interval'] == pytest.approx(49 / 11)
  assert features['leap_share'] == 0.0
  assert features['onsets_per_second'] == pytest.approx(4 / 1.9)
  assert features['on_grid_share'] == 1.0
  # The sorted shares do not depend on the key.
  transposed = _piece([62, 66, 69] * 4, [0.5, 0.0, 0.0] * 4)
  np.testing.assert_array_equal(listening.feature_vector(transposed)[:12],
                                listening.feature_vector(piece)[:12])


def _tonal(rng, notes=64):
  """A stepwise C major melody in sixteenths at 0.25 s."""
  degrees = np.cumsum(rng.integers(-2, 3, notes)) + 14
  pitch = 48 + 12 * (degrees // 7) + np.array([0, 2, 4, 5, 7, 9, 11])[degrees % 7]
  return {'pitch': pitch, 'step': np.full(notes, 0.25), 'duration': np.full(notes, 0.25),
          'velocity': np.full(notes, 64)}


def _atonal(rng, notes=64):
  """Random pitches at random times."""
  return {'pitch': rng.integers(36, 96, notes), 'step': rng.exponential(0.2, notes),
          'duration': rng.exponential(0.4, notes), 'velocity': np.full(notes, 64)}


@pytest.fixture(scope='module')
def synthetic_sets():
  rng = np.random.default_rng(1)
  return {'tonal': [_tonal(rng) for _ in range(8)], 'atonal': [_atonal(rng) for _ in range(8)],
          'tonal again': [_tonal(rng) for _ in range(8)]}


def test_two_sample_tells_clearly_different_sets_apart(synthetic_sets):
  result = two_sample.accuracy(synthetic_sets['tonal'], synthetic_sets['atonal'], seed=0)
  assert result['accuracy'] > 0.9
  assert result['folds'] == 5 and result['pieces'] == [8, 8] and result['chance'] == 0.5
  assert result['standard_error'] == pytest.approx(
      np.sqrt(result['accuracy'] * (1 - result['accuracy']) / 16))


def test_two_sample_cannot_tell_two_draws_of_one_generator_apart(synthetic_sets):
  first = two_sample.accuracy(synthetic_sets['tonal'], synthetic_sets['tonal again'], seed=0)
  # 0.5 with scikit-learn 1.9 (8 + 8 pieces: steps of 1/16); the folds and the forest are
  # seeded, so the same on every run.
  assert 0.3 <= first['accuracy'] <= 0.7
  # At 0.5 on 16 pieces one standard error is 12.5 points: a tie and a clear verdict overlap.
  assert first['standard_error'] == pytest.approx(
      np.sqrt(first['accuracy'] * (1 - first['accuracy']) / 16))
  assert first['standard_error'] > 0.11


def test_two_sample_degrades_with_few_pieces(synthetic_sets):
  tonal, atonal = synthetic_sets['tonal'], synthetic_sets['atonal']
  few = two_sample.accuracy(tonal[:2], atonal[:3])
  assert few['folds'] == 2 and few['pieces'] == [2, 3] and few['chance'] == 0.6
  assert few['standard_error'] == pytest.approx(
      np.sqrt(few['accuracy'] * (1 - few['accuracy']) / 5))
  assert 0.0 <= few['accuracy'] <= 1.0
  skipped = two_sample.accuracy(tonal[:1], atonal)
  assert 'at least 2 in each' in skipped['skipped'] and 'accuracy' not in skipped
  # Real halves of 3 pieces: 2 against 1, skipped; of 4: 2 against 2, two folds.
  assert 'skipped' in two_sample.real_halves(tonal[:3])
  assert two_sample.real_halves(tonal[:4])['pieces'] == [2, 2]


def _statistics(oa):
  return {'features': {feature: {name: {'oa': oa, 'kld': 0.1} for name in ('model', 'n-gram')}
                       for feature in listening_section.OA_FEATURES}}


def test_the_evaluation_section_sets_side_by_side(synthetic_sets, monkeypatch):
  monkeypatch.setattr(two_sample, 'TREES', 20)  # the wiring, not the forest, is tested here
  sets = {'real': synthetic_sets['tonal'][:4], 'model': synthetic_sets['tonal again'][:4],
          'n-gram': synthetic_sets['atonal'][:4]}
  result = listening_section.summary(sets, _statistics(0.8))
  assert result['pieces'] == 4
  for name in ('real', 'model'):
    assert result['sets'][name]['on_grid_share'] == {'median': 1.0, 'mean': 1.0,
                                                     'values': [1.0] * 4}
    assert result['sets'][name]['notes_per_onset']['median'] == 1.0
  assert result['on_grid_ratio']['model'] == 1.0
  assert result['on_grid_ratio']['n-gram'] < 0.8
  assert result['two_sample']['n-gram']['accuracy'] > 0.9
  assert result['two_sample']['real halves']['pieces'] == [2, 2]
  assert result['music_stats_oa']['scale_consistency'] == {'model': 0.8, 'n-gram': 0.8}
  assert result['model_meets_targets']['on_grid_ratio'] is True
  assert result['model_meets_targets']['scale_consistency_oa'] is True
  lines = listening_section.headline_lines(result)
  assert lines[0].startswith('listening       median on-grid share real 1.000, model 1.000')
  assert lines[-1].startswith('targets         model on-grid ratio 1.00 (>= 0.8): met; ')
  ngram = result['two_sample']['n-gram']
  assert f"from n-gram {ngram['accuracy']:.0%} +/- {ngram['standard_error']:.0%}, " in lines[2]
  section = listening_section.report_section(result)
  assert '| on-grid share, median | 1.000 | 1.000 |' in section
  assert '| OA pitch_class_entropy (music statistics) | | 0.800 | 0.800 | >= 0.75: met |' in (
      section)
  skipped = listening_section.summary({}, {'skipped': 'too few'})
  assert skipped == {'skipped': 'too few'}
  assert listening_section.headline_lines(skipped) == ['listening       skipped: too few']
