r"""Train the model on a preprocessed dataset, then export a SavedModel.

    python -m trainer.task --data DATA_DIR --model-dir MODEL_DIR \
        [--config configs/small.yaml] [--set train.steps=500 --set model.lstm_units=64 ...]

Writes into MODEL_DIR: ``config.yaml`` (the resolved config), ``backup/`` (the state needed to
resume an interrupted run: rerun the same command), ``logs/`` (TensorBoard), ``metrics.json``
(final validation metrics) and ``export/`` (the SavedModel, written last and atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from trainer import config as config_lib
from trainer import data as data_lib
from trainer import export as export_lib
from trainer import model as model_lib


def make_strategy(runtime: config_lib.RuntimeConfig) -> tf.distribute.Strategy:
  if runtime.strategy == 'default':
    return tf.distribute.get_strategy()
  if runtime.strategy == 'one_device':
    return tf.distribute.OneDeviceStrategy(runtime.device)
  if runtime.strategy == 'mirrored':
    return tf.distribute.MirroredStrategy()
  raise ValueError(f'unknown runtime.strategy {runtime.strategy!r}; '
                   'expected default, one_device or mirrored')


class ConsoleProgress(keras.callbacks.Callback):
  """One line per epoch: step, losses, validation metrics and throughput."""

  def __init__(self, total_steps: int, steps_per_epoch: int, batch_size: int):
    super().__init__()
    self._total_steps = total_steps
    self._steps_per_epoch = steps_per_epoch
    self._batch_size = batch_size

  def on_epoch_begin(self, epoch, logs=None):
    self._started = time.perf_counter()

  def on_epoch_end(self, epoch, logs=None):
    seconds = time.perf_counter() - self._started
    step = (epoch + 1) * self._steps_per_epoch
    shown = ' '.join(f'{k}={v:.4f}' for k, v in sorted((logs or {}).items())
                     if k in ('loss', 'pitch_loss', 'val_pitch_loss', 'val_pitch_accuracy'))
    print(f'step {step}/{self._total_steps} {shown} '
          f'({self._steps_per_epoch * self._batch_size / seconds:.0f} windows/s)', flush=True)


def evaluation_metrics(model: keras.Model, dataset: tf.data.Dataset) -> dict:
  """Means over every window of ``dataset``: pitch NLL (nats/note), top-1 and top-5 accuracy,
  step and duration MAE (seconds).

  Computed here rather than read from ``model.evaluate``, which averages per-batch means and so
  overweights a short last batch.
  """
  @tf.function
  def per_window(inputs, targets):
    outputs = model(inputs, training=False)
    target = targets['pitch']
    return {
        'pitch_nll': tf.nn.sparse_softmax_cross_entropy_with_logits(target, outputs['pitch']),
        'pitch_accuracy': tf.cast(tf.math.in_top_k(target, outputs['pitch'], 1), tf.float64),
        'pitch_top5_accuracy': tf.cast(tf.math.in_top_k(target, outputs['pitch'], 5),
                                       tf.float64),
        'step_mae_seconds': tf.abs(outputs['step'] - targets['step']),
        'duration_mae_seconds': tf.abs(outputs['duration'] - targets['duration']),
    }

  sums, count = {}, 0
  for inputs, targets in dataset:
    values = per_window(inputs, targets)
    for name, value in values.items():
      sums[name] = sums.get(name, 0.0) + float(tf.reduce_sum(tf.cast(value, tf.float64)))
    count += int(tf.shape(targets['pitch'])[0])
  return {name: total / count for name, total in sums.items()}


def first_windows(dataset: tf.data.Dataset, count: int) -> dict[str, np.ndarray]:
  """The input windows of the first ``count`` examples of a (batched) dataset."""
  inputs, _ = next(iter(dataset.unbatch().batch(count).take(1)))
  return {name: values.numpy() for name, values in inputs.items()}


def train(data_dir: str, model_dir: str,
          config: config_lib.Config) -> tuple[keras.Model, dict]:
  """Trains to ``config.train.steps`` (resuming from ``model_dir/backup``), exports, and
  returns the model and its final validation metrics."""
  info = data_lib.load_info(data_dir)
  keras.utils.set_random_seed(config.train.seed)
  os.makedirs(model_dir, exist_ok=True)
  config_yaml = config.to_yaml()
  with open(os.path.join(model_dir, 'config.yaml'), 'w') as f:
    f.write(config_yaml)

  window_length = info['window_length']
  strategy = make_strategy(config.runtime)
  train_data = strategy.distribute_datasets_from_function(
      lambda context: data_lib.make_dataset(
          data_dir, info, 'train', config.data, training=True,
          batch_size=config.data.batch_size, seed=config.train.seed, input_context=context))
  validation_data = data_lib.make_dataset(
      data_dir, info, 'validation', config.data, training=False,
      batch_size=config.data.batch_size,
      max_windows=config.train.validation_windows or None)

  with strategy.scope():
    model = model_lib.build_model(config.model, window_length, info['timing'])
    model_lib.compile_model(model, config.model, config.train.learning_rate,
                            config.train.clipnorm)

  steps_per_epoch = min(config.train.steps_per_epoch, config.train.steps)
  epochs = -(-config.train.steps // steps_per_epoch)
  model.fit(
      train_data, epochs=epochs, steps_per_epoch=steps_per_epoch,
      validation_data=validation_data, verbose=0,
      callbacks=[
          keras.callbacks.BackupAndRestore(os.path.join(model_dir, 'backup')),
          keras.callbacks.TensorBoard(os.path.join(model_dir, 'logs')),
          ConsoleProgress(epochs * steps_per_epoch, steps_per_epoch, config.data.batch_size),
      ])

  metrics = evaluation_metrics(model, validation_data)
  metrics['steps'] = epochs * steps_per_epoch
  with open(os.path.join(model_dir, 'metrics.json'), 'w') as f:
    json.dump(metrics, f, indent=1)
  export_lib.export_model(
      model, os.path.join(model_dir, 'export'), window_length, config_yaml, info,
      first_windows(validation_data, config.export.num_primes))
  return model, metrics


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
      description='Train the BiLSTM next-note model on the output of beam_pipelines.preprocess '
      'and export a SavedModel to MODEL_DIR/export. Rerunning the same command resumes an '
      'interrupted run.')
  parser.add_argument('--data', required=True, help='dataset folder written by preprocessing')
  parser.add_argument('--model-dir', required=True,
                      help='where config, checkpoints, logs, metrics and the export go')
  parser.add_argument('--config', help='YAML preset (e.g. configs/small.yaml); default: the '
                      'full-size defaults of trainer/config.py')
  parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                      help='override one config value, e.g. --set train.steps=500 (repeatable)')
  args = parser.parse_args(argv)
  try:
    config = config_lib.load(args.config, args.set)
  except (ValueError, OSError) as e:
    parser.error(str(e))
  _, metrics = train(args.data, args.model_dir, config)
  print(f"validation pitch NLL {metrics['pitch_nll']:.3f} nats/note, "
        f"accuracy {metrics['pitch_accuracy']:.1%}, top-5 {metrics['pitch_top5_accuracy']:.1%}")
  print(f"export: {os.path.join(args.model_dir, 'export')}")


if __name__ == '__main__':
  sys.exit(main())
