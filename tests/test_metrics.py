"""trainer.metrics: each metric defined once, under the names every stage uses."""

import os

import numpy as np
import tensorflow as tf
from trainer_fixtures import REPO, WINDOW

from partita import baselines, constants
from trainer import config as config_lib
from trainer import metrics as metrics_lib
from trainer import model as model_lib

TIMING = {'step': {'mean': 0.25, 'std': 0.1}, 'duration': {'mean': 0.5, 'std': 0.2}}


def test_note_scores_are_the_baselines_pitch_scores_and_their_sum_with_the_timing_nlls():
  # Row 0: pitch 60 holds half the mass (the other half spread over the other 127), the
  # target; row 1: uniform, every pitch tied with the target, so it is in no top k.
  logits = np.zeros((2, 128))
  logits[0, 60] = np.log(127.0)
  scores = metrics_lib.note_scores(logits, np.array([60, 3]),
                                   {'step': np.array([0.5, 1.0]),
                                    'duration': np.array([0.25, 2.0])})
  assert sorted(scores) == sorted(metrics_lib.NOTE_METRICS)
  np.testing.assert_allclose(scores['pitch_nll'], [np.log(2), np.log(128)], rtol=1e-12)
  np.testing.assert_array_equal(scores['pitch_accuracy'], [1.0, 0.0])
  np.testing.assert_array_equal(scores['pitch_top5_accuracy'], [1.0, 0.0])
  np.testing.assert_allclose(scores['note_nll'], [np.log(2) + 0.75, np.log(128) + 3.0],
                             rtol=1e-12)


def test_window_metrics_are_the_objective_its_nlls_the_accuracies_and_the_note_nll():
  config = config_lib.load(os.path.join(REPO, 'configs', 'tiny.yaml'))
  model = model_lib.build_model(config.model, WINDOW, TIMING, num_labels=2)
  rng = np.random.default_rng(0)
  batch = 16
  window = {'pitch': tf.constant(rng.integers(40, 90, (batch, WINDOW)), tf.int32),
            'label': tf.zeros([batch, WINDOW], tf.int32),
            **{name: tf.constant(rng.uniform(0.0, 1.0, (batch, WINDOW)), tf.float32)
               for name in ('step', 'duration', 'velocity')},
            **{name: tf.zeros([batch, WINDOW]) for name in constants.NOTE_FEATURES[4:]}}
  targets = {'pitch': tf.constant(rng.integers(40, 90, batch), tf.int32),
             **{name: tf.constant(rng.uniform(0.0, 1.0, batch), tf.float32)
                for name in ('step', 'duration', 'velocity')}}
  outputs = model(window, targets)

  values = {name: value.numpy() for name, value in
            metrics_lib.window_metrics(outputs, targets, config.model).items()}

  assert sorted(values) == sorted(metrics_lib.TRAINING_METRICS)
  losses = metrics_lib.per_window_losses(outputs, targets, config.model)
  for name in ('loss', 'velocity_loss'):
    np.testing.assert_array_equal(values[name], losses[name].numpy())
  pitch = baselines.score_pitches(baselines.log_softmax(outputs['pitch'].numpy()),
                                  targets['pitch'].numpy())
  np.testing.assert_allclose(values['pitch_nll'], pitch['pitch_nll'], rtol=1e-5)
  for name in ('pitch_accuracy', 'pitch_top5_accuracy'):
    np.testing.assert_array_equal(values[name], pitch[name])
  for part in ('step', 'duration'):
    np.testing.assert_array_equal(values[f'{part}_nll'], losses[f'{part}_loss'].numpy())
  np.testing.assert_allclose(
      values['note_nll'], values['pitch_nll'] + values['step_nll'] + values['duration_nll'],
      rtol=1e-6)


def test_top_k_counts_ties_against_the_target_as_score_pitches_does():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(300, 128)).astype(np.float32)
  targets = rng.integers(0, 128, 300)
  rows = np.arange(300)
  ranked = -np.sort(-logits, axis=1)
  # The target alone above every other pitch, tied with the top pitch, tied with the 5th.
  logits[rows[:100], targets[:100]] = ranked[:100, 0] + 1
  logits[rows[100:200], targets[100:200]] = ranked[100:200, 0]
  logits[rows[200:], targets[200:]] = ranked[200:, 4]
  expected = baselines.score_pitches(baselines.log_softmax(logits), targets)
  for k, name in ((1, 'pitch_accuracy'), (5, 'pitch_top5_accuracy')):
    hits = metrics_lib.top_k_hits(tf.constant(logits), tf.constant(targets, tf.int32), k)
    np.testing.assert_array_equal(hits.numpy(), expected[name])
    # The ties matter: tf.math.in_top_k, which counts them for the target, finds more hits.
    ties_for_target = tf.math.in_top_k(tf.constant(targets, tf.int32), logits, k).numpy()
    assert ties_for_target.sum() > expected[name].sum() > 0

