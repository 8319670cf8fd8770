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
# Order of the features in packed windows (see chunk_to_windows).
FEATURES = ('pitch', 'step', 'duration', 'velocity')


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

  Returns one float32 tensor ``[windows, window_length + 1, len(FEATURES)]``: pitch and
  velocity are small integers, exact in float32, and one tensor per window instead of four
  makes shuffling and batching single windows (the costly part of the pipeline) twice as fast.
  :func:`unpack` turns batches back into named features.
  """
  notes = tf.stack([tf.cast(chunk[name], tf.float32) for name in FEATURES], axis=-1)
  return tf.signal.frame(notes, window_length + 1, 1, axis=0)


def unpack(windows: tf.Tensor) -> dict[str, tf.Tensor]:
  """``[..., W+1, len(FEATURES)]`` packed windows -> dict of ``[..., W+1]`` (pitch int32)."""
  features = tf.unstack(windows, axis=-1)
  unpacked = dict(zip(FEATURES, features))
  unpacked['pitch'] = tf.cast(unpacked['pitch'], tf.int32)
  return unpacked


def augment(windows: dict[str, tf.Tensor], config: DataConfig,
            seed: tf.Tensor) -> dict[str, tf.Tensor]:
  """Random transposition and tempo stretch of each window (training split only).

  Works on one window (``[W+1]`` values) or a batch of them (``[B, W+1]``); every window of a
  batch draws its own shift and scale, so augmenting after batching is one vectorised op per
  batch instead of a map over single windows, with the same distribution per window. A
  transposition that would push any note of a window outside 0..127 is replaced by the largest
  in-range shift in the same direction, so no note is clipped into a wrong pitch.
  """
  shape = tf.shape(windows['pitch'])[:-1]  # [] for one window, [B] for a batch
  if config.transpose_semitones:
    shift = tf.random.stateless_uniform(shape, seed, -config.transpose_semitones,
                                        config.transpose_semitones + 1, dtype=tf.int32)
    low = tf.reduce_min(windows['pitch'], axis=-1)
    high = tf.reduce_max(windows['pitch'], axis=-1)
    shift = tf.clip_by_value(shift, -low, PITCHES - 1 - high)
    windows = dict(windows, pitch=windows['pitch'] + shift[..., tf.newaxis])
  if config.tempo_stretch:
    scale = tf.random.stateless_uniform(shape, seed + 1, 1.0 - config.tempo_stretch,
                                        1.0 + config.tempo_stretch)[..., tf.newaxis]
    windows = dict(windows, step=windows['step'] * scale,
                   duration=windows['duration'] * scale)
  return windows


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

  Training data is sharded per input pipeline (one per worker), interleaved, shuffled window by
  window, repeated forever, batched per replica and augmented (each window its own draw,
  computed a batch at a time); evaluation data is read in file order, once, with no
  augmentation, so every evaluation sees the same windows. ``max_windows`` limits evaluation to
  every k-th window, so a quick evaluation still covers every piece of the split.

  Each input pipeline reads its own files when there are at least as many files as pipelines.
  With fewer, some pipeline would have no file, so no data, and its worker would stop while
  the others wait for it in their gradient all-reduce (a hang); then every pipeline reads every
  file, in the same order (same seed, deterministic interleave), and keeps every n-th window.
  """
  files = shard_files(data_dir, info, split)
  pipelines = input_context.num_input_pipelines if input_context else 1
  pipeline_id = input_context.input_pipeline_id if input_context else 0
  shard_windows = len(files) < pipelines
  dataset = tf.data.Dataset.from_tensor_slices(files)
  if pipelines > 1 and not shard_windows:
    dataset = dataset.shard(pipelines, pipeline_id)
  if training:
    dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
  compression = info['compression'] or None
  dataset = dataset.interleave(
      lambda path: tf.data.TFRecordDataset(path, compression_type=compression),
      cycle_length=min(len(files), 8), num_parallel_calls=tf.data.AUTOTUNE,
      # Sharding windows needs every pipeline to see them in the same order.
      deterministic=not training or shard_windows)
  window_length = info['window_length']
  dataset = dataset.map(lambda record: chunk_to_windows(parse_chunk(record), window_length),
                        num_parallel_calls=tf.data.AUTOTUNE)
  dataset = dataset.unbatch()  # chunks -> single windows, in order
  if shard_windows:
    dataset = dataset.shard(pipelines, pipeline_id)
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
  if input_context:
    batch_size = input_context.get_per_replica_batch_size(batch_size)
  dataset = dataset.batch(batch_size, drop_remainder=training)
  if training and (config.transpose_semitones or config.tempo_stretch):
    # Augmented per window but after batching: one vectorised op per batch (see augment).
    seeds = tf.data.Dataset.random(seed=seed).batch(2)
    dataset = tf.data.Dataset.zip(dataset, seeds).map(
        lambda windows, pair: to_features_and_targets(augment(unpack(windows), config, pair)),
        num_parallel_calls=tf.data.AUTOTUNE)
  else:
    dataset = dataset.map(lambda windows: to_features_and_targets(unpack(windows)),
                          num_parallel_calls=tf.data.AUTOTUNE)
  return dataset.prefetch(tf.data.AUTOTUNE)
