"""trainer.timing_distribution against closed forms.

The bins' masses, the chord's point mass, sampling and temperature, and the TF binning against
partita.timing_bins.
"""

import numpy as np
import pytest
from scipy import special
import tensorflow as tf

from partita import timing_bins
from trainer import timing_distribution

NUM_BINS = timing_bins.NUM_BINS
LOG_QUARTER = float(np.log(0.25))

# (mixture logits, locations, scales, chord logit or None): one component, a mixture of three
# (one of them wide enough to put mass below 5 ms and above 30 s), and each with a chord mass.
PARAMETER_SETS = {
    'single': ([0.0], [LOG_QUARTER], [0.3], None),
    'mixture': ([0.5, -1.0, 2.0], [np.log(0.02), 0.0, np.log(4.0)], [0.05, 2.0, 0.7], None),
    'single with chord': ([0.0], [LOG_QUARTER], [0.3], 0.5),
    'mixture with chord': ([0.5, -1.0, 2.0], [np.log(0.02), 0.0, np.log(4.0)],
                           [0.05, 2.0, 0.7], -1.5),
}


def parameters(logits, locations, scales, chord, rows=1):
  """The named parameters of one distribution, repeated over ``rows`` rows (float32)."""
  def tiled(values):
    return tf.constant(np.tile(np.asarray(values, np.float32), (rows, 1)))

  result = {'mixture_logits': tiled(logits), 'locations': tiled(locations),
            'scales': tiled(scales)}
  if chord is not None:
    result['chord_logit'] = tf.fill([rows], np.float32(chord))
  return result


def every_bin_probability(logits, locations, scales, chord) -> np.ndarray:
  """``exp(log_bin_probability)`` of each of the NUM_BINS bins, float64."""
  log_probs = timing_distribution.log_bin_probability(
      parameters(logits, locations, scales, chord, rows=NUM_BINS), tf.range(NUM_BINS))
  return np.exp(log_probs.numpy().astype(np.float64))


def reference_component(location: float, scale: float) -> np.ndarray:
  """One logistic's mass in each bin, in float64.

  ``sigmoid((upper - mu) / s) - sigmoid((lower - mu) / s)``; where both edges lie above the
  location, as ``sigmoid(-lower') - sigmoid(-upper')``, the same number without subtracting two
  values near 1.
  """
  above = (timing_bins.LOG_UPPER - location) / scale
  below = (timing_bins.LOG_LOWER - location) / scale
  return np.where(below > 0, special.expit(-below) - special.expit(-above),
                  special.expit(above) - special.expit(below))


@pytest.mark.parametrize('name', sorted(PARAMETER_SETS))
def test_every_bin_together_holds_all_the_mass(name):
  probs = every_bin_probability(*PARAMETER_SETS[name])
  assert (probs > 0).all()
  assert probs.sum() == pytest.approx(1.0, abs=1e-4)


def test_a_single_components_bin_mass_is_the_difference_of_its_cdf_at_the_edges():
  for location, scale in ((LOG_QUARTER, 0.3), (np.log(0.5), 0.02), (np.log(3.0), 1.5)):
    probs = every_bin_probability([0.0], [location], [scale], None)
    expected = reference_component(location, scale)
    assert expected.sum() == pytest.approx(1.0, abs=1e-10)
    # Measured: 4e-6 relative at worst, float32's rounding of the log-space edges (1e-7
    # relative of a few units) over the scale.
    np.testing.assert_allclose(probs, expected, rtol=2e-5, atol=1e-12)
    assert (expected > 1e-3).sum() >= 5  # the mass is spread over several bins


def test_a_mixtures_bin_mass_is_the_weighted_sum_of_its_components():
  logits, locations, scales, _ = PARAMETER_SETS['mixture']
  weights = special.softmax(np.asarray(logits, np.float64))
  expected = sum(weight * reference_component(location, scale)
                 for weight, location, scale in zip(weights, locations, scales))
  probs = every_bin_probability(logits, locations, scales, None)
  np.testing.assert_allclose(probs, expected, rtol=2e-5, atol=1e-12)


def test_the_step_puts_its_chord_mass_in_bin_0():
  logits, locations, scales, chord = PARAMETER_SETS['mixture with chord']
  with_chord = every_bin_probability(logits, locations, scales, chord)
  without = every_bin_probability(logits, locations, scales, None)
  chord_mass = special.expit(chord)
  assert with_chord[0] == pytest.approx(chord_mass + (1 - chord_mass) * without[0], rel=1e-5)
  np.testing.assert_allclose(with_chord[1:], (1 - chord_mass) * without[1:], rtol=1e-5)
  # A sure chord: bin 0 holds everything.
  sure = every_bin_probability(logits, locations, scales, 30.0)
  assert sure[0] == pytest.approx(1.0, abs=1e-6)
  assert sure[1:].sum() < 1e-6


def uniforms(components, rows, seed):
  """The random numbers sample() takes, from a stateless seed: the same seed, the same draws."""
  return tf.random.stateless_uniform(
      [rows, timing_distribution.uniforms_per_draw(components)], tf.constant(seed, tf.int64),
      minval=np.finfo(np.float32).tiny, maxval=1.0)


def sample(name, temperature=1.0, seed=(7, 11), rows=20_000):
  distribution = parameters(*PARAMETER_SETS[name], rows=rows)
  return timing_distribution.sample(
      distribution, tf.constant(temperature),
      uniforms(distribution['locations'].shape[-1], rows, seed)).numpy()


def test_sampling_is_deterministic_for_a_seed():
  first = sample('mixture with chord', seed=(3, 4), rows=500)
  np.testing.assert_array_equal(first, sample('mixture with chord', seed=(3, 4), rows=500))
  assert (first != sample('mixture with chord', seed=(3, 5), rows=500)).mean() > 0.5


# 20,000 rows: a frequency p has a binomial standard deviation of sqrt(p (1 - p) / 20000) <=
# 0.0036; the fixed seeds make these checks deterministic, the tolerances (4 standard
# deviations) say how far from the expected value a correct sampler may land by chance.
ROWS = 20_000


def test_sampled_steps_are_chords_with_the_chord_probability():
  steps = sample('single with chord')
  chord = special.expit(0.5)  # 0.622
  tolerance = 4 * np.sqrt(chord * (1 - chord) / ROWS)  # 0.0137
  assert (steps == 0).mean() == pytest.approx(chord, abs=tolerance)
  assert (steps >= 0).all()


def test_non_chord_samples_follow_the_logistic_over_log_seconds():
  steps = sample('single with chord')
  log_steps = np.log(steps[steps > 0].astype(np.float64))
  n = len(log_steps)
  scale = 0.3
  for q in (0.1, 0.25, 0.5, 0.75, 0.9):
    # The q-quantile of logistic(mu, s) is mu + s logit(q); its sample quantile's standard
    # deviation is sqrt(q (1 - q) / n) / density = s / sqrt(n q (1 - q)) (about 0.007 at the
    # median here).
    tolerance = 4 * scale / np.sqrt(n * q * (1 - q))
    assert np.quantile(log_steps, q) == pytest.approx(LOG_QUARTER + scale * special.logit(q),
                                                      abs=tolerance), q


def test_mixture_samples_choose_components_by_their_weights():
  # Two components far apart in log-time (10 ms and 1 s, scales 0.05): the share of samples
  # below 0.1 s is the first component's weight, 1 / (1 + 3).
  durations = timing_distribution.sample(
      parameters([0.0, np.log(3.0)], [np.log(0.01), 0.0], [0.05, 0.05], None, rows=ROWS),
      tf.constant(1.0), uniforms(2, ROWS, (1, 2))).numpy()
  assert (durations > 0).all()
  assert (durations < 0.1).mean() == pytest.approx(0.25, abs=4 * np.sqrt(0.25 * 0.75 / ROWS))


def test_draws_beyond_the_grid_are_its_last_bin_centre():
  # One component centred at 20 s with scale 1: draws above the logistic's median by more
  # than log(30 / 20) are 30 s exactly; the rest keep their value.
  log_location = np.log(20.0)
  draws = timing_distribution.sample(
      parameters([0.0], [log_location], [1.0], None, rows=2000), tf.constant(1.0),
      uniforms(1, 2000, (5, 6))).numpy()
  assert draws.max() == np.float32(timing_bins.LONGEST_SECONDS) == np.float32(30.0)
  above = special.expit(log_location - np.log(30.0))  # 0.40 of the draws
  assert (draws == draws.max()).mean() == pytest.approx(above, abs=4 * np.sqrt(0.25 / 2000))
  assert (draws[draws < draws.max()] < 30.0).all()


def test_a_lower_temperature_narrows_the_spread():
  # The same seed draws the same uniforms: each log-time's distance from the location scales
  # by the temperature exactly (up to float32 rounding).
  ones = np.log(sample('single', 1.0).astype(np.float64)) - LOG_QUARTER
  halves = np.log(sample('single', 0.5).astype(np.float64)) - LOG_QUARTER
  np.testing.assert_allclose(halves, 0.5 * ones, rtol=0, atol=1e-5)
  iqr = np.subtract(*np.quantile(halves, [0.75, 0.25]))
  assert iqr == pytest.approx(2 * 0.5 * 0.3 * np.log(3.0), rel=0.05)  # 2 s T log 3
  # The chord logit is divided by the temperature too: sigmoid(0.5 / 0.5) = 0.731.
  steps = sample('single with chord', 0.5)
  chord = special.expit(1.0)
  assert (steps == 0).mean() == pytest.approx(chord, abs=4 * np.sqrt(chord * (1 - chord) / ROWS))


def test_tf_bins_agree_with_the_numpy_grid_away_from_the_edges():
  rng = np.random.default_rng(0)
  seconds = np.concatenate([
      rng.uniform(0.0, 0.05, 2000), rng.uniform(0.0, 35.0, 20_000),
      np.exp(rng.uniform(-8, 8, 2000)),
      np.arange(NUM_BINS + 20) * timing_bins.BIN_SECONDS,  # the centres, and beyond the last
      [0.0, 1e-9, 29.99, 30.5, 1e6]]).astype(np.float32)
  # Away from the edges (b - 1/2) * 10 ms: float32 and float64 round alike there.
  position = seconds.astype(np.float64) / timing_bins.BIN_SECONDS + 0.5
  away = np.abs(position - np.round(position)) > 1e-3
  assert away.mean() > 0.99
  expected = timing_bins.to_bins(seconds[away].astype(np.float64))
  got = timing_distribution.to_bins(tf.constant(seconds[away])).numpy()
  np.testing.assert_array_equal(got, expected)
  assert expected.min() == 0 and expected.max() == NUM_BINS - 1


def test_anchored_components_sit_exactly_on_the_recent_times_and_absent_ones_weigh_nothing():
  """Two free components, then one per anchor, located at the anchor's log.

  All with the one learned scale; an anchor of 0 s (a chord's step, or before the piece) has the
  weight 0.
  """
  free, anchors = 2, np.array([[0.0, 0.5, 0.25]], np.float32)
  count = timing_distribution.parameter_count(free, chord=True, anchors=3)
  assert count == 3 * free + 1 + 3 + 1
  outputs = np.zeros([1, count], np.float32)
  outputs[0, 3 * free + 1:3 * free + 4] = [5.0, 1.0, 2.0]  # the anchors' logits
  outputs[0, -1] = -2.0  # the anchors' scale, before the softplus
  parameters = timing_distribution.from_dense(tf.constant(outputs), free, chord=True,
                                              location_offset=0.0, anchors=tf.constant(anchors))
  np.testing.assert_allclose(parameters['locations'][0, free + 1:], np.log([0.5, 0.25]))
  expected_scale = np.log1p(np.exp(-2.0)) + timing_distribution.ANCHOR_MIN_SCALE
  np.testing.assert_allclose(parameters['scales'][0, free:], [expected_scale] * 3, rtol=1e-6)
  weights = tf.nn.softmax(parameters['mixture_logits']).numpy()[0]
  assert weights[free] == 0.0  # the absent anchor, whatever its logit
  np.testing.assert_allclose(weights, special.softmax([0.0, 0.0, -np.inf, 1.0, 2.0]), rtol=1e-6)
  # Without a chord: the same layout less the chord logit.
  assert timing_distribution.parameter_count(free, chord=False, anchors=3) == count - 1
  assert timing_distribution.parameter_count(free, chord=False) == 3 * free


def test_an_anchored_mixture_puts_the_anchors_mass_in_the_anchors_bins():
  """All the weight on one anchor at 0.5 s: the bin of 0.5 s holds nearly all of its mass.

  With the smallest scale, the bin of 0.5 s holds the logistic's mass over its edges, nearly all
  of it.
  """
  anchors = tf.constant([[0.5]], tf.float32)
  outputs = np.zeros([1, timing_distribution.parameter_count(1, chord=False, anchors=1)],
                     np.float32)
  outputs[0, 0] = -30.0  # the free component's logit: no weight
  outputs[0, -2] = 30.0  # the anchor's
  outputs[0, -1] = -30.0  # scale -> ANCHOR_MIN_SCALE
  parameters = timing_distribution.from_dense(tf.constant(outputs), 1, chord=False,
                                              location_offset=0.0, anchors=anchors)
  bin_of = int(timing_bins.to_bins(0.5))
  scale = timing_distribution.ANCHOR_MIN_SCALE
  expected = (special.expit((timing_bins.LOG_UPPER[bin_of] - np.log(0.5)) / scale)
              - special.expit((timing_bins.LOG_LOWER[bin_of] - np.log(0.5)) / scale))
  got = np.exp(timing_distribution.log_bin_probability(parameters, tf.constant([bin_of])))
  assert got[0] == pytest.approx(expected, rel=1e-4)
  assert expected > 0.99
