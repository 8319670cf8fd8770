r"""Train the model on a preprocessed dataset, then export a SavedModel.

    python -m trainer.task --data DATA_DIR --model-dir MODEL_DIR \
        [--config configs/small.yaml] [--set train.steps=500 --set model.lstm_units=64 ...]

Writes into MODEL_DIR (a local path or ``gs://``): ``config.yaml`` (the resolved config),
``checkpoints/`` (the state an interrupted run resumes from: rerun the same command),
``logs/`` (TensorBoard), ``metrics.json`` (final validation metrics) and ``export/`` (the
SavedModel, written last, never visible half-written). On Vertex AI the export, checkpoints and
logs go where ``AIP_MODEL_DIR``, ``AIP_CHECKPOINT_DIR`` and ``AIP_TENSORBOARD_LOG_DIR`` say.

``runtime.strategy`` picks the ``tf.distribute`` strategy: one device, every local GPU
(``mirrored``), several workers described by ``TF_CONFIG`` (``multi_worker``) or a TPU. With
several workers every one runs this same command; only the chief writes to MODEL_DIR, the
others write what collective saving needs to temporary folders they remove.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from trainer import config as config_lib
from trainer import data as data_lib
from trainer import distribute
from trainer import export as export_lib
from trainer import model as model_lib

@dataclasses.dataclass
class OutputDirs:
  """Where a run writes; Vertex AI's ``AIP_*`` variables take precedence over MODEL_DIR."""
  model_dir: str
  export: str
  checkpoints: str
  logs: str

  @classmethod
  def for_model_dir(cls, model_dir: str) -> OutputDirs:
    env = os.environ
    return cls(
        model_dir=model_dir,
        export=env.get('AIP_MODEL_DIR') or os.path.join(model_dir, 'export'),
        checkpoints=env.get('AIP_CHECKPOINT_DIR') or os.path.join(model_dir, 'checkpoints'),
        logs=env.get('AIP_TENSORBOARD_LOG_DIR') or os.path.join(model_dir, 'logs'))


def epoch_plan(start_step: int, total_steps: int,
               steps_per_epoch: int) -> list[tuple[int, int, int]]:
  """The ``model.fit`` calls that take training from ``start_step`` to ``total_steps``.

  Epoch k is steps ``[k * steps_per_epoch, (k + 1) * steps_per_epoch)``, cut at
  ``total_steps``. A run resumed mid-epoch first finishes that epoch, and the last epoch may be
  short, so that validation always happens at the same steps and training stops at exactly
  ``total_steps``. ``fit`` takes one epoch length per call, so each run of equal-length epochs
  is one call: ``(initial_epoch, epochs, steps_per_epoch)``.
  """
  calls = []
  step = start_step
  while step < total_steps:
    epoch = step // steps_per_epoch
    end = min((epoch + 1) * steps_per_epoch, total_steps)
    if calls and calls[-1][2] == end - step:
      calls[-1][1] = epoch + 1
    else:
      calls.append([epoch, epoch + 1, end - step])
    step = end
  return [tuple(call) for call in calls]


class Checkpoints(keras.callbacks.Callback):
  """Counts training steps and saves model, optimizer and step count every ``every_steps``
  steps and after the last one.

  A ``tf.train.CheckpointManager`` keeps the newest checkpoint: it writes a checkpoint's files
  first and then names it in the small ``checkpoint`` state file (an atomic write, also on
  ``gs://``), so a run killed while saving resumes from the previous complete checkpoint.
  Keras' ``BackupAndRestore`` is not used: it overwrites its weights file in place, restores
  epochs but not steps within one, and deletes its backup when ``fit`` ends, before the export.

  Every worker of a multi-worker run saves (saving distributed variables can need every
  worker); the chief into ``directory``, the others into a temporary folder they remove.
  """

  def __init__(self, checkpoint: tf.train.Checkpoint, step: tf.Variable, directory: str,
               chief: bool, every_steps: int, total_steps: int):
    super().__init__()
    self._step = step
    self._every_steps = every_steps
    self._total_steps = total_steps
    self._scratch = None if chief else tempfile.mkdtemp(prefix='partita-checkpoints-')
    self._manager = tf.train.CheckpointManager(checkpoint, self._scratch or directory,
                                               max_to_keep=1)

  def on_train_batch_end(self, batch, logs=None):
    step = int(self._step.assign_add(1))
    if step % self._every_steps == 0 or step == self._total_steps:
      self._manager.save()

  def close(self):
    if self._scratch:
      shutil.rmtree(self._scratch, ignore_errors=True)


class EpochThroughput(keras.callbacks.Callback):
  """Times each epoch; ``epoch_throughput`` gives the step reached and the windows/s."""

  def __init__(self, step: tf.Variable, batch_size: int):
    super().__init__()
    self._step = step
    self._batch_size = batch_size

  def on_epoch_begin(self, epoch, logs=None):
    self._started = time.perf_counter()
    self._first_step = int(self._step)

  def epoch_throughput(self) -> tuple[int, float]:
    seconds = time.perf_counter() - self._started
    step = int(self._step)
    return step, (step - self._first_step) * self._batch_size / seconds


class ConsoleProgress(EpochThroughput):
  """One line per epoch: step, losses, validation metrics and throughput."""

  def __init__(self, step: tf.Variable, total_steps: int, batch_size: int):
    super().__init__(step, batch_size)
    self._total_steps = total_steps

  def on_epoch_end(self, epoch, logs=None):
    step, windows_per_second = self.epoch_throughput()
    shown = ' '.join(f'{k}={v:.4f}' for k, v in sorted((logs or {}).items())
                     if k in ('loss', 'pitch_loss', 'val_pitch_loss', 'val_pitch_accuracy'))
    print(f'step {step}/{self._total_steps} {shown} ({windows_per_second:.0f} windows/s)',
          flush=True)


class TensorBoardScalars(EpochThroughput):
  """At the end of every epoch, TensorBoard scalars against the training step: every training
  metric (total and per-head loss, pitch accuracy and top-5, timing MAE) with the learning rate
  and windows/s in ``logs/train``, the validation metrics in ``logs/validation``.

  Steps, not epochs, on the x axis keep a resumed run's curves continuous.
  """

  def __init__(self, log_dir: str, step: tf.Variable, batch_size: int):
    super().__init__(step, batch_size)
    self._train = tf.summary.create_file_writer(os.path.join(log_dir, 'train'))
    self._validation = tf.summary.create_file_writer(os.path.join(log_dir, 'validation'))

  def on_epoch_end(self, epoch, logs=None):
    step, windows_per_second = self.epoch_throughput()
    logs = logs or {}
    with self._train.as_default(step=step):
      for name, value in logs.items():
        if not name.startswith('val_'):
          tf.summary.scalar(name, value)
      tf.summary.scalar('learning_rate',
                        keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
      tf.summary.scalar('windows_per_second', windows_per_second)
    with self._validation.as_default(step=step):
      for name, value in logs.items():
        if name.startswith('val_'):
          tf.summary.scalar(name[len('val_'):], value)
    self._train.flush()
    self._validation.flush()

  def close(self):
    self._train.close()
    self._validation.close()


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


def write_text(path: str, text: str) -> None:
  with tf.io.gfile.GFile(path, 'w') as f:
    f.write(text)


def train(data_dir: str, model_dir: str,
          config: config_lib.Config) -> tuple[keras.Model, dict]:
  """Trains to ``config.train.steps`` (resuming from the newest checkpoint), exports, and
  returns the model and its final validation metrics."""
  info = data_lib.load_info(data_dir)
  strategy = distribute.make_strategy(config.runtime)
  policy = distribute.mixed_precision_policy(config.runtime, strategy)
  chief = distribute.is_chief(strategy)
  dirs = OutputDirs.for_model_dir(model_dir)
  config_yaml = config.to_yaml()
  if chief:
    tf.io.gfile.makedirs(model_dir)
    write_text(os.path.join(model_dir, 'config.yaml'), config_yaml)
  print(f'strategy {distribute.strategy_name(strategy)} with '
        f'{strategy.num_replicas_in_sync} replica(s), dtype policy {policy}', flush=True)

  keras.utils.set_random_seed(config.train.seed)
  window_length = info['window_length']
  validation_data = data_lib.make_dataset(
      data_dir, info, 'validation', config.data, training=False,
      batch_size=config.data.batch_size,
      max_windows=config.train.validation_windows or None)
  # Every worker validates on the whole validation set, so each runs the same number of
  # evaluation steps whatever the number of validation files.
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
  validation_data = validation_data.with_options(options)

  with distribute.global_dtype_policy(policy):
    with strategy.scope():
      model = model_lib.build_model(config.model, window_length, info['timing'])
      model_lib.compile_model(model, config.model, config.train.learning_rate,
                              config.train.clipnorm)
      distribute.build_for_fit(model, validation_data.element_spec)
    steps = _fit(model, strategy, chief, dirs, data_dir, info, config, validation_data)

    metrics = evaluation_metrics(model, validation_data)
    metrics['steps'] = steps
    if chief:
      write_text(os.path.join(model_dir, 'metrics.json'), json.dumps(metrics, indent=1))
    export_args = (window_length, config_yaml, info,
                   first_windows(validation_data, config.export.num_primes))
    if chief:
      export_lib.export_model(model, dirs.export, *export_args)
    else:
      # Every worker exports (saving distributed variables can need all of them); only the
      # chief's export is kept.
      scratch = tempfile.mkdtemp(prefix='partita-export-')
      try:
        export_lib.export_model(model, os.path.join(scratch, 'export'), *export_args)
      finally:
        shutil.rmtree(scratch, ignore_errors=True)
  return model, metrics


def _fit(model: keras.Model, strategy: tf.distribute.Strategy, chief: bool, dirs: OutputDirs,
         data_dir: str, info: dict, config: config_lib.Config,
         validation_data: tf.data.Dataset) -> int:
  """Restores the newest checkpoint, if any, trains up to ``config.train.steps`` and returns
  the step reached."""
  train_config = config.train
  step = tf.Variable(0, dtype=tf.int64, trainable=False, name='step')
  checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, step=step)
  latest = tf.train.latest_checkpoint(dirs.checkpoints)
  if latest:
    checkpoint.restore(latest).assert_existing_objects_matched()
    print(f'resuming from step {int(step)} ({latest})', flush=True)

  checkpoints = Checkpoints(
      checkpoint, step, dirs.checkpoints, chief,
      every_steps=train_config.checkpoint_steps or train_config.steps_per_epoch,
      total_steps=train_config.steps)
  callbacks = [checkpoints,
               ConsoleProgress(step, train_config.steps, config.data.batch_size)]
  if chief:
    tensorboard = TensorBoardScalars(dirs.logs, step, config.data.batch_size)
    callbacks.append(tensorboard)
  try:
    for initial_epoch, epochs, steps_per_epoch in epoch_plan(
        int(step), train_config.steps, train_config.steps_per_epoch):
      # A new shuffle seed per call, so that a resumed run does not replay the windows that
      # the interrupted run started with.
      seed = train_config.seed + int(step)
      train_data = strategy.distribute_datasets_from_function(
          lambda context, seed=seed: data_lib.make_dataset(
              data_dir, info, 'train', config.data, training=True,
              batch_size=config.data.batch_size, seed=seed, input_context=context))
      with distribute.keras_distributed_fit(model, strategy):
        # shuffle=False: the dataset shuffles itself; Keras' flag only applies to arrays.
        model.fit(train_data, initial_epoch=initial_epoch, epochs=epochs,
                  steps_per_epoch=steps_per_epoch, validation_data=validation_data,
                  callbacks=callbacks, shuffle=False, verbose=0)
  finally:
    checkpoints.close()
    if chief:
      tensorboard.close()
  return int(step)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
      description='Train the BiLSTM next-note model on the output of beam_pipelines.preprocess '
      'and export a SavedModel to MODEL_DIR/export. Rerunning the same command resumes an '
      'interrupted run.')
  parser.add_argument('--data', required=True, help='dataset folder written by preprocessing')
  parser.add_argument('--model-dir', required=True,
                      help='where config, checkpoints, logs, metrics and the export go '
                      '(local or gs://)')
  parser.add_argument('--config', help='YAML preset (e.g. configs/small.yaml); default: the '
                      'full-size defaults of trainer/config.py')
  parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                      help='override one config value, e.g. --set train.steps=500 (repeatable)')
  args = parser.parse_args(argv)
  try:
    config = config_lib.load(args.config, args.set)
  except (ValueError, OSError) as e:
    parser.error(str(e))
  try:
    _, metrics = train(args.data, args.model_dir, config)
  except distribute.StrategyError as e:
    parser.exit(1, f'{parser.prog}: error: {e}\n')
  print(f"validation pitch NLL {metrics['pitch_nll']:.3f} nats/note, "
        f"accuracy {metrics['pitch_accuracy']:.1%}, top-5 {metrics['pitch_top5_accuracy']:.1%}")
  print(f'export: {OutputDirs.for_model_dir(args.model_dir).export}')


if __name__ == '__main__':
  sys.exit(main())
