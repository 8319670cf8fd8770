"""The tf.data input pipeline on a small hand-built dataset with known windows."""

import collections
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from partita import contract
from partita import dataset as dataset_lib
from trainer import config as config_lib
from trainer import data as data_lib

WINDOW = 4
STRIDE = 6


def piece(index, num_notes):
  """Notes whose step is a unique id (index * 100 + note number), so windows are traceable."""
  note = np.arange(num_notes)
  return {
      'pitch': (40 + (note * 7) % 30).astype(np.int64),
      'step': (index * 100 + note).astype(np.float32),
      'duration': np.full(num_notes, 0.5, np.float32),
      'velocity': np.full(num_notes, 60 + index, np.int64),
      # In 3/4 at 0.5 s a quarter, a note on each beat (the steps are ids, not these times).
      'quarter_seconds': np.full(num_notes, 0.5, np.float32),
      'bar_position': (note % 3).astype(np.float32),
      'bar_quarters': np.full(num_notes, 3.0, np.float32),
  }


# Piece i's label: even pieces are Bach's, odd ones Chopin's (ids 2 and 3 in LABELS).
COMPOSERS = ('bach', 'chopin')
LABELS = {'name': 'composer', 'min_pieces': 1, 'vocabulary': ['unknown', 'other', *COMPOSERS],
          'ids': {'unknown': 0, 'bach': 2, 'chopin': 3}, 'pieces': {}}


def label_id(index):
  return 2 + index % 2


def example(chunk, index):
  return contract.serialize_chunk(chunk, COMPOSERS[index % 2])


def expected_windows(pieces):
  """Every stride-1 window of every piece, in order, as tuples of step ids (inputs + target)."""
  return [tuple(p['step'][i:i + WINDOW + 1].astype(int))
          for p in pieces for i in range(len(p['step']) - WINDOW)]


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
  """Train split: two shards of 3 pieces each; validation: one shard of 2 pieces."""
  root = tmp_path_factory.mktemp('data')
  layout = {'train': [[0, 1, 2], [3, 4, 5]], 'validation': [[6, 7]]}
  pieces = {}
  splits = {}
  for split, shards in layout.items():
    os.makedirs(root / split)
    pieces[split] = []
    for shard, indices in enumerate(shards):
      name = root / split / f'{split}-{shard:05d}-of-{len(shards):05d}.tfrecord.gz'
      with tf.io.TFRecordWriter(str(name), 'GZIP') as writer:
        for index in indices:
          notes = piece(index, 17 + 3 * index)
          pieces[split].append(notes)
          for chunk in contract.chunks(notes, WINDOW, STRIDE):
            writer.write(example(chunk, index))
    splits[split] = {'windows': len(expected_windows(pieces[split]))}
  info = {
      'format_version': contract.FORMAT_VERSION, 'window_length': WINDOW, 'stride': STRIDE,
      'compression': 'GZIP', 'splits': splits, 'labels': LABELS,
      'shard_patterns': {split: contract.shard_pattern(split) for split in contract.SPLITS},
  }
  (root / contract.INFO_FILE).write_text(json.dumps(info))
  (root / contract.COMPLETED_MARKER).write_text('')
  return {'dir': str(root), 'info': dataset_lib.load_info(str(root)), 'pieces': pieces}


def window_ids(inputs, targets):
  steps = np.concatenate([inputs['step'].numpy(), targets['step'].numpy()[:, None]], axis=1)
  return [tuple(row) for row in steps.astype(int)]


def test_validation_is_every_window_in_order_with_exact_cardinality(dataset):
  config = config_lib.DataConfig(transpose_semitones=3, tempo_stretch=0.5)
  ds = data_lib.make_dataset(dataset['dir'], dataset['info'], 'validation', config,
                             training=False, batch_size=5)
  expected = expected_windows(dataset['pieces']['validation'])
  assert ds.cardinality().numpy() == -(-len(expected) // 5)
  got = [w for inputs, targets in ds for w in window_ids(inputs, targets)]
  assert got == expected  # no augmentation, no shuffling
  inputs, targets = next(iter(ds))
  assert inputs['pitch'].dtype == tf.int32 and targets['pitch'].dtype == tf.int32
  assert inputs['pitch'].shape == inputs['label'].shape == (5, WINDOW)
  # Every window carries its piece's label id at every note (piece 6 is Bach's); a label is
  # not a target.
  np.testing.assert_array_equal(inputs['label'], np.full((5, WINDOW), label_id(6)))
  assert 'label' not in targets
  np.testing.assert_allclose(targets['velocity'].numpy(), [66 / 127] * 5, rtol=1e-6)


def test_validation_max_windows_takes_every_kth_window(dataset):
  ds = data_lib.make_dataset(dataset['dir'], dataset['info'], 'validation',
                             config_lib.DataConfig(), training=False, batch_size=4,
                             max_windows=10)
  expected = expected_windows(dataset['pieces']['validation'])
  every = -(-len(expected) // 10)
  got = [w for inputs, targets in ds for w in window_ids(inputs, targets)]
  assert got == expected[::every]
  assert ds.cardinality().numpy() == -(-len(got) // 4)


def test_training_epoch_is_every_window_once_shuffled(dataset):
  expected = expected_windows(dataset['pieces']['train'])
  config = config_lib.DataConfig(shuffle_buffer=50)
  ds = data_lib.make_dataset(dataset['dir'], dataset['info'], 'train', config, training=True,
                             batch_size=1)
  got = [w for inputs, targets in ds.take(len(expected)) for w in window_ids(inputs, targets)]
  assert collections.Counter(got) == collections.Counter(expected)
  assert got != expected


def test_training_is_sharded_by_file_per_input_pipeline(dataset):
  train = dataset['pieces']['train']
  config = config_lib.DataConfig(shuffle_buffer=10)
  for pipeline, pieces in ((0, train[:3]), (1, train[3:])):
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline,
                                         num_replicas_in_sync=2)
    ds = data_lib.make_dataset(dataset['dir'], dataset['info'], 'train', config, training=True,
                               batch_size=8, input_context=context)
    inputs, targets = next(iter(ds))
    assert inputs['pitch'].shape == (4, WINDOW)  # the per-replica batch
    expected = expected_windows(pieces)
    got = [w for inputs, targets in ds.take(len(expected) // 4)
           for w in window_ids(inputs, targets)]
    assert set(got) <= set(expected)


@pytest.mark.parametrize('pipelines', [3, 4])
def test_fewer_files_than_input_pipelines_shards_windows(dataset, pipelines):
  """Two training files for 3 or 4 input pipelines: each pipeline gets its own share of windows.

  File sharding would leave a pipeline without data (its worker would stop and the others hang in
  their all-reduce), so every pipeline reads every file in the same order and keeps every n-th
  window. In every pass over the data each pipeline gets its own non-empty share, and the shares
  are disjoint and together every window (each pass reshuffles the files, so the shares change
  from pass to pass).
  """
  expected = expected_windows(dataset['pieces']['train'])
  config = config_lib.DataConfig(shuffle_buffer=10)
  passes = [[], []]
  for pipeline in range(pipelines):
    context = tf.distribute.InputContext(num_input_pipelines=pipelines,
                                         input_pipeline_id=pipeline,
                                         num_replicas_in_sync=pipelines)
    ds = data_lib.make_dataset(dataset['dir'], dataset['info'], 'train', config, training=True,
                               batch_size=pipelines, seed=7, input_context=context)
    share = len(range(pipeline, len(expected), pipelines))  # windows per pass
    got = [w for inputs, targets in ds.take(2 * share) for w in window_ids(inputs, targets)]
    assert len(got) == 2 * share  # one window per batch: the per-replica batch
    passes[0].append(got[:share])
    passes[1].append(got[share:])
  for shares in passes:
    assert all(shares)
    assert collections.Counter(w for share in shares for w in share) == collections.Counter(
        expected)
  assert passes[0] != passes[1]


def test_training_augmentation_per_window(dataset):
  """Each window is shifted and stretched as a whole, by its own draw, within bounds."""
  config = config_lib.DataConfig(shuffle_buffer=10, transpose_semitones=5, tempo_stretch=0.2)
  ds = data_lib.make_dataset(dataset['dir'], dataset['info'], 'train', config, training=True,
                             batch_size=64)
  inputs, targets = next(iter(ds))
  pitch = np.concatenate([inputs['pitch'].numpy(), targets['pitch'].numpy()[:, None]], axis=1)
  step = np.concatenate([inputs['step'].numpy(), targets['step'].numpy()[:, None]], axis=1)
  # Steps are consecutive ids, so in a window stretched by s, step[i+1] - step[i] == s.
  scale = (step[:, -1] - step[:, 0]) / WINDOW
  assert np.all((scale >= 0.8 - 1e-5) & (scale <= 1.2 + 1e-5))
  assert len(np.unique(np.round(scale, 5))) > 10  # one draw per window
  original_step = step / scale[:, None]
  np.testing.assert_allclose(np.diff(original_step, axis=1), 1.0, atol=1e-3)
  start = np.round(original_step[:, 0]).astype(int) % 100
  original_pitch = 40 + ((start[:, None] + np.arange(WINDOW + 1)) * 7) % 30
  shift = pitch - original_pitch
  assert np.all(shift == shift[:, :1])  # the whole window moves together
  assert np.all(np.abs(shift[:, 0]) <= 5)
  assert len(np.unique(shift[:, 0])) > 3
  duration = inputs['duration'].numpy()
  np.testing.assert_allclose(duration, np.broadcast_to(0.5 * scale[:, None], duration.shape),
                             rtol=1e-4)
  # The tempo stretches with the times; the places in the bar stay.
  np.testing.assert_allclose(inputs['quarter_seconds'].numpy(),
                             np.broadcast_to(0.5 * scale[:, None], duration.shape), rtol=1e-4)
  np.testing.assert_array_equal(inputs['bar_position'].numpy(), (start[:, None] + np.arange(
      WINDOW)) % 3)


def test_training_labels_are_each_windows_own_or_dropped_to_the_unconditional_id(dataset):
  """With label_dropout p, each window keeps its piece's label id or has the unconditional id.

  It keeps its piece's label id at every note or, with probability p, has the unconditional id
  at every note instead.
  """
  config = config_lib.DataConfig(shuffle_buffer=10, label_dropout=0.3)
  ds = data_lib.make_dataset(dataset['dir'], dataset['info'], 'train', config, training=True,
                             batch_size=64)
  kept = dropped = 0
  for inputs, _ in ds.take(20):
    label = inputs['label'].numpy()
    assert np.all(label == label[:, :1])  # one label per window
    piece_index = (inputs['step'].numpy()[:, 0] // 100).astype(int)
    own = label[:, 0] == 2 + piece_index % 2
    assert np.all(own | (label[:, 0] == 0))
    kept += own.sum()
    dropped += (~own).sum()
  assert 0.2 < dropped / (kept + dropped) < 0.4  # 1,280 windows at p = 0.3
  without = data_lib.make_dataset(dataset['dir'], dataset['info'], 'train',
                                  config_lib.DataConfig(shuffle_buffer=10, label_dropout=0),
                                  training=True, batch_size=64)
  inputs, _ = next(iter(without))
  assert np.all(inputs['label'].numpy() != 0)


def test_augment_clips_transposition_to_the_piano_range_per_window():
  config = config_lib.DataConfig(transpose_semitones=12, label_dropout=0)
  windows = {
      'pitch': tf.constant([[120, 125, 110], [0, 3, 60], [60, 62, 64]], tf.int32),
      'step': tf.ones([3, 3]), 'duration': tf.ones([3, 3]), 'velocity': tf.ones([3, 3]),
      'label': tf.fill([3, 3], 2),
  }
  for seed in range(20):
    out = data_lib.augment(windows, config, tf.constant([seed, 1], tf.int64))
    shift = (out['pitch'] - windows['pitch']).numpy()
    assert np.all(shift == shift[:, :1])
    assert -12 <= shift[0, 0] <= 2 and 0 <= shift[1, 0] <= 12 and -12 <= shift[2, 0] <= 12
    assert out['pitch'].numpy().min() >= 0 and out['pitch'].numpy().max() <= 127
  # One window (no batch dimension) works too.
  single = data_lib.augment({k: v[2] for k, v in windows.items()}, config,
                            tf.constant([0, 1], tf.int64))
  assert single['pitch'].shape == (3,)


def test_chunk_to_windows_and_unpack_are_exact():
  chunk = {'pitch': tf.constant([0, 127, 5, 9], tf.int32),
           'step': tf.constant([0.1, 0.2, 0.3, 0.4]),
           'duration': tf.constant([1.5, 2.5, 3.5, 4.5]),
           'velocity': tf.constant([1.0, 127.0, 64.0, 2.0]),
           'quarter_seconds': tf.constant([0.5, 0.5, 0.25, 0.25]),
           'bar_position': tf.constant([0.0, 1.5, 2.0, 0.0]),
           'bar_quarters': tf.constant([4.0, 4.0, 3.0, 3.0]), 'label': tf.constant(7, tf.int32)}
  windows = dataset_lib.unpack(dataset_lib.chunk_to_windows(chunk, 2))
  np.testing.assert_array_equal(windows['pitch'], [[0, 127, 5], [127, 5, 9]])
  np.testing.assert_array_equal(windows['label'], [[7, 7, 7], [7, 7, 7]])
  assert windows['pitch'].dtype == windows['label'].dtype == tf.int32
  np.testing.assert_array_equal(windows['step'], np.float32([[0.1, 0.2, 0.3], [0.2, 0.3, 0.4]]))
  np.testing.assert_array_equal(windows['velocity'], [[1, 127, 64], [127, 64, 2]])
  np.testing.assert_array_equal(windows['bar_position'], [[0, 1.5, 2], [1.5, 2, 0]])
  np.testing.assert_array_equal(windows['bar_quarters'], [[4, 4, 3], [4, 3, 3]])
