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


def compile_model(model: keras.Model, config: ModelConfig, learning_rate: float,
                  clipnorm: float) -> None:
  """Adam with gradient clipping; one loss per head.

  A model built under the ``mixed_float16`` policy gets its optimizer wrapped in a
  ``keras.optimizers.LossScaleOptimizer`` by ``compile`` itself (dynamic loss scaling, so that
  small float16 gradients do not flush to zero); bfloat16 has float32's range and needs none.
  """
  model.compile(
      optimizer=keras.optimizers.Adam(learning_rate, clipnorm=clipnorm),
      loss={
          'pitch': keras.losses.SparseCategoricalCrossentropy(from_logits=True),
          # Huber, not squared error: a few notes held for tens of seconds by the pedal would
          # otherwise dominate every gradient.
          'step': _PerWindowLoss(keras.losses.huber, 'huber', delta=1.0),
          'duration': _PerWindowLoss(keras.losses.huber, 'huber', delta=1.0),
          'velocity': _PerWindowLoss(keras.losses.mean_squared_error, 'mean_squared_error'),
      },
      loss_weights={
          'pitch': config.pitch_loss_weight,
          'step': config.step_loss_weight,
          'duration': config.duration_loss_weight,
          'velocity': config.velocity_loss_weight,
      },
      metrics={
          'pitch': [keras.metrics.SparseCategoricalAccuracy(name='accuracy'),
                    keras.metrics.SparseTopKCategoricalAccuracy(5, name='top5')],
          'step': [keras.metrics.MeanAbsoluteError(name='mae')],
          'duration': [keras.metrics.MeanAbsoluteError(name='mae')],
      })



class _PerWindowLoss(keras.losses.Loss):
  """``loss_fn`` on heads with one value per window ([batch] tensors), keeping one loss value
  per window until Keras reduces them.

  Keras' ``Huber`` and ``MeanSquaredError`` average over the last axis, which for [batch]
  targets is the whole batch; Keras then takes the scalar as already reduced and skips its
  division by the number of replicas, so under ``tf.distribute`` with several replicas the
  timing heads' gradients would be summed over replicas instead of averaged (measured with
  Keras 3.15: a MirroredStrategy step on two devices moved the timing heads about twice as far
  as one device on the same batch).
  """

  def __init__(self, loss_fn, name: str, **kwargs):
    super().__init__(name=name)
    self._loss_fn = loss_fn
    self._kwargs = kwargs

  def call(self, y_true, y_pred):
    return self._loss_fn(y_true[..., None], y_pred[..., None], **self._kwargs)
