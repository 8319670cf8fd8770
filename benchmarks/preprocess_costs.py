r"""What each file costs the preprocessing job, step by step, without Beam: the floor of its speed.

    .venv/bin/python benchmarks/preprocess_costs.py [--input /tmp/partita_scale/seed0-5000] \
        [--limit 2000] [--cores 2]

In one process, on the same files in sorted order, the CPU time of each step the job does to
a file (the functions the job calls, in the job's order), then of the pretty_midi loop of
``benchmarks/preprocess_speed.py``:

* **read**: the bytes, and the two digests the job takes of them (info.json's MD5, the
  survivor's BLAKE2b);
* **parse**: :func:`partita.notes.fingerprint_size_and_sketch`, what the isolated parse sends
  back to the dedup and the near-duplicate search, keeping the piece as a local job does
  (:func:`partita.kept_pieces.keep`);
* **load**: :func:`partita.kept_pieces.load`, the writing stage's piece (where a job on
  Dataflow parses again: ``--parse-again`` times that instead);
* **chunks**: :func:`partita.contract.serialized_chunks` in TFRecord framing;
* **gzip**: the framed chunks through ISA-L at the sink's level;
* **statistics**: :func:`beam_pipelines.info.piece_stats`.

Their sum is what one file costs before any runner moves it: on ``--cores`` cores, no runner can
process more than ``cores / sum`` files a second, so "x the loop" of that rate bounds what the
job can reach (``benchmarks/preprocess_scale.py`` measures what it does reach). Rejected files
count their read and parse only, as in the job.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import tempfile
import time

from isal import isal_zlib
import preprocess_speed

from beam_pipelines import info, preprocess, tfrecord_sink
from partita import contract, failures, kept_pieces
from partita import notes as notes_lib

STEPS = ('read', 'parse', 'load', 'chunks', 'gzip', 'statistics')


def step_costs(paths: list[str], config: preprocess.PreprocessConfig, kept_folder: str,
               parse_again: bool = False) -> dict[str, float]:
  """CPU seconds of each of :data:`STEPS` over ``paths``; the pieces are kept in ``kept_folder``.

  With ``parse_again``, the writing stage's piece is parsed again rather than loaded.
  """
  options = config.parse_options()
  seconds = dict.fromkeys(STEPS, 0.0)
  deflate = isal_zlib.compressobj(tfrecord_sink.GZIP_LEVEL, isal_zlib.DEFLATED,
                                  -isal_zlib.MAX_WBITS)
  for path in paths:
    clock = time.process_time()

    def lap(step):
      nonlocal clock
      now = time.process_time()
      seconds[step] += now - clock
      clock = now

    with open(path, 'rb') as f:
      data = f.read()
    hashlib.md5(data).hexdigest()
    digest = preprocess.input_digest(data)
    lap('read')
    try:
      *_, place = notes_lib.fingerprint_size_and_sketch(
          notes_lib.parse_midi, True, data, options,
          keep=functools.partial(kept_pieces.keep, kept_folder, digest))
    except failures.RejectionError:
      lap('parse')
      continue
    lap('parse')
    piece = (notes_lib.parse_midi(data, options) if parse_again
             else kept_pieces.load(kept_folder, place, digest))
    lap('load')
    chunks = contract.serialized_chunks(piece, config.window_length, config.stride, 'unknown')
    framed = tfrecord_sink.framed(chunks)
    lap('chunks')
    deflate.compress(framed)
    lap('gzip')
    info.piece_stats(piece, 1, len(chunks), config.window_length)
    lap('statistics')
  return seconds


def main(argv: list[str] | None = None) -> None:
  """Prints the cost of each step, their sum, the loop's and the floor they set."""
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--input', default='/tmp/partita_scale/seed0-5000',
                      help='folder of MIDI files (benchmarks/make_corpus.py makes one)')
  parser.add_argument('--limit', type=int, default=2000, help='first N files in sorted order')
  parser.add_argument('--cores', type=int, default=2, help='cores the floor is computed for')
  parser.add_argument('--parse-again', action='store_true',
                      help='the writing stage parses each survivor again, as on Dataflow')
  args = parser.parse_args(argv)
  paths = preprocess_speed.list_midi_files(args.input, args.limit)
  config = preprocess.PreprocessConfig(input=(args.input,), output='unused')
  with tempfile.TemporaryDirectory(prefix='preprocess_costs_') as kept_folder:
    seconds = step_costs(paths, config, kept_folder, args.parse_again)
  clock = time.process_time()
  preprocess_speed.run_loop(paths)
  loop_ms = (time.process_time() - clock) / len(paths) * 1e3
  print(f'{len(paths):,} files of {args.input}\n')
  print('| step | CPU ms/file | share |\n| --- | ---: | ---: |')
  total_ms = sum(seconds.values()) / len(paths) * 1e3
  for step in STEPS:
    ms = seconds[step] / len(paths) * 1e3
    name = 'parse again' if step == 'load' and args.parse_again else step
    print(f'| {name} | {ms:.3f} | {ms / total_ms:.0%} |')
  floor = args.cores / total_ms * 1e3
  print(f'| **all steps** | **{total_ms:.3f}** | |\n| pretty_midi loop | {loop_ms:.2f} | |\n')
  print(f'floor on {args.cores} cores: {floor:.0f} files/s, {floor * loop_ms / 1e3:.1f}x the loop '
        f'({1e3 / loop_ms:.1f} files/s on one core)')


if __name__ == '__main__':
  main()
