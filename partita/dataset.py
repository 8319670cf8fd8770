"""The data contract's TensorFlow reader: what ``beam_pipelines.preprocess`` writes, read back.

The Beam job writes chunks with ``partita.contract`` (no TensorFlow in its workers); every stage
that reads a dataset (the trainer's input pipeline, serving's primes from a test split,
evaluation) reads it through this module, so the reader is defined once, beside the writer's
constants, as SeqIO's writer and reader share one contract. It reads ``info.json`` instead of
repeating its constants: window length, compression, shard patterns and timing statistics come
from it.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from partita import constants, contract


def load_info(data_dir: str) -> dict:
  """The dataset's info.json; refuses a dataset whose preprocessing never completed."""
  if not tf.io.gfile.exists(os.path.join(data_dir, contract.COMPLETED_MARKER)):
    raise FileNotFoundError(
        f'{data_dir} has no {contract.COMPLETED_MARKER} marker: it is not the output of a '
        'finished `python -m beam_pipelines.preprocess` run')
  with tf.io.gfile.GFile(os.path.join(data_dir, contract.INFO_FILE)) as f:
    info = json.load(f)
  if info.get('format_version') != contract.FORMAT_VERSION:
    raise ValueError(f"{data_dir}: dataset format {info.get('format_version')} is not "
                     f'{contract.FORMAT_VERSION}; preprocess it again')
  return info


def shard_files(data_dir: str, info: dict, split: str) -> list[str]:
  files = sorted(tf.io.gfile.glob(os.path.join(data_dir, info['shard_patterns'][split])))
  if not files:
    raise FileNotFoundError(f'no {split} shards in {data_dir}')
  return files


def parse_chunk(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
  """One serialized tf.train.Example -> dict of 1-D tensors (pitch int32, others float32)."""
  spec = {name: tf.io.VarLenFeature(tf.int64 if dtype == 'int64' else tf.float32)
          for name, dtype in contract.FEATURE_DTYPES.items()}
  parsed = tf.io.parse_single_example(serialized, spec)
  chunk = {name: tf.sparse.to_dense(value) for name, value in parsed.items()}
  return {
      'pitch': tf.cast(chunk['pitch'], tf.int32),
      'step': chunk['step'],
      'duration': chunk['duration'],
      'velocity': tf.cast(chunk['velocity'], tf.float32),
  }


def chunk_to_windows(chunk: dict[str, tf.Tensor], window_length: int) -> tf.Tensor:
  """Every ``window_length + 1`` consecutive notes of a chunk, at stride 1.

  Returns one float32 tensor ``[windows, window_length + 1, 4]`` (the features in
  ``constants.NOTE_FEATURES`` order): pitch and velocity are small integers, exact in float32,
  and one tensor per window instead of four makes shuffling and batching single windows (the
  costly part of the pipeline) twice as fast.
  :func:`unpack` turns batches back into named features.
  """
  notes = tf.stack([tf.cast(chunk[name], tf.float32) for name in constants.NOTE_FEATURES], axis=-1)
  return tf.signal.frame(notes, window_length + 1, 1, axis=0)


def unpack(windows: tf.Tensor) -> dict[str, tf.Tensor]:
  """``[..., W+1, 4]`` packed windows -> dict of ``[..., W+1]`` per feature (pitch int32)."""
  features = tf.unstack(windows, axis=-1)
  unpacked = dict(zip(constants.NOTE_FEATURES, features, strict=True))
  unpacked['pitch'] = tf.cast(unpacked['pitch'], tf.int32)
  return unpacked


def to_features_and_targets(window: dict[str, tf.Tensor]):
  """[.., W+1] windows -> (inputs: the first W notes, targets: note W+1)."""
  inputs = {name: values[..., :-1] for name, values in window.items()}
  targets = {
      'pitch': window['pitch'][..., -1],
      'step': window['step'][..., -1],
      'duration': window['duration'][..., -1],
      'velocity': window['velocity'][..., -1] / constants.MAX_VELOCITY,
  }
  return inputs, targets
