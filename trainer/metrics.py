"""The losses and metrics of next-note prediction, each defined once, under one set of names.

As the Model Garden's ``Task`` owns ``build_losses`` and ``build_metrics``, this module owns what
every stage measures and what it calls it:

* the training loop's steps and validation, on the console and in TensorBoard's ``train`` and
  ``validation`` runs: :data:`TRAINING_METRICS`, by :func:`window_metrics`;
* ``metrics.json`` (``trainer.task``): :data:`NOTE_METRICS` over the validation windows, by the
  same :func:`window_metrics`, with the pitch the export predicts (the network's mixed with the
  pitch n-grams);
* the evaluation's model row (``evaluation.evaluate``): :data:`NOTE_METRICS` over the test
  windows from the export's outputs, by :func:`note_scores`, whose pitch metrics are the
  baselines' own (``partita.baselines.score_pitches``), so the rows of its table compare like
  for like.

NLLs are in nats/note. The step's and the duration's are the NLL of the 10 ms bin holding the
true time (``partita.timing_bins``), so that the note NLL, their sum with the pitch's, is on
the grid every baseline is scored on. Top-k hits count ties against the target.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from partita import baselines, timing_bins
from trainer import config as config_lib
from trainer import timing_distribution

# The file trainer.task writes beside the export: NOTE_METRICS on the validation split.
METRICS_FILE = 'metrics.json'

# A note's metrics, per window: metrics.json, the evaluation's model row and, among the others,
# TensorBoard's. The pitch's are the names partita.baselines.score_pitches gives them.
NOTE_METRICS = ('pitch_nll', 'pitch_accuracy', 'pitch_top5_accuracy', 'step_nll', 'duration_nll',
                'note_nll')
# What the training loop logs: the objective, its velocity term (a squared error) and the above.
TRAINING_METRICS = ('loss', 'velocity_loss', *NOTE_METRICS)


def note_nll(scores: dict):
  """The note NLL: the sum of the pitch, step and duration NLLs of ``scores``.

  ``scores`` holds numpy arrays or tensors.
  """
  return scores['pitch_nll'] + scores['step_nll'] + scores['duration_nll']


def top_k_hits(logits: tf.Tensor, targets: tf.Tensor, k: int) -> tf.Tensor:
  """1.0 for each row whose target pitch is in the top ``k``, else 0.0.

  Ties count against the target (fewer than ``k`` other pitches may have a logit at least as
  high as the target's), the rule of ``partita.baselines.score_pitches``, which scores the
  evaluation's rows: the accuracies of training and of the evaluation are the same metric.
  """
  target_logits = tf.gather(logits, targets, batch_dims=1)
  others = tf.reduce_sum(tf.cast(logits >= target_logits[:, None], tf.int32), axis=-1) - 1
  return tf.cast(others < k, tf.float32)


def per_window_losses(outputs: dict, targets: dict, config: config_lib.ModelConfig) -> dict:
  """The training objective, one value per window.

  ``{'loss': the weighted sum, 'pitch_loss', 'step_loss', 'duration_loss', 'velocity_loss'}``,
  each ``[batch]``.

  Pitch: cross-entropy of the logits. Step and duration: the negative log-likelihood of the
  10 ms bin holding the true time (``partita.timing_bins``), nats, so that the sum of the
  three is the note's NLL on the grid every baseline is scored on. Velocity: squared error of
  the fraction of 127. Per window rather than batch means, so that the caller divides by the
  global batch size and replicas of any size sum to the same loss.
  """
  losses = {
      'pitch_loss': keras.losses.sparse_categorical_crossentropy(
          targets['pitch'], outputs['pitch'], from_logits=True),
      **{f'{part}_loss': -timing_distribution.log_bin_probability(
          outputs[part], timing_distribution.to_bins(targets[part]))
         for part in timing_bins.TIMED_PARTS},
      'velocity_loss': tf.square(outputs['velocity'] - targets['velocity']),
  }
  losses['loss'] = (config.pitch_loss_weight * losses['pitch_loss']
                    + config.step_loss_weight * losses['step_loss']
                    + config.duration_loss_weight * losses['duration_loss']
                    + config.velocity_loss_weight * losses['velocity_loss'])
  return losses


def window_metrics(outputs: dict, targets: dict,
                   config: config_lib.ModelConfig) -> dict[str, tf.Tensor]:
  """Each of :data:`TRAINING_METRICS` for each window (``[batch]`` tensors), from ``outputs``.

  ``outputs`` are the model's; ``outputs['pitch']`` may be any logits or log-probabilities (the
  n-grams' mixture's for ``metrics.json``).

  The objective and its terms are :func:`per_window_losses`; its pitch, step and duration terms
  are their NLLs.
  """
  losses = per_window_losses(outputs, targets, config)
  scores = {'loss': losses['loss'], 'velocity_loss': losses['velocity_loss'],
            **{f'{part}_nll': losses[f'{part}_loss']
               for part in ('pitch', *timing_bins.TIMED_PARTS)},
            'pitch_accuracy': top_k_hits(outputs['pitch'], targets['pitch'], 1),
            'pitch_top5_accuracy': top_k_hits(outputs['pitch'], targets['pitch'], 5)}
  scores['note_nll'] = note_nll(scores)
  return scores


def note_scores(pitch_logits: np.ndarray, pitch_targets: np.ndarray,
                timing_nll: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Each of :data:`NOTE_METRICS` for each note, float64, from its pitch logits and timing NLLs.

  The pitch logits are ``[notes, 128]``, the NLLs ``{'step' | 'duration': [notes]}``.
  """
  scores = {**baselines.score_pitches(baselines.log_softmax(pitch_logits), pitch_targets),
            **{f'{part}_nll': np.asarray(nll, np.float64) for part, nll in timing_nll.items()}}
  scores['note_nll'] = note_nll(scores)
  return scores
