"""The preprocessing job's TFRecord sink and the runner both Beam jobs ask for."""

from __future__ import annotations

import glob
import gzip
import os

import apache_beam as beam
from apache_beam.options import pipeline_options
from apache_beam.testing import test_pipeline
from isal import isal_zlib
import pytest
import tensorflow as tf

from beam_pipelines import runner, tfrecord_sink

RECORDS = [b'', b'a', bytes(range(256)) * 40, b'last record']


def test_framing_is_byte_for_byte_what_tensorflow_writes(tmp_path):
  path = str(tmp_path / 'tf.tfrecord')
  with tf.io.TFRecordWriter(path) as writer:
    for record in RECORDS:
      writer.write(record)
  with open(path, 'rb') as f:
    assert f.read() == b''.join(map(tfrecord_sink.tfrecord, RECORDS))


def runs_of(records):
  """One run of the first two records, then one run of each other record."""
  return [tfrecord_sink.framed(records[:2])] + [tfrecord_sink.framed([r]) for r in records[2:]]


def write(records, output, compress):
  """Writes ``records`` as runs of the name ``train``; returns the paths of every shard."""
  runs = [('train', run) for run in runs_of(records)]
  with test_pipeline.TestPipeline(runner.LOCAL_RUNNER) as pipeline:
    _ = (pipeline | beam.Create(runs, reshuffle=False)
         | tfrecord_sink.WriteShards(output, ('train',), compress))
  return sorted(glob.glob(os.path.join(output, '*', '*')))


@pytest.mark.parametrize('compress', [True, False])
def test_shards_hold_every_record_for_tensorflow_to_read(tmp_path, compress):
  paths = write(RECORDS, str(tmp_path / 'out'), compress)
  suffix = '.tfrecord.gz' if compress else '.tfrecord'
  assert [os.path.relpath(p, tmp_path / 'out') for p in paths] == [
      f'train/train-00000-of-00001{suffix}']
  read = tf.data.TFRecordDataset(paths, compression_type='GZIP' if compress else '')
  assert sorted(read.as_numpy_iterator()) == sorted(RECORDS)
  # No temporaries: the hidden folder of the write is gone.
  assert os.listdir(tmp_path / 'out') == ['train']
  assert os.listdir(tmp_path / 'out' / 'train') == ['train-00000-of-00001' + suffix]


def test_each_name_gets_its_own_shards_and_a_name_with_no_records_one_empty_shard(tmp_path):
  output = str(tmp_path / 'out')
  sink = tfrecord_sink.ShardsSink(output, ('train', 'test'), tfrecord_sink.GZIP_LEVEL)
  temporary = sink.initialize_write()
  bundles = []
  for uid, runs in (('b1', [('train', b'one'), ('train', b'two')]), ('b2', [('train', b'three')])):
    writer = sink.open_writer(temporary, uid)
    for run in runs:
      writer.write(run)
    bundles.append(writer.close())
  assert bundles[0] == (('train', os.path.join(output, 'train', temporary, 'b1.tfrecord.gz')),)
  shards = sink.finalize_write(temporary, bundles, None)
  assert [os.path.relpath(p, output) for p in shards] == [
      'train/train-00000-of-00002.tfrecord.gz', 'train/train-00001-of-00002.tfrecord.gz',
      'test/test-00000-of-00001.tfrecord.gz']
  contents = []
  for path in shards:
    with open(path, 'rb') as f:
      contents.append(gzip.decompress(f.read()))
  assert contents == [b'onetwo', b'three', b'']
  assert sorted(os.listdir(os.path.join(output, 'train'))) == [
      'train-00000-of-00002.tfrecord.gz', 'train-00001-of-00002.tfrecord.gz']
  # A retry of the end finds its shards in place and leaves them as they are.
  assert sink.finalize_write(temporary, bundles, None) == shards
  with open(shards[1], 'rb') as f:
    assert gzip.decompress(f.read()) == b'three'
  with pytest.raises(ValueError, match="no shards named 'dev'"):
    sink.open_writer(temporary, 'b3').write(('dev', b'x'))


def test_gzip_is_isal_at_the_chosen_level_and_the_same_records_give_the_same_bytes(tmp_path):
  first, = write(RECORDS, str(tmp_path / 'a'), compress=True)
  second, = write(RECORDS, str(tmp_path / 'b'), compress=True)
  with open(first, 'rb') as f:
    data = f.read()
  framed = tfrecord_sink.framed(RECORDS)
  assert framed == b''.join(map(tfrecord_sink.tfrecord, RECORDS))
  assert gzip.decompress(data) == framed
  # The deflate stream (after the 10-byte gzip header) is exactly ISA-L's at GZIP_LEVEL, fed
  # one run of records at a time as the sink writes them.
  deflate = isal_zlib.compressobj(tfrecord_sink.GZIP_LEVEL, isal_zlib.DEFLATED,
                                  -isal_zlib.MAX_WBITS)
  assert data[10:-8] == b''.join(map(deflate.compress, runs_of(RECORDS))) + deflate.flush()
  with open(second, 'rb') as f:
    assert f.read() == data


def test_jobs_run_on_the_fn_api_runner_unless_told_otherwise():
  def runner_of(args):
    return runner.pipeline_options(args).view_as(pipeline_options.StandardOptions).runner

  assert runner_of(None) == runner_of([]) == 'FnApiRunner'
  assert runner_of(['--direct_num_workers=2']) == 'FnApiRunner'
  assert runner_of(['--runner', 'DataflowRunner']) == 'DataflowRunner'
  assert runner_of(['--runner=DirectRunner']) == 'DirectRunner'
