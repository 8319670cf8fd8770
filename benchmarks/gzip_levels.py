r"""Which gzip level the preprocessing job's shards are written at: size against CPU.

    .venv/bin/python benchmarks/gzip_levels.py DATASET [--levels 1,2,3,4,5,6]

Decompresses every ``*.tfrecord.gz`` shard of a dataset folder written by
``beam_pipelines.preprocess`` and gzips the same bytes again at each level (zlib, as
``beam_pipelines.tfrecord_sink`` does through ``gzip``), one level after another in this
process: compressed size (and against level 6, zlib's default and Beam's ``WriteToTFRecord``'s
only level), CPU seconds to compress them all (``time.process_time``) and to decompress the
result, the cost a training job pays when it reads them.

Why: gzip at level 6 was the largest cost of the job after parsing; the level is a trade of
the job's CPU for disk and the trainer's reads, and this is the measurement behind
``tfrecord_sink.GZIP_LEVEL``.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import os
import time
import zlib


def cpu_seconds(function, *args):
  """``function(*args)`` and the process CPU seconds it took."""
  start = time.process_time()
  result = function(*args)
  return result, time.process_time() - start


def read_records(path: str) -> bytes:
  """The uncompressed bytes of the gzipped TFRecord file at ``path``."""
  with gzip.open(path, 'rb') as f:
    return f.read()


def main() -> None:
  """Compresses the dataset's records at each level; prints size and speed as a Markdown table."""
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('dataset', help='a folder written by beam_pipelines.preprocess')
  parser.add_argument('--levels', default='1,2,3,4,5,6')
  args = parser.parse_args()
  shards = sorted(glob.glob(os.path.join(args.dataset, '*', '*.tfrecord.gz')))
  if not shards:
    parser.error(f'no *.tfrecord.gz shard under {args.dataset}/*/')
  raw = b''.join(map(read_records, shards))
  print(f'{len(shards)} shards, {len(raw) / 1e6:.1f} MB of TFRecords\n')
  print('| level | MB | vs level 6 | compress CPU s | compress MB/s | decompress MB/s |')
  print('| ---: | ---: | ---: | ---: | ---: | ---: |')
  level6_size = len(zlib.compress(raw, 6))
  for level in map(int, args.levels.split(',')):
    packed, compress_s = cpu_seconds(zlib.compress, raw, level)
    _, decompress_s = cpu_seconds(zlib.decompress, packed)
    print(f'| {level} | {len(packed) / 1e6:.1f} | {len(packed) / level6_size:.2f}x | '
          f'{compress_s:.2f} | {len(raw) / 1e6 / compress_s:.0f} | '
          f'{len(raw) / 1e6 / decompress_s:.0f} |')


if __name__ == '__main__':
  main()
