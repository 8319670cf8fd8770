"""Per-piece music features on hand-made pieces, and Yang & Lerch's set comparison."""

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


def test_repetition_rate_and_scale_consistency():
  piece = {'pitch': np.array([60, 62] * 4 + [61]), 'step': np.full(9, 0.25),
           'duration': np.full(9, 0.25)}
  features = music_stats.piece_features(piece)
  # Six 4-note patterns: 60 62 60 62, 62 60 62 60 (each three times but the last, which is
  # 62 60 62 61): three new, three repeats.
  assert features['repetition_rate'] == pytest.approx([0.5])
  # C# is outside C major; the best diatonic scale holds 8 of the 9 notes.
  assert features['scale_consistency'] == pytest.approx([8 / 9])


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
