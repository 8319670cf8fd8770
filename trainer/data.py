"""The training input pipeline: the preprocessed chunks -> batches of windows and targets.

Batches of (window features, next-note targets), sharded per worker, shuffled and augmented on
the fly.

Reading the dataset itself (info.json, shards, chunks, windows) is ``partita.dataset``, the
contract's reader that every stage shares.
"""

from __future__ import annotations

import tensorflow as tf

from partita import constants, contract
from partita import dataset as dataset_lib
from partita import labels as labels_lib
from trainer import config as config_lib


def augment(windows: dict[str, tf.Tensor], config: config_lib.DataConfig,
            seed: tf.Tensor) -> dict[str, tf.Tensor]:
  """Random transposition and tempo stretch of each window, and its label dropped out.

  Its label is replaced by the unconditional id with probability ``label_dropout`` (training
  split only).

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
    shift = tf.clip_by_value(shift, -low, constants.PITCHES - 1 - high)
    windows = dict(windows, pitch=windows['pitch'] + shift[..., tf.newaxis])
  if config.tempo_stretch:
    scale = tf.random.stateless_uniform(shape, seed + 1, 1.0 - config.tempo_stretch,
                                        1.0 + config.tempo_stretch)[..., tf.newaxis]
    # The tempo stretches with the times, so the notes keep their places in the bar.
    windows = dict(windows, step=windows['step'] * scale, duration=windows['duration'] * scale,
                   quarter_seconds=windows['quarter_seconds'] * scale)
  if config.label_dropout:
    # So that the one model also generates with no label: see partita.labels.
    dropped = tf.random.stateless_uniform(shape, seed + 2) < config.label_dropout
    label = windows[contract.LABEL_FEATURE]
    windows = {**windows, contract.LABEL_FEATURE: tf.where(
        dropped[..., tf.newaxis], tf.constant(labels_lib.UNCONDITIONAL_ID, label.dtype), label)}
  return windows


def make_dataset(data_dir: str, info: dict, split: str, config: config_lib.DataConfig,
                 training: bool, batch_size: int, seed: int = 0, max_windows: int | None = None,
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
  files = dataset_lib.shard_files(data_dir, info, split)
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
  label_ids = dataset_lib.label_table(info['labels'])
  dataset = dataset.map(
      lambda record: dataset_lib.chunk_to_windows(dataset_lib.parse_chunk(record, label_ids),
                                                  window_length),
      num_parallel_calls=tf.data.AUTOTUNE)
  dataset = dataset.unbatch()  # chunks -> single windows, in order
  if shard_windows:
    dataset = dataset.shard(pipelines, pipeline_id)
  if not training:
    # The window count is known from info.json; asserting it makes shards that disagree with
    # their info.json fail at the end of the split instead of scoring a different set.
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
  return _to_batches(dataset, config, training, batch_size, seed).prefetch(tf.data.AUTOTUNE)


def _to_batches(windows: tf.data.Dataset, config: config_lib.DataConfig, training: bool,
                batch_size: int, seed: int) -> tf.data.Dataset:
  """Packed windows -> batches of (inputs, targets), augmented when training asks for it."""
  batches = windows.batch(batch_size, drop_remainder=training)
  if training and (config.transpose_semitones or config.tempo_stretch or config.label_dropout):
    # Augmented per window but after batching: one vectorised op per batch (see augment).
    seeds = tf.data.Dataset.random(seed=seed).batch(2)
    return tf.data.Dataset.zip(batches, seeds).map(
        lambda packed, pair: dataset_lib.to_features_and_targets(
            augment(dataset_lib.unpack(packed), config, pair)),
        num_parallel_calls=tf.data.AUTOTUNE)
  return batches.map(
      lambda packed: dataset_lib.to_features_and_targets(dataset_lib.unpack(packed)),
      num_parallel_calls=tf.data.AUTOTUNE)
