"""Baseline pitch models: exact probabilities on hand-made sequences, proper distributions."""

import numpy as np
import pytest

from partita import baselines

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
