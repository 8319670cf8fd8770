"""Per-piece music features on hand-made pieces, and Yang & Lerch's set comparison."""

import warnings

import numpy as np
import pytest

from partita import music_stats

# C major triad, then the triad again half a second later with other lengths, then a high C.
# Onsets 0 0 0 0.5 0.5 0.5 1.0; ends 0.5 0.5 0.5 0.75 0.75 1.5 3.0.
PIECE = {
    'pitch': np.array([60, 64, 67, 60, 64, 67, 72]),
    'step': np.array([0.0, 0, 0, 0.5, 0, 0, 0.5]),
    'duration': np.array([0.5, 0.5, 0.5, 0.25, 0.25, 1.0, 2.0]),
    'velocity': np.full(7, 80),
}


def test_piece_features_exact_values():
  features = music_stats.piece_features(PIECE)
  assert list(features) == list(music_stats.FEATURES)
  expected_pc = np.zeros(12)
  expected_pc[[0, 4, 7]] = [3 / 7, 2 / 7, 2 / 7]
  np.testing.assert_allclose(features['pitch_class_histogram'], expected_pc)
  assert features['pitch_range'] == [12]
  # Sounding at 0: 3; at 0.5: the second triad (the first ends there): 3; at 1.0: 67 and 72.
  assert features['polyphony'] == pytest.approx([8 / 3])
  assert features['inter_onset_interval'] == pytest.approx([0.5])
  np.testing.assert_allclose(features['duration_histogram'],
                             np.array([0, 0, 0, 2, 3, 1, 1, 0]) / 7)
  transitions = np.zeros((12, 12))
  transitions[0, 4] = transitions[4, 7] = transitions[7, 0] = 1 / 3
  np.testing.assert_allclose(features['pitch_class_transitions'], transitions.ravel())
  assert features['scale_consistency'] == [1.0]
  entropy = -(3 / 7 * np.log2(3 / 7) + 2 * (2 / 7) * np.log2(2 / 7))
  assert features['pitch_class_entropy'] == pytest.approx([entropy])
  assert features['note_density'] == pytest.approx([7 / 3])  # 7 notes from 0 s to 3 s
  assert features['repetition_rate'] == [0.0]  # four distinct 4-note patterns
  # Perceived onsets 0, 0.5, 1.0: one ratio, 1:1; chords at 0 and 0.5, not at 1.0; 3 s is one
  # 2 s window (with the remainder), too short for a rate variation.
  np.testing.assert_array_equal(features['ioi_ratio_histogram'], _one_hot(UNISON_BIN))
  assert features['chord_onset_fraction'] == pytest.approx([2 / 3])
  np.testing.assert_array_equal(features['onset_rate_variation'], [0.0, 0.0])


RATIO_BINS = 11
UNISON_BIN = 5  # the 1:1 bin; 1:4, 1:3, 1:2, 2:3 below it, 3:2, 2:1, 3:1, 4:1 above


def _one_hot(index):
  vector = np.zeros(RATIO_BINS)
  vector[index] = 1.0
  return vector


def _notes(step, duration):
  step = np.asarray(step, dtype=np.float64)
  return {'pitch': np.full(len(step), 60), 'step': step,
          'duration': np.broadcast_to(np.asarray(duration, dtype=np.float64), step.shape)}


def test_rhythm_feature_constants():
  assert set(music_stats.RHYTHM_FEATURES) <= set(music_stats.FEATURES)
  assert music_stats.FEATURES[-3:] == ('ioi_ratio_histogram', 'chord_onset_fraction',
                                       'onset_rate_variation')
  assert music_stats.ONSET_TOLERANCE == 0.005
  # Centres 1:4 ... 4:1 each fall in their own bin, in order, with the open bins outside.
  bins = np.searchsorted(music_stats.IOI_RATIO_EDGES,
                         np.log2([1 / 8, 1 / 4, 1 / 3, 1 / 2, 2 / 3, 1, 3 / 2, 2, 3, 4, 8]),
                         side='right')
  np.testing.assert_array_equal(bins, np.arange(RATIO_BINS))
  assert music_stats.IOI_RATIO_EDGES[4:6] == pytest.approx([-0.5 * np.log2(1.5),
                                                            0.5 * np.log2(1.5)])


def test_steady_pulse():
  # Eight notes every 0.5 s, each 0.5 s long: 6 ratios, all 1:1; no chords; over 0..4 s two
  # windows of 4 onsets each, 2 per second in both.
  features = music_stats.piece_features(_notes(np.full(8, 0.5), 0.5))
  np.testing.assert_array_equal(features['ioi_ratio_histogram'], _one_hot(UNISON_BIN))
  np.testing.assert_array_equal(features['chord_onset_fraction'], [0.0])
  np.testing.assert_array_equal(features['onset_rate_variation'], [0.0, 0.0])


def test_three_note_chords():
  # Three 3-note chords a second apart.
  features = music_stats.piece_features(_notes([0, 0, 0, 1, 0, 0, 1, 0, 0], 1.0))
  np.testing.assert_array_equal(features['chord_onset_fraction'], [1.0])
  np.testing.assert_array_equal(features['ioi_ratio_histogram'], _one_hot(UNISON_BIN))


def test_mixed_rhythm_exact_values():
  # Onsets 0, 0.5, 1, 1, 1 + 1/256, 1.25, 1.5, 3, 3, 4 (every value exact in binary); the note
  # at 1 + 1/256 s (3.9 ms late) joins the chord at 1 s. Perceived onsets 0, 0.5, 1, 1.25, 1.5,
  # 3, 4, chords at 1 (3 notes) and 3 (2 notes).
  step = [0, 0.5, 0.5, 0, 1 / 256, 0.25 - 1 / 256, 0.25, 1.5, 0, 1.0]
  duration = [0.25] * 9 + [2.0]  # the last note ends at 6 s
  features = music_stats.piece_features(_notes(step, duration))
  assert features['chord_onset_fraction'] == pytest.approx([2 / 7])
  # Intervals 0.5 0.5 0.25 0.25 1.5 1; ratios 1:1, 1:2, 1:1, 6:1 (beyond 4:1), 2:3.
  expected = np.zeros(RATIO_BINS)
  expected[[3, 4, 5, 10]] = [0.2, 0.2, 0.4, 0.2]
  np.testing.assert_allclose(features['ioi_ratio_histogram'], expected)
  # Windows [0, 2), [2, 4), [4, 6]: 5, 1 and 1 onsets, rates 2.5, 0.5, 0.5 per second; mean
  # 7/6, population std 2 sqrt(2) / 3, so CV 4 sqrt(2) / 7; no empty window.
  np.testing.assert_allclose(features['onset_rate_variation'], [4 * np.sqrt(2) / 7, 0.0])


def test_onset_rate_variation_sees_a_stall():
  # A 0.5 s pulse at 0..1.5 s, silence, then 5 and 5.5 s, the last note ending at 6 s: windows
  # [0, 2), [2, 4), [4, 6] with rates 2, 0, 1 per second; mean 1, std sqrt(2/3).
  features = music_stats.piece_features(_notes([0, 0.5, 0.5, 0.5, 3.5, 0.5], 0.5))
  np.testing.assert_allclose(features['onset_rate_variation'], [np.sqrt(2 / 3), 1 / 3])
  # The remainder of a window joins the last one: ending at 6.5 s, the last window is [4, 6.5],
  # 2 onsets in 2.5 s, so the rates are 2, 0 and 0.8 per second.
  longer = music_stats.piece_features(_notes([0, 0.5, 0.5, 0.5, 3.5, 0.5], [0.5] * 5 + [1.0]))
  # Mean 14/15, deviations 16/15, -14/15, -2/15: std sqrt(152) / 15, CV sqrt(38) / 7.
  np.testing.assert_allclose(longer['onset_rate_variation'], [np.sqrt(38) / 7, 1 / 3])


def test_onset_tolerance_boundary():
  # 4 ms apart is one onset; 5 ms apart (exactly the tolerance) is two. Anchoring at a group's
  # first onset: three onsets 3 ms apart make two groups (0 and 6 ms; 3 ms joins the first).
  times, sizes = music_stats.perceived_onsets(np.array([0.0, 0.004, 1.0, 1.005]))
  np.testing.assert_array_equal(times, [0.0, 1.0, 1.005])
  np.testing.assert_array_equal(sizes, [2, 1, 1])
  times, sizes = music_stats.perceived_onsets(np.array([0.0, 0.003, 0.006]))
  np.testing.assert_array_equal(times, [0.0, 0.006])
  np.testing.assert_array_equal(sizes, [2, 1])


@pytest.mark.parametrize('notes, chord_fraction, rate_variation', [
    (_notes([0.0], 0.5), 0.0, [0.0, 0.0]),  # one note
    (_notes([0.0], 5.0), 0.0, [1.0, 0.5]),  # one note held over [0, 2), [2, 5]: rates 0.5, 0
    (_notes([0.0, 0, 0], 1.0), 1.0, [0.0, 0.0]),  # one chord
    (_notes([0.0, 0, 0], 0.0), 1.0, [0.0, 0.0]),  # one chord lasting no time: zero span
    (_notes([0.0, 0.002, 0.001], 0.0), 1.0, [0.0, 0.0]),  # one spread chord, zero length
    (_notes([0.0, 1.0], 1.0), 0.0, [0.0, 0.0]),  # two onsets: one interval, no ratio
])
def test_rhythm_edge_cases(notes, chord_fraction, rate_variation):
  with warnings.catch_warnings(), np.errstate(all='raise'):
    warnings.simplefilter('error')
    features = music_stats.piece_features(notes)
  for name in music_stats.FEATURES:
    assert features[name].dtype == np.float64 and features[name].ndim == 1
    assert np.isfinite(features[name]).all(), name
  assert features['ioi_ratio_histogram'].shape == (RATIO_BINS,)
  np.testing.assert_array_equal(features['ioi_ratio_histogram'], np.zeros(RATIO_BINS))
  np.testing.assert_array_equal(features['chord_onset_fraction'], [chord_fraction])
  np.testing.assert_allclose(features['onset_rate_variation'], rate_variation)


def test_repetition_rate_and_scale_consistency():
  piece = {'pitch': np.array([60, 62] * 4 + [61]), 'step': np.full(9, 0.25),
           'duration': np.full(9, 0.25)}
  features = music_stats.piece_features(piece)
  # Six 4-note patterns: 60 62 60 62, 62 60 62 60 (each three times but the last, which is
  # 62 60 62 61): three new, three repeats.
  assert features['repetition_rate'] == pytest.approx([0.5])
  # C# is outside C major; the best diatonic scale holds 8 of the 9 notes.
  assert features['scale_consistency'] == pytest.approx([8 / 9])
  assert music_stats.scale_consistency(np.arange(60, 72)) == 7 / 12  # the chromatic scale
  assert music_stats.scale_consistency([66, 68, 70, 71, 73, 75, 77, 54]) == 1.0  # F# major


def test_set_features_and_distances():
  pieces = [PIECE, dict(PIECE, pitch=PIECE['pitch'] + 2)]
  features = music_stats.set_features(pieces)
  assert features['pitch_range'].shape == (2, 1)
  assert features['pitch_class_transitions'].shape == (2, 144)
  np.testing.assert_allclose(
      music_stats.intra_set_distances(np.array([[0.0], [3.0], [7.0]])), [3.0, 7.0, 4.0])
  np.testing.assert_allclose(
      music_stats.inter_set_distances(np.array([[0.0, 0.0]]), np.array([[3.0, 4.0],
                                                                        [0.0, 1.0]])),
      [5.0, 1.0])


def test_bandwidth_is_scotts_rule_with_a_floor():
  samples = np.array([1.0, 2.0, 3.0, 4.0])
  assert music_stats.bandwidth(samples, 4.0) == pytest.approx(
      samples.std(ddof=1) * 4 ** (-1 / 5))
  assert music_stats.bandwidth(np.array([2.0, 2.0]), 2.0) == pytest.approx(2e-3)


def test_overlap_and_divergence_limits():
  rng = np.random.default_rng(0)
  sample = rng.normal(size=200)
  same = music_stats.overlap_and_divergence(sample, sample)
  assert same['oa'] == pytest.approx(1.0, abs=1e-12)
  assert same['kld'] == pytest.approx(0.0, abs=1e-12)
  density, grid = same['reference_density'], same['grid']
  assert ((density[1:] + density[:-1]) * np.diff(grid)).sum() / 2 == pytest.approx(1.0)
  apart = music_stats.overlap_and_divergence(sample, sample + 100)
  assert apart['oa'] < 1e-6
  assert apart['kld'] > 5


def test_compare_sets_ranks_a_shifted_set_below_a_matching_one():
  rng = np.random.default_rng(1)

  def random_set(offset):
    return {name: rng.normal(offset, 1.0, size=(30, 3)) for name in music_stats.FEATURES}

  reference = random_set(0.0)
  close = music_stats.compare_sets(reference, random_set(0.0))
  far = music_stats.compare_sets(reference, random_set(3.0))
  for name in music_stats.FEATURES:
    assert close[name]['oa'] > far[name]['oa']
    assert close[name]['kld'] < far[name]['kld']
    assert close[name]['intra'].shape == (30 * 29 // 2,)
    assert close[name]['inter'].shape == (30 * 30,)
  with pytest.raises(ValueError):
    music_stats.compare_sets({name: v[:2] for name, v in reference.items()}, reference)
