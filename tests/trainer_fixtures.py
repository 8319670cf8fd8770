"""Tiny datasets, the tiny model trained on one, and trainer commands for the trainer's tests.

A dataset is made the way users make one: random melodies written as MIDI files by
``midi_builders`` and preprocessed by ``beam_pipelines.preprocess`` on the DirectRunner.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys

import keras
from midi_builders import random_melody, write_midi
import tensorflow as tf

from beam_pipelines import preprocess
from partita import dataset as dataset_lib
from trainer import config as config_lib
from trainer import pitch_ngram, task

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WINDOW = 8
# The composers of the shared tiny model's pieces: alphabetical, as its label vocabulary lists
# them after 'unknown' and 'other'.
LABELS = ('bach', 'chopin')


def make_dataset(root: str, num_pieces: int = 12, labels: tuple[str, ...] = ()) -> str:
  """Preprocesses ``num_pieces`` random melodies into ``root/data``; returns that folder.

  Equal split weights leave pieces in every split, and a short stride makes several chunks
  per piece. With ``labels``, piece ``i`` is named ``<labels[i % n]>-piece<i>.mid`` and labelled
  so from its name, every label with an id of its own.
  """
  corpus = os.path.join(root, 'corpus')
  for i in range(num_pieces):
    prefix = f'{labels[i % len(labels)]}-' if labels else ''
    write_midi(os.path.join(corpus, f'{prefix}piece{i:02d}.mid'), random_melody(i, 40 + 5 * i))
  data_dir = os.path.join(root, 'data')
  config = preprocess.PreprocessConfig(
      input=corpus, output=data_dir, window_length=WINDOW, stride=16,
      split_ratios=(('train', 1.0), ('validation', 1.0), ('test', 1.0)),
      label_regex=r'^([a-z]+)-' if labels else '', min_label_pieces=1)
  preprocess.run(config)
  return data_dir


@dataclasses.dataclass(frozen=True)
class TrainedModel:
  """A tiny model trained by ``trainer.task.train``: its folders and what training returned.

  Attributes:
    data_dir: the preprocessed dataset it was trained on.
    model_dir: ``trainer.task``'s model folder (config.yaml, metrics.json, logs/, export/).
    export_dir: the SavedModel export in ``model_dir``.
    info: the dataset's info.json.
    config: the training config.
    metrics: the validation metrics (metrics.json).
    model: the trained Keras model.
    ngrams: the pitch n-gram tables mixed into the export.
  """
  data_dir: str
  model_dir: str
  export_dir: str
  info: dict
  config: config_lib.Config
  metrics: dict
  model: keras.Model
  ngrams: pitch_ngram.PitchNGrams


def train_tiny_model(root: str) -> TrainedModel:
  """Makes ``make_dataset(root, labels=LABELS)``; trains the tiny preset on it in ``root/model``."""
  data_dir = make_dataset(root, labels=LABELS)
  model_dir = os.path.join(root, 'model')
  config = config_lib.load(os.path.join(REPO, 'configs', 'tiny.yaml'))
  model, metrics, ngrams = task.train(data_dir, model_dir, config)
  return TrainedModel(data_dir, model_dir, os.path.join(model_dir, 'export'),
                      dataset_lib.load_info(data_dir), config, metrics, model, ngrams)


def task_command(data_dir: str, model_dir: str, *overrides: str) -> list[str]:
  """``python -m trainer.task`` on the tiny preset with ``--set`` overrides."""
  command = [sys.executable, '-m', 'trainer.task', '--data', data_dir, '--model-dir', model_dir,
             '--config', os.path.join(REPO, 'configs', 'tiny.yaml')]
  for override in overrides:
    command += ['--set', override]
  return command


def subprocess_env(**extra: str) -> dict[str, str]:
  """The environment for a trainer subprocess.

  The repository importable, TF quiet, plus ``extra``.
  """
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='2')
  env.update(extra)
  return env


def free_ports(count: int) -> list[int]:
  """``count`` distinct TCP ports free on loopback right now."""
  sockets = []
  try:
    for _ in range(count):
      sock = socket.socket()
      sock.bind(('127.0.0.1', 0))
      sockets.append(sock)
    return [sock.getsockname()[1] for sock in sockets]
  finally:
    for sock in sockets:
      sock.close()


def reshard(data_dir: str, split: str, num_shards: int) -> None:
  """Rewrites one split's TFRecord shards as ``num_shards`` files, chunks dealt round-robin.

  As a larger corpus on Dataflow would be written (the DirectRunner writes one shard).
  """
  pattern = os.path.join(data_dir, split, f'{split}-*.tfrecord.gz')
  old_files = sorted(tf.io.gfile.glob(pattern))
  records = list(tf.data.TFRecordDataset(old_files, compression_type='GZIP').as_numpy_iterator())
  for path in old_files:
    tf.io.gfile.remove(path)
  options = tf.io.TFRecordOptions(compression_type='GZIP')
  for shard in range(num_shards):
    path = os.path.join(data_dir, split, f'{split}-{shard:05d}-of-{num_shards:05d}.tfrecord.gz')
    with tf.io.TFRecordWriter(path, options) as writer:
      for record in records[shard::num_shards]:
        writer.write(record)
