"""Baseline pitch models: exact probabilities on hand-made sequences, proper distributions."""

import numpy as np
import pytest

from partita import baselines, timing_bins

# Counts used below, for the single piece 60 62 60 62 64:
#   unigrams 60:2 62:2 64:1 (n1 = 1, n2 = 2: D1 = 1 / (1 + 4) = 0.2; S = 5, T = 3)
#   continuation counts (distinct predecessors, the piece start included):
#     60: {start, 62} = 2, 62: {60} = 1, 64: {62} = 1 (n1 = 2, n2 = 1: D = 2 / 4 = 0.5; S = 4)
#   bigrams (60,62):2 (62,60):1 (62,64):1 (D2 = 0.5)
PIECE = np.array([60, 62, 60, 62, 64])


def test_unigram_is_absolute_discounting_towards_uniform():
  model = baselines.NGram.fit([PIECE], order=1)
  probs = model.distribution(np.zeros((1, 0), dtype=int))[0]
  floor = 0.2 * 3 / 5 / 128
  assert probs[60] == pytest.approx(1.8 / 5 + floor, abs=1e-15)
  assert probs[62] == pytest.approx(1.8 / 5 + floor, abs=1e-15)
  assert probs[64] == pytest.approx(0.8 / 5 + floor, abs=1e-15)
  assert probs[0] == pytest.approx(floor, abs=1e-15)


def test_bigram_interpolates_with_continuation_unigram():
  model = baselines.NGram.fit([PIECE], order=2)
  lower = {60: 1.5 / 4 + 0.5 * 3 / 4 / 128, 62: 0.5 / 4 + 0.5 * 3 / 4 / 128,
           0: 0.5 * 3 / 4 / 128}
  probs = model.distribution(np.array([[60], [62], [5]]))
  # After 60 (S = 2, one next pitch): 62 keeps (2 - 0.5) / 2, 0.5 / 2 goes to the lower order.
  assert probs[0, 62] == pytest.approx(1.5 / 2 + 0.25 * lower[62], abs=1e-15)
  assert probs[0, 60] == pytest.approx(0.25 * lower[60], abs=1e-15)
  # After 62 (S = 2, two next pitches, 1 each): 0.5 / 2 each, 2 * 0.5 / 2 to the lower order.
  assert probs[1, 60] == pytest.approx(0.25 + 0.5 * lower[60], abs=1e-15)
  assert probs[1, 0] == pytest.approx(0.5 * lower[0], abs=1e-15)
  # 5 was never a context: the continuation unigram alone.
  assert probs[2, 60] == pytest.approx(lower[60], abs=1e-15)


def test_ngrams_do_not_span_pieces():
  model = baselines.NGram.fit([np.array([60, 61]), np.array([70, 71])], order=2)
  probs = model.distribution(np.array([[61]]))[0]
  # 61 ends a piece: never a seen context, so no bigram 61 -> 70.
  assert probs[70] == pytest.approx(probs[60])


@pytest.mark.parametrize('order', [1, 2, 3, 4, 5])
def test_every_pitch_positive_and_rows_sum_to_one(order):
  rng = np.random.default_rng(0)
  pieces = [rng.integers(40, 80, size=300) for _ in range(5)]
  model = baselines.NGram.fit(pieces, order)
  contexts = np.concatenate([
      np.lib.stride_tricks.sliding_window_view(pieces[0], 4)[:50],  # seen contexts
      rng.integers(0, 128, size=(50, 4))])  # mostly unseen
  probs = model.distribution(contexts)
  assert probs.shape == (100, 128)
  assert (probs > 0).all()
  np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=0, atol=1e-12)


def test_higher_order_learns_a_deterministic_cycle():
  cycle = np.tile([60, 64, 67, 72], 50)
  model = baselines.NGram.fit([cycle], order=3)
  probs = model.distribution(np.array([[64, 67]]))[0]
  assert probs.argmax() == 72 and probs[72] > 0.95


def test_keys_are_base_129_numbers_of_the_symbols_oldest_first():
  keys = baselines.encode(np.array([[60, 62], [128, 0]]))
  np.testing.assert_array_equal(keys, [60 * 129 + 62, 128 * 129])
  np.testing.assert_array_equal(baselines.last_symbol(keys), [62, 0])
  np.testing.assert_array_equal(baselines.context_of(keys), [60, 128])
  np.testing.assert_array_equal(baselines.append_symbol(keys, np.array([1, 2])),
                                baselines.encode(np.array([[60, 62, 1], [128, 0, 2]])))
  # A label id as one more leading digit.
  np.testing.assert_array_equal(baselines.with_leading(keys, 3, width=2),
                                3 * 129**2 + keys)
  # The n-gram's tables hold these keys: the bigram (60, 62) of PIECE.
  level = baselines.NGram.fit([PIECE], order=2).levels[1]
  assert keys[0] in level.keys


def test_repeat_previous_fits_the_change_rate():
  model = baselines.RepeatPrevious.fit([np.array([60, 60, 62, 62, 62]), np.array([50, 51])])
  assert model.eps == pytest.approx(2 / 5)  # changes 60->62 and 50->51 in 5 transitions
  probs = model.distribution(np.array([[1, 62]]))[0]
  assert probs[62] == pytest.approx(0.6)
  assert probs[0] == pytest.approx(0.4 / 127)
  assert probs.sum() == pytest.approx(1.0)


def test_score_pitches_counts_ties_against_the_target():
  probs = np.full((2, 128), 0.1 / 126)
  probs[:, 10] = 0.5
  probs[:, 20] = 0.4
  scores = baselines.score_pitches(np.log(probs), np.array([20, 30]))
  np.testing.assert_allclose(scores['pitch_nll'], [-np.log(0.4), -np.log(0.1 / 126)])
  np.testing.assert_array_equal(scores['pitch_accuracy'], [0.0, 0.0])
  # 20 is second: in the top 5. 30 ties with 125 others: not.
  np.testing.assert_array_equal(scores['pitch_top5_accuracy'], [1.0, 0.0])


def test_log_softmax_matches_definition():
  logits = np.array([[1.0, 2.0, 3.0]])
  expected = np.log(np.exp(logits) / np.exp(logits).sum())
  np.testing.assert_allclose(baselines.log_softmax(logits), expected, rtol=1e-12)


def test_sample_is_seeded_and_follows_the_model():
  cycle = np.tile([60, 64, 67, 72], 50)
  model = baselines.NGram.fit([cycle], order=3)
  first = baselines.sample(model, np.array([[60, 64], [67, 72]]), 8,
                           np.random.default_rng(1))
  again = baselines.sample(model, np.array([[60, 64], [67, 72]]), 8,
                           np.random.default_rng(1))
  np.testing.assert_array_equal(first, again)
  # Mostly the cycle (each step keeps > 95% on the next cycle pitch).
  assert (first[0] == [67, 72, 60, 64, 67, 72, 60, 64]).mean() >= 0.75


def test_first_target_counts_each_later_note_once_with_its_history():
  # Two overlapping chunks of one piece 60 62 64 65 67 (window length 2): targets 64 65 | 67.
  chunks = [np.array([60, 62, 64, 65]), np.array([64, 65, 67])]
  fitted = baselines.NGram.fit(chunks, order=2, first_target=2)
  whole = baselines.NGram.fit([np.array([60, 62, 64, 65, 67])[1:]], order=2, first_target=1)
  contexts = np.array([[62], [64], [65], [60]])
  np.testing.assert_allclose(fitted.distribution(contexts), whole.distribution(contexts),
                             rtol=0, atol=1e-15)
  repeat = baselines.RepeatPrevious.fit([np.array([60, 60, 60, 61])], first_target=2)
  assert repeat.eps == pytest.approx(1 / 2)  # targets 60 (after 60) and 61 (after 60)


def _reference_kneser_ney(pieces, order, context, pitch):
  """The formula of NGram's docstring with plain dictionaries, one probability at a time."""
  def counts(k):
    table = {}
    for piece in pieces:
      padded = [None] + list(piece)
      for end in range(k, len(padded)):
        gram = tuple(padded[end - k + 1:end + 1])
        if k == order:
          table[gram] = table.get(gram, 0) + 1
        else:
          table.setdefault(gram, set()).add(padded[end - k])
    return {gram: value if k == order else len(value) for gram, value in table.items()}

  probability = 1 / 128
  for k in range(1, order + 1):
    table = counts(k)
    values = np.array(list(table.values()))
    n1, n2 = (values == 1).sum(), (values == 2).sum()
    discount = float(np.clip(n1 / (n1 + 2 * n2), 0.05, 0.95)) if n1 + n2 else 0.5
    history = tuple(context[len(context) - k + 1:]) if k > 1 else ()
    seen = {gram[-1]: c for gram, c in table.items() if gram[:-1] == history}
    total = sum(seen.values())
    if total:
      probability = (max(seen.get(pitch, 0) - discount, 0) / total
                     + discount * len(seen) / total * probability)
  return probability


def test_ngram_matches_a_dictionary_implementation():
  rng = np.random.default_rng(3)
  pieces = [rng.integers(60, 66, size=n) for n in (40, 25, 60)]
  model = baselines.NGram.fit(pieces, order=3)
  contexts = np.array([[60, 61], [65, 65], [62, 70], [1, 2]])
  probs = model.distribution(contexts)
  for row, context in enumerate(contexts):
    for pitch in (60, 61, 63, 65, 70):
      assert probs[row, pitch] == pytest.approx(
          _reference_kneser_ney(pieces, 3, list(context), pitch), rel=1e-12)


# Timing baselines. Bins are 10 ms wide (partita.timing_bins): with NUM_BINS = 3001 bins,
# add-one smoothing of N training values gives a bin seen c times (c + 1) / (N + 3001).
NUM_BINS = 3001


def bin_centres():
  return np.arange(NUM_BINS) * 0.01


def test_timing_histogram_is_add_one_smoothed():
  model = baselines.TimingHistogram.fit([np.array([0.5, 0.5, 0.0, 0.5])])  # 50 50 0 50
  np.testing.assert_allclose(np.exp(model.log_prob([0.5, 0.0, 0.07, 31.0])),
                             [(3 + 1) / (4 + 3001), (1 + 1) / (4 + 3001), 1 / (4 + 3001),
                              1 / (4 + 3001)], rtol=1e-13)
  assert model.log_prob(np.array([0.5, 0.0])).dtype == np.float64
  probs = np.exp(model.log_prob(bin_centres()))
  assert (probs > 0).all()
  assert probs.sum() == pytest.approx(1.0, abs=1e-12)


def test_timing_values_at_bin_edges_fall_in_the_upper_bin():
  # [0, 5 ms) is bin 0, [5 ms, 15 ms) bin 1, ..., everything from 29.995 s the last bin.
  model = baselines.TimingHistogram.fit([np.array([0.005, 0.015, 29.995, 100.0])])
  np.testing.assert_array_equal(
      timing_bins.to_bins([0.0049, 0.005, 0.0149, 0.015, 29.994, 29.995, 1e6]),
      [0, 1, 1, 2, 2999, 3000, 3000])
  np.testing.assert_allclose(
      np.exp(model.log_prob([0.0049, 0.005, 0.0149, 0.015, 29.994, 29.995, 1e6])),
      np.array([1, 2, 2, 2, 1, 3, 3]) / (4 + 3001), rtol=1e-13)


def test_timing_baselines_bin_through_timing_bins():
  # Values at and around every edge, as float64 and float32 computes them: each is scored as
  # the centre of the bin timing_bins.to_bins puts it in, whatever rounding decides there.
  edges = (np.arange(1, NUM_BINS) - 0.5) * 0.01
  values = np.concatenate([edges, np.nextafter(edges, 0), np.nextafter(edges, 1),
                           edges.astype(np.float32).astype(np.float64)])
  rng = np.random.default_rng(4)
  train = [rng.choice(values, size=500) for _ in range(3)]
  centres = timing_bins.to_bins(values) * 0.01
  histogram = baselines.TimingHistogram.fit(train)
  np.testing.assert_array_equal(histogram.log_prob(values), histogram.log_prob(centres))
  conditional = baselines.ConditionalTimingHistogram.fit(train)
  previous = np.roll(values, 1)
  np.testing.assert_array_equal(conditional.log_prob(values, previous),
                                conditional.log_prob(centres, np.roll(centres, 1)))


# Steps 0 0 0.25 0 0 0.25 (bins 0 0 25 0 0 25): histogram counts 0:4 25:2 (N = 6);
# transitions 0->0: 2, 0->25: 2, 25->0: 1, so count(0) = 4, count(25) = 1.
STEPS = np.array([0.0, 0.0, 0.25, 0.0, 0.0, 0.25])


def test_conditional_timing_histogram_interpolates_with_the_histogram():
  model = baselines.ConditionalTimingHistogram.fit([STEPS], beta=2.0)
  hist = {0: 5 / 3007, 25: 3 / 3007, 7: 1 / 3007}
  values = np.array([0.0, 0.25, 0.07, 0.0, 0.25, 0.07])
  previous = np.array([0.0, 0.0, 0.0, 0.25, 0.25, 0.25])
  expected = [(2 + 2 * hist[0]) / 6, (2 + 2 * hist[25]) / 6, 2 * hist[7] / 6,
              (1 + 2 * hist[0]) / 3, 2 * hist[25] / 3, 2 * hist[7] / 3]
  np.testing.assert_allclose(np.exp(model.log_prob(values, previous)), expected, rtol=1e-13)


def test_conditional_timing_histogram_backs_off_for_unseen_previous_bins():
  model = baselines.ConditionalTimingHistogram.fit([STEPS], beta=2.0)
  values = np.array([0.0, 0.25, 0.07])
  for previous in (0.5, 0.07, 40.0):  # bins 50, 7 and the last: never a previous bin
    np.testing.assert_allclose(np.exp(model.log_prob(values, previous)),
                               [5 / 3007, 3 / 3007, 1 / 3007], rtol=1e-13)


def test_conditional_timing_histogram_uses_the_documented_beta():
  model = baselines.ConditionalTimingHistogram.fit([STEPS])
  beta = baselines.TIMING_BACKOFF_WEIGHT
  assert model.beta == beta
  assert np.exp(model.log_prob(0.0, 0.25)) == pytest.approx((1 + beta * 5 / 3007) / (1 + beta),
                                                             rel=1e-13)


def test_timing_transitions_do_not_span_sequences():
  model = baselines.ConditionalTimingHistogram.fit([np.array([0.1, 0.2]), np.array([0.3, 0.4])])
  backoff = baselines.TimingHistogram.fit([np.array([0.1, 0.2]), np.array([0.3, 0.4])])
  # 0.2 ends a sequence: never a previous value, so 0.2 -> 0.3 was not counted.
  np.testing.assert_array_equal(model.log_prob(bin_centres(), 0.2),
                                backoff.log_prob(bin_centres()))


@pytest.mark.parametrize('beta', [0.5, 2.0, 10.0])
def test_conditional_timing_distributions_sum_to_one(beta):
  rng = np.random.default_rng(5)
  pieces = [rng.choice([0.0, 0.12, 0.25, 0.5, 1.0, 35.0], size=200) for _ in range(4)]
  model = baselines.ConditionalTimingHistogram.fit(pieces, first_target=8, beta=beta)
  histogram = np.exp(model.histogram.log_prob(bin_centres()))
  assert histogram.sum() == pytest.approx(1.0, abs=1e-12)
  for previous in (0.0, 0.12, 0.5, 35.0, 0.3, 7.0):  # four seen previous bins, two unseen
    probs = np.exp(model.log_prob(bin_centres(), previous))
    assert (probs > 0).all()
    assert probs.sum() == pytest.approx(1.0, abs=1e-12)


def test_timing_first_target_counts_each_later_value_once_with_its_previous():
  # Two overlapping chunks of one piece 0.1 0.2 0.3 0.4 0.5 (window length 2): targets
  # 0.3 0.4 | 0.5, with transitions 20->30, 30->40 | 40->50.
  chunks = [np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.3, 0.4, 0.5])]
  histogram = baselines.TimingHistogram.fit(chunks, first_target=2)
  np.testing.assert_allclose(np.exp(histogram.log_prob([0.3, 0.4, 0.5, 0.1, 0.2])),
                             np.array([2, 2, 2, 1, 1]) / (3 + 3001), rtol=1e-13)
  model = baselines.ConditionalTimingHistogram.fit(chunks, first_target=2, beta=2.0)
  values = np.array([0.3, 0.4, 0.5, 0.5, 0.2])
  previous = np.array([0.2, 0.3, 0.4, 0.2, 0.1])
  expected = [(1 + 2 * 2 / 3004) / 3, (1 + 2 * 2 / 3004) / 3, (1 + 2 * 2 / 3004) / 3,
              2 * 2 / 3004 / 3, 1 / 3004]  # 0.1 was never a previous value: backs off
  np.testing.assert_allclose(np.exp(model.log_prob(values, previous)), expected, rtol=1e-13)
  whole = baselines.ConditionalTimingHistogram.fit([np.array([0.2, 0.3, 0.4, 0.5])],
                                                   first_target=1, beta=2.0)
  np.testing.assert_array_equal(whole.log_prob(values, previous),
                                model.log_prob(values, previous))


def test_timing_first_target_zero_counts_the_first_value_in_the_histogram_only():
  model = baselines.ConditionalTimingHistogram.fit([np.array([0.1, 0.2])], beta=2.0)
  # Histogram: 10 and 20 once each (N = 2); one transition 10 -> 20.
  assert np.exp(model.histogram.log_prob(0.1)) == pytest.approx(2 / 3003, rel=1e-13)
  assert np.exp(model.log_prob(0.2, 0.1)) == pytest.approx((1 + 2 * 2 / 3003) / 3, rel=1e-13)


def test_timing_log_probs_broadcast_and_reject_nan():
  model = baselines.ConditionalTimingHistogram.fit([STEPS], beta=2.0)
  values = np.array([[0.0, 0.25, 0.07], [0.25, 0.0, 0.0]])
  scores = model.log_prob(values, np.array([[0.0], [0.25]]))
  assert scores.shape == (2, 3) and scores.dtype == np.float64
  np.testing.assert_array_equal(scores[1], model.log_prob(values[1], np.full(3, 0.25)))
  with pytest.raises(ValueError, match='NaN'):
    model.log_prob(np.array([np.nan]), np.array([0.0]))
  with pytest.raises(ValueError, match='NaN'):
    baselines.TimingHistogram.fit([np.array([0.1, -0.2])])
  with pytest.raises(ValueError, match='no training values'):
    baselines.TimingHistogram.fit([np.array([0.1])], first_target=1)
