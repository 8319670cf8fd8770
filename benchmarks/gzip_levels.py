r"""Which deflate the preprocessing job's shards are written with: size against CPU.

    .venv/bin/python benchmarks/gzip_levels.py DATASET [--levels 1,2,6] [--isal-levels 0,1,2,3]

Decompresses every ``*.tfrecord.gz`` shard of a dataset folder written by
``beam_pipelines.preprocess`` and compresses the same bytes again at each level of zlib (what
Python's ``gzip`` and Beam's ``WriteToTFRecord`` use) and of ISA-L (the ``isal`` package, what
``beam_pipelines.tfrecord_sink`` uses), one after another in this process: compressed size
(and against zlib's level 6, its default and ``WriteToTFRecord``'s only level), CPU seconds to
compress them all (``time.process_time``) and to decompress the result with zlib, the cost a
training job pays when it reads them.

Why: gzip at level 6 was the largest cost of the job after parsing; the library and level are
a trade of the job's CPU for disk and the trainer's reads, and this is the measurement behind
``tfrecord_sink.GZIP_LEVEL``.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import os
import time
import zlib

from isal import isal_zlib


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
  parser.add_argument('--levels', default='1,2,6', help="zlib's levels")
  parser.add_argument('--isal-levels', default='0,1,2,3', help="ISA-L's levels")
  args = parser.parse_args()
  shards = sorted(glob.glob(os.path.join(args.dataset, '*', '*.tfrecord.gz')))
  if not shards:
    parser.error(f'no *.tfrecord.gz shard under {args.dataset}/*/')
  raw = b''.join(map(read_records, shards))
  print(f'{len(shards)} shards, {len(raw) / 1e6:.1f} MB of TFRecords\n')
  print('| deflate | MB | vs zlib 6 | compress CPU s | compress MB/s | decompress MB/s |')
  print('| --- | ---: | ---: | ---: | ---: | ---: |')
  level6_size = len(zlib.compress(raw, 6))
  runs = ([('zlib', zlib.compress, int(level)) for level in args.levels.split(',') if level]
          + [('ISA-L', isal_zlib.compress, int(level)) for level in args.isal_levels.split(',')
             if level])
  for library, compress, level in runs:
    packed, compress_s = cpu_seconds(compress, raw, level)
    _, decompress_s = cpu_seconds(zlib.decompress, packed)
    print(f'| {library} {level} | {len(packed) / 1e6:.1f} | {len(packed) / level6_size:.2f}x | '
          f'{compress_s:.2f} | {len(raw) / 1e6 / compress_s:.0f} | '
          f'{len(raw) / 1e6 / decompress_s:.0f} |')


if __name__ == '__main__':
  main()
