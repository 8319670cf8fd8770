"""The pitch n-grams mixed into the network's pitch distribution (trainer/pitch_ngram.py)."""

import numpy as np
import pytest
import tensorflow as tf

from partita import baselines
from trainer import pitch_ngram

ORDER = 4


@pytest.fixture(scope='module')
def ngrams():
  """Id 0's n-gram counts every piece; ids 2 and 3 their own; id 1 and id 4 have none."""
  rng = np.random.default_rng(0)
  pieces = {0: [rng.integers(50, 60, 40) for _ in range(3)],
            2: [rng.integers(55, 62, 50) for _ in range(4)],
            3: [rng.integers(40, 70, 30)]}
  models = pitch_ngram.fit(pieces, ORDER, first_target=5)
  return pieces, models, pitch_ngram.PitchNGrams(models, num_labels=5)


def test_fit_counts_every_piece_for_the_unconditional_id_and_each_labels_own(ngrams):
  pieces, models, _ = ngrams
  assert sorted(models) == [0, 2, 3]
  everything = [piece for label in (0, 2, 3) for piece in pieces[label]]
  contexts = np.array([[55, 56, 57], [58, 59, 128]])
  for label, sequences in ((0, everything), (2, pieces[2]), (3, pieces[3])):
    expected = baselines.NGram.fit(sequences, ORDER, first_target=5).distribution(contexts)
    np.testing.assert_array_equal(models[label].distribution(contexts), expected)


@pytest.mark.parametrize('jit_compile', [False, True])
def test_probabilities_are_each_labels_kneser_ney_distribution(ngrams, jit_compile):
  """Exactly NGram.distribution of the row's id, compiled with XLA or not.

  A -1 in the context is a context never seen, as the start symbol 128 is to NGram; an id without
  an n-gram of its own gets the uniform distribution, which its zero label weight never lets into
  the mixture. Compiled with XLA, as the sampling loop is, the same.
  """
  _, models, tables = ngrams
  rng = np.random.default_rng(1)
  contexts = rng.integers(50, 62, (40, 6))
  contexts[0, -1] = contexts[1, -3] = contexts[2, 0] = -1
  labels = np.tile([0, 2, 3, 4, 1], 8)
  probabilities = tf.function(tables.probabilities, jit_compile=jit_compile)
  got = probabilities(tf.constant(contexts, tf.int32), tf.constant(labels, tf.int32)).numpy()
  for row, label in enumerate(labels):
    if label in models:
      expected = models[label].distribution(np.where(contexts[row:row + 1] < 0, 128,
                                                     contexts[row:row + 1]))[0]
    else:
      expected = np.full(128, 1 / 128)
    np.testing.assert_allclose(got[row], expected, rtol=1e-12, err_msg=f'row {row}')
  np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-12)


def test_mix_weighs_the_network_and_both_ngrams_per_id(ngrams):
  _, _, tables = ngrams
  tables.set_weights(pitch_ngram.Weights(ngram=0.3, label=0.6, unconditional_ngram=0.2))
  np.testing.assert_allclose(tables.ngram_weight.numpy(), [0.2, 0.3, 0.3, 0.3, 0.3])
  np.testing.assert_allclose(tables.label_weight.numpy(), [0.0, 0.0, 0.6, 0.6, 0.0])
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(5, 128)).astype(np.float32)
  contexts = rng.integers(50, 60, (5, 3)).astype(np.int32)
  labels = np.array([0, 1, 2, 3, 4], np.int32)
  got = np.exp(tables.mix(logits, contexts, labels).numpy().astype(np.float64))
  network = tf.nn.softmax(logits.astype(np.float64)).numpy()
  everyone = tables.probabilities(contexts, np.zeros(5, np.int32)).numpy()
  own = tables.probabilities(contexts, labels).numpy()
  a = np.array([0.2, 0.3, 0.3, 0.3, 0.3])[:, None]
  w = np.array([0.0, 0.0, 0.6, 0.6, 0.0])[:, None]
  np.testing.assert_allclose(got, (1 - a) * network + a * ((1 - w) * everyone + w * own),
                             rtol=1e-5)
  np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-5)
  # A softmax that underflows to 0 still leaves every pitch a finite log-probability.
  extreme = np.where(np.arange(128) == 60, 200.0, -200.0).astype(np.float32)[None]
  assert np.all(np.isfinite(tables.mix(extreme, contexts[:1], labels[:1]).numpy()))


def test_fit_weights_finds_the_grid_point_that_explains_the_validation_targets():
  """Targets drawn from a known mixture: the likelihood peaks at the mixture's weights.

  Each part gives its own draws 0.9 and the others' 0.01.
  """
  rng = np.random.default_rng(3)
  count = 200_000
  # Labelled: 0.3 * network + 0.7 * (0.4 * everyone's + 0.6 * own).
  source = rng.choice(3, size=count, p=[0.3, 0.7 * 0.4, 0.7 * 0.6])
  network, everyone, own = (np.where(source == part, 0.9, 0.01) for part in range(3))
  weights = pitch_ngram.fit_weights(network, network, everyone, own, np.ones(count, bool))
  assert (weights.ngram, weights.label) == (0.7, 0.6)
  # No window labelled: 0.45 * network + 0.55 * everyone's, and no label weight.
  source = rng.choice(2, size=count, p=[0.45, 0.55])
  network, everyone = (np.where(source == part, 0.9, 0.01) for part in range(2))
  assert pitch_ngram.fit_weights(network, network, everyone, everyone,
                                 np.zeros(count, bool)) == pitch_ngram.Weights(0.55, 0.0, 0.55)


def test_tables_refuse_what_they_cannot_hold(ngrams):
  _, models, _ = ngrams
  with pytest.raises(ValueError, match='overflow int64'):
    pitch_ngram.PitchNGrams(models, num_labels=10**14)
  with pytest.raises(ValueError, match='every piece'):
    pitch_ngram.PitchNGrams({2: models[2]}, num_labels=5)
  lower = baselines.NGram.fit([np.arange(50, 70)], 2)
  with pytest.raises(ValueError, match='different orders'):
    pitch_ngram.PitchNGrams({0: models[0], 2: lower}, num_labels=5)
