r"""Train the model on a preprocessed dataset, then export a SavedModel.

    python -m trainer.task --data DATA_DIR --model-dir MODEL_DIR \
        [--config configs/small.yaml] [--set train.steps=500 --set model.lstm_units=64 ...]

Writes into MODEL_DIR (a local path or ``gs://``): ``config.yaml`` (the resolved config),
``checkpoints/`` (the state an interrupted run resumes from: rerun the same command; a run
with other ``model`` settings is refused, naming them),
``logs/`` (TensorBoard), ``metrics.json`` (final validation metrics of what is exported) and
``export/`` (the SavedModel, written last, never visible half-written); ``config.yaml`` and
``metrics.json`` are written atomically (``partita.atomic``). After training, the
pitch n-grams of ``trainer.pitch_ngram`` are counted on the training split and their weights
chosen on the validation windows; the export mixes them into the network's pitch. On Vertex AI
the export, checkpoints and logs go where ``AIP_MODEL_DIR``, ``AIP_CHECKPOINT_DIR`` and
``AIP_TENSORBOARD_LOG_DIR`` say.

``runtime.strategy`` picks the ``tf.distribute`` strategy: one device, every local GPU
(``mirrored``), several workers described by ``TF_CONFIG`` (``multi_worker``) or a TPU. With
several workers every one runs this same command; only the chief writes to MODEL_DIR, the
others write what collective saving needs to temporary folders they remove.

This module builds what training needs and writes the results; ``trainer.train_loop`` trains.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile

import keras
import numpy as np
import tensorflow as tf
import yaml

from partita import atomic, baselines, constants, contract, originality
from partita import dataset as dataset_lib
from trainer import config as config_lib
from trainer import data as data_lib
from trainer import distribute, pitch_ngram, train_loop
from trainer import export as export_lib
from trainer import metrics as metrics_lib
from trainer import model as model_lib


@dataclasses.dataclass
class OutputDirs:
  """Where a run writes; Vertex AI's ``AIP_*`` variables take precedence over MODEL_DIR."""
  export: str
  checkpoints: str
  logs: str

  @classmethod
  def for_model_dir(cls, model_dir: str) -> OutputDirs:
    """The output folders below ``model_dir``, unless Vertex AI's variables name others."""
    env = os.environ
    return cls(
        export=env.get('AIP_MODEL_DIR') or os.path.join(model_dir, 'export'),
        checkpoints=env.get('AIP_CHECKPOINT_DIR') or os.path.join(model_dir, 'checkpoints'),
        logs=env.get('AIP_TENSORBOARD_LOG_DIR') or os.path.join(model_dir, 'logs'))


def evaluation_metrics(model: keras.Model, dataset: tf.data.Dataset,
                       config: config_lib.ModelConfig,
                       ngrams: pitch_ngram.PitchNGrams | None = None) -> dict[str, float]:
  """``trainer.metrics.NOTE_METRICS``, means over every window of ``dataset``.

  With ``ngrams``, the pitch is the network's mixed with them, as the export predicts it.
  """
  @tf.function
  def scores(inputs, targets):
    outputs = model(inputs, targets, training=False)
    if ngrams is not None:
      outputs = {**outputs, 'pitch': ngrams.mix(outputs['pitch'], model_lib.heard(inputs)['pitch'],
                                                inputs[contract.LABEL_FEATURE][:, -1])}
    values = metrics_lib.window_metrics(outputs, targets, config)
    return {name: values[name] for name in metrics_lib.NOTE_METRICS}

  sums, count = dict.fromkeys(metrics_lib.NOTE_METRICS, 0.0), 0
  for inputs, targets in dataset:
    for name, values in scores(inputs, targets).items():
      sums[name] += float(np.sum(values.numpy(), dtype=np.float64))
    count += len(targets['pitch'])
  return {name: total / count for name, total in sums.items()}


def validation_dataset(data_dir: str, info: dict, config: config_lib.Config) -> tf.data.Dataset:
  """The validation batches, the same on every worker."""
  dataset = data_lib.make_dataset(
      data_dir, info, 'validation', config.data, training=False,
      batch_size=config.data.batch_size, max_windows=config.train.validation_windows or None)
  # Every worker validates on the whole validation set, so each runs the same number of
  # validation steps whatever the number of validation files.
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
  return dataset.with_options(options)


def first_windows(dataset: tf.data.Dataset, count: int) -> dict[str, np.ndarray]:
  """The notes of the input windows of the first ``count`` examples of a (batched) dataset.

  These are primes: without their label, which a request gives.
  """
  inputs, _ = next(iter(dataset.unbatch().batch(count).take(1)))
  return {name: inputs[name].numpy() for name in constants.NOTE_FEATURES}


def checked_ngram_order(config: config_lib.ModelConfig, info: dict) -> int:
  """``model.ngram_order``, refused before training if the n-grams cannot have it.

  Their context, ``order - 1`` pitches, must fit in a window.
  """
  highest = min(baselines.MAX_ORDER, info['window_length'] + 1)
  if not 0 <= config.ngram_order <= highest:
    raise ValueError(f'model.ngram_order must be in 0..{highest}, got {config.ngram_order}')
  return config.ngram_order


def training_runs(data_dir: str, info: dict, table_limit: int) -> originality.RunTable:
  """The originality guard's table of the training split's runs of ``table_limit + 1`` pitches."""
  return originality.build_table(
      (chunk['pitch'] for chunk in dataset_lib.read_chunks(data_dir, info, 'train',
                                                           info['labels'])), table_limit)


class ResumeError(ValueError):
  """MODEL_DIR holds checkpoints of a model with other settings: its weights would not fit."""


def check_resumable(model_dir: str, checkpoint_dir: str, config_yaml: str) -> None:
  """Raises :class:`ResumeError` where ``checkpoint_dir`` holds checkpoints of another model.

  That is, where the ``model`` settings of MODEL_DIR's ``config.yaml``, which trained them,
  differ from those of ``config_yaml``; checked before this run overwrites that file. Other
  settings (the steps, the strategy, ``config_lib.WEIGHTLESS_MODEL_SETTINGS``) may change
  between runs.
  """
  path = os.path.join(model_dir, 'config.yaml')
  if not (tf.train.latest_checkpoint(checkpoint_dir) and tf.io.gfile.exists(path)):
    return
  with tf.io.gfile.GFile(path) as f:
    before = yaml.safe_load(f.read()).get('model', {})
  now = yaml.safe_load(config_yaml)['model']
  changed = [f'model.{key} {before.get(key, "unset")} there, {now.get(key, "unset")} now'
             for key in sorted((before.keys() | now.keys()) - config_lib.WEIGHTLESS_MODEL_SETTINGS)
             if before.get(key) != now.get(key)]
  if changed:
    raise ResumeError(
        f'{model_dir} holds checkpoints of a model with other settings ({"; ".join(changed)}): '
        'their weights do not fit this one. Resume with the model settings of its config.yaml '
        '(a setting unset there is newer than the partita that trained it), or train into a '
        'new --model-dir.')


def write_config(model_dir: str, checkpoint_dir: str, config_yaml: str, chief: bool) -> None:
  """Writes MODEL_DIR's ``config.yaml`` (the chief only), once :func:`check_resumable` passes."""
  check_resumable(model_dir, checkpoint_dir, config_yaml)
  if chief:
    atomic.makedirs(model_dir)
    atomic.write_bytes(os.path.join(model_dir, 'config.yaml'), config_yaml.encode())


def train(data_dir: str, model_dir: str, config: config_lib.Config
          ) -> tuple[keras.Model, dict, pitch_ngram.PitchNGrams | None]:
  """Trains to ``config.train.steps`` (resuming from the newest checkpoint), then exports.

  Returns the model, its final validation metrics and the pitch n-grams mixed into it (None when
  ``model.ngram_order`` is 0).
  """
  info = dataset_lib.load_info(data_dir)
  order = checked_ngram_order(config.model, info)
  table_limit = originality.table_limit(config.export.copy_limit, info['window_length'])
  strategy = distribute.make_strategy(config.runtime)
  policy = distribute.mixed_precision_policy(config.runtime, strategy)
  chief = distribute.is_chief(strategy)
  dirs = OutputDirs.for_model_dir(model_dir)
  config_yaml = config.to_yaml()
  write_config(model_dir, dirs.checkpoints, config_yaml, chief)
  print(f'strategy {distribute.strategy_name(strategy)} with '
        f'{strategy.num_replicas_in_sync} replica(s), dtype policy {policy}', flush=True)

  keras.utils.set_random_seed(config.train.seed)
  validation_data = validation_dataset(data_dir, info, config)

  def train_data(input_context: tf.distribute.InputContext, seed: int) -> tf.data.Dataset:
    return data_lib.make_dataset(data_dir, info, 'train', config.data, training=True,
                                 batch_size=config.data.batch_size, seed=seed,
                                 input_context=input_context)

  with distribute.global_dtype_policy(policy):
    with strategy.scope():
      model = model_lib.build_model(config.model, info['window_length'], info['timing'],
                                    len(info['labels']['vocabulary']))
      optimizer = train_loop.make_optimizer(config.train, policy, model.trainable_variables)
    trainer = train_loop.Trainer(model, optimizer, strategy, config)
    steps = train_loop.run(trainer, train_data, validation_data, dirs.checkpoints, dirs.logs,
                           chief, config.train)

    ngrams, ngram_metrics = (pitch_ngram.fit_mixture(model, data_dir, info, validation_data, order)
                             if order else (None, None))
    metrics = dict(evaluation_metrics(model, validation_data, config.model, ngrams), steps=steps)
    if ngram_metrics:
      metrics['pitch_ngram'] = ngram_metrics
    if chief:
      atomic.write_bytes(os.path.join(model_dir, metrics_lib.METRICS_FILE),
                         json.dumps(metrics, indent=1).encode())
    export_args = (info['window_length'], config_yaml, info,
                   first_windows(validation_data, config.export.num_primes),
                   training_runs(data_dir, info, table_limit), ngrams)
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
  return model, metrics, ngrams


def argument_parser() -> argparse.ArgumentParser:
  """The command's flags."""
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
  return parser


def main(argv: list[str] | None = None) -> None:
  """The ``python -m trainer.task`` command: trains (or resumes), exports, prints the metrics."""
  parser = argument_parser()
  args = parser.parse_args(argv)
  try:
    config = config_lib.load(args.config, args.set)
  except (ValueError, OSError) as e:
    parser.error(str(e))
  try:
    _, metrics, _ = train(args.data, args.model_dir, config)
  except (distribute.StrategyError, ResumeError) as e:
    parser.exit(1, f'{parser.prog}: error: {e}\n')
  print(f"validation pitch NLL {metrics['pitch_nll']:.3f} nats/note, "
        f"accuracy {metrics['pitch_accuracy']:.1%}, top-5 {metrics['pitch_top5_accuracy']:.1%}; "
        f"step {metrics['step_nll']:.3f}, duration {metrics['duration_nll']:.3f}, "
        f"note {metrics['note_nll']:.3f} nats/note on the 10 ms grid")
  print(f'export: {OutputDirs.for_model_dir(args.model_dir).export}')


if __name__ == '__main__':
  sys.exit(main())
