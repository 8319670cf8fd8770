"""tf.data input: the preprocessed chunks -> batches of (window features, next-note targets).

Reads ``info.json`` (the contract written by ``beam_pipelines.preprocess``) instead of repeating
its constants: window length, compression, shard patterns and timing statistics come from it.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from partita import contract
from trainer.config import DataConfig

PITCHES = 128
MAX_VELOCITY = 127.0


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


def chunk_to_windows(chunk: dict[str, tf.Tensor], window_length: int) -> tf.data.Dataset:
  """Every ``window_length + 1`` consecutive notes of a chunk, at stride 1."""
  frames = {name: tf.signal.frame(values, window_length + 1, 1, axis=0)
            for name, values in chunk.items()}
  return tf.data.Dataset.from_tensor_slices(frames)


def augment(window: dict[str, tf.Tensor], config: DataConfig,
            seed: tf.Tensor) -> dict[str, tf.Tensor]:
  """Random transposition and tempo stretch of one window (training split only).

  A transposition that would push any note outside 0..127 is replaced by the largest
  in-range shift in the same direction, so no note is clipped into a wrong pitch.
  """
  if config.transpose_semitones:
    shift = tf.random.stateless_uniform([], seed, -config.transpose_semitones,
                                        config.transpose_semitones + 1, dtype=tf.int32)
    low, high = tf.reduce_min(window['pitch']), tf.reduce_max(window['pitch'])
    shift = tf.clip_by_value(shift, -low, PITCHES - 1 - high)
    window = dict(window, pitch=window['pitch'] + shift)
  if config.tempo_stretch:
    scale = tf.random.stateless_uniform([], seed + 1, 1.0 - config.tempo_stretch,
                                        1.0 + config.tempo_stretch)
    window = dict(window, step=window['step'] * scale, duration=window['duration'] * scale)
  return window


def to_features_and_targets(window: dict[str, tf.Tensor]):
  """[.., W+1] windows -> (inputs: the first W notes, targets: note W+1)."""
  inputs = {name: values[..., :-1] for name, values in window.items()}
  targets = {
      'pitch': window['pitch'][..., -1],
      'step': window['step'][..., -1],
      'duration': window['duration'][..., -1],
      'velocity': window['velocity'][..., -1] / MAX_VELOCITY,
  }
  return inputs, targets


def make_dataset(data_dir: str, info: dict, split: str, config: DataConfig, training: bool,
                 batch_size: int, seed: int = 0, max_windows: int | None = None,
                 input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
  """Batches of (inputs, targets) from one split.

  Training data is file-sharded per input pipeline (one per worker), interleaved, shuffled,
  augmented, repeated forever and batched per replica; evaluation data is read in file order,
  once, with no augmentation, so every evaluation sees the same windows. ``max_windows`` limits
  evaluation to every k-th window, so a quick evaluation still covers every piece of the split.
  """
  files = shard_files(data_dir, info, split)
  dataset = tf.data.Dataset.from_tensor_slices(files)
  if input_context and input_context.num_input_pipelines > 1:
    dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
  if training:
    dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
  compression = info['compression'] or None
  dataset = dataset.interleave(
      lambda path: tf.data.TFRecordDataset(path, compression_type=compression),
      cycle_length=min(len(files), 8), num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=not training)
  dataset = dataset.map(parse_chunk, num_parallel_calls=tf.data.AUTOTUNE)
  window_length = info['window_length']
  dataset = dataset.flat_map(lambda chunk: chunk_to_windows(chunk, window_length))
  if not training:
    # Keras averages evaluation metrics over the batches it counts; on a dataset of unknown
    # length it counts one empty batch too. The window count is known from info.json.
    windows = info['splits'][split]['windows']
    if max_windows:
      every = -(-windows // max_windows)
      dataset = dataset.shard(every, 0)
      windows = -(-windows // every)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(windows))
  if training:
    dataset = dataset.shuffle(config.shuffle_buffer, seed=seed).repeat()
    if config.transpose_semitones or config.tempo_stretch:
      seeds = tf.data.Dataset.random(seed=seed).batch(2)
      dataset = tf.data.Dataset.zip(dataset, seeds).map(
          lambda window, pair: augment(window, config, pair),
          num_parallel_calls=tf.data.AUTOTUNE)
  if input_context:
    batch_size = input_context.get_per_replica_batch_size(batch_size)
  dataset = dataset.batch(batch_size, drop_remainder=training)
  dataset = dataset.map(to_features_and_targets, num_parallel_calls=tf.data.AUTOTUNE)
  return dataset.prefetch(tf.data.AUTOTUNE)
