"""The Keras model: a window of notes -> distribution of the next pitch, plus its timing.

Inputs are raw values (pitch 0..127, step and duration in seconds, velocity 1..127); the timing
inputs are standardised inside the model with the training split's statistics from info.json,
so an exported model needs no preprocessing code from this project.

The LSTMs keep Keras' defaults (tanh, sigmoid recurrent activation, no recurrent dropout,
unroll=False, use_bias=True, use_cudnn='auto') and see no mask, because those are the
conditions for the cuDNN kernel on GPUs; dropout is applied between layers instead of inside
the recurrence for the same reason.

Under a mixed-precision policy (``keras.mixed_precision.set_global_policy`` before
``build_model``) the embedding and LSTMs compute in float16 or bfloat16, while the output heads
compute in float32: the pitch logits feed a 128-way softmax and the timing heads a softplus,
both of which lose too much in 16 bits. Inputs and outputs stay float32 either way.
"""

from __future__ import annotations

import keras
from keras import layers

from trainer.config import ModelConfig

PITCHES = 128


def build_model(config: ModelConfig, window_length: int, timing: dict) -> keras.Model:
  """Bidirectional LSTM -> LSTM -> {pitch logits, step, duration, velocity} heads.

  Args:
    config: sizes, dropout.
    window_length: input notes per window.
    timing: ``info['timing']``: mean and std of step and duration on the training split.
  """
  pitch = keras.Input((window_length,), dtype='int32', name='pitch')
  step = keras.Input((window_length,), dtype='float32', name='step')
  duration = keras.Input((window_length,), dtype='float32', name='duration')
  velocity = keras.Input((window_length,), dtype='float32', name='velocity')

  def standardized(values, name):
    stats = timing[name]
    return (values - stats['mean']) / max(stats['std'], 1e-6)

  timing_features = keras.ops.stack(
      [standardized(step, 'step'), standardized(duration, 'duration'), velocity / 127.0],
      axis=-1)
  embedded = layers.Embedding(PITCHES, config.embedding_dim, name='pitch_embedding')(pitch)
  x = layers.Concatenate()([embedded, timing_features])
  x = layers.Bidirectional(layers.LSTM(config.lstm_units, return_sequences=True),
                           name='bilstm')(x)
  x = layers.Dropout(config.dropout)(x)
  x = layers.LSTM(config.lstm_units, name='lstm')(x)
  x = layers.Dropout(config.dropout)(x)

  outputs = {
      'pitch': layers.Dense(PITCHES, dtype='float32', name='next_pitch_logits')(x),
      # Timing heads are in seconds; softplus keeps them non-negative.
      'step': _scalar_head(x, 'softplus', 'next_step'),
      'duration': _scalar_head(x, 'softplus', 'next_duration'),
      # Velocity as a fraction of 127.
      'velocity': _scalar_head(x, 'sigmoid', 'next_velocity'),
  }
  return keras.Model(
      {'pitch': pitch, 'step': step, 'duration': duration, 'velocity': velocity}, outputs,
      name='partita')


def _scalar_head(x, activation: str, name: str):
  """A float32 Dense(1) with ``activation``, reshaped to one value per window."""
  value = layers.Dense(1, activation=activation, dtype='float32', name=f'{name}_dense')(x)
  return layers.Reshape((), dtype='float32', name=name)(value)


def per_window_losses(outputs: dict, targets: dict, config: ModelConfig) -> dict:
  """The training objective, one value per window: ``{'loss': the weighted sum, 'pitch_loss',
  'step_loss', 'duration_loss', 'velocity_loss'}``, each ``[batch]``.

  Pitch: cross-entropy of the logits. Step and duration: Huber (delta 1 s), not squared error,
  so that a few notes held for tens of seconds by the pedal do not dominate every gradient.
  Velocity: squared error of the fraction of 127. Per window rather than batch means, so that
  the caller divides by the global batch size and replicas of any size sum to the same loss.
  """
  def huber(name):
    # Keras' huber averages over the last axis: give it one value per window there.
    return keras.losses.huber(targets[name][:, None], outputs[name][:, None], delta=1.0)

  losses = {
      'pitch_loss': keras.losses.sparse_categorical_crossentropy(
          targets['pitch'], outputs['pitch'], from_logits=True),
      'step_loss': huber('step'),
      'duration_loss': huber('duration'),
      'velocity_loss': keras.ops.square(outputs['velocity'] - targets['velocity']),
  }
  losses['loss'] = (config.pitch_loss_weight * losses['pitch_loss']
                    + config.step_loss_weight * losses['step_loss']
                    + config.duration_loss_weight * losses['duration_loss']
                    + config.velocity_loss_weight * losses['velocity_loss'])
  return losses
