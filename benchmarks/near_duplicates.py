r"""Near-duplicates: the sketch's cost, the job's speed with and without it, and what it leaks.

    python benchmarks/near_duplicates.py sketch --input FOLDER [--limit N]
    python benchmarks/near_duplicates.py speed --input FOLDER [--repeats 1] [-- PREPROCESS FLAGS]
    python benchmarks/near_duplicates.py leakage --data DATA_DIR [--data DATA_DIR ...]

* ``sketch``: per piece of FOLDER (parsed once, outside the timing), the milliseconds of
  ``partita.near_duplicates.sketch`` (numpy one-permutation MinHash), against datasketch's
  ``MinHash(num_perm=128).update_batch`` on the same shingles (the shingles' bytes; only its
  hashing is timed, the shingles are given), if datasketch can be imported; and the parse's own
  milliseconds, for scale.
* ``speed``: ``python -m beam_pipelines.preprocess`` on FOLDER with ``--near-duplicates off``
  then ``same-split`` (alternating, ``--repeats`` times), each a fresh process into a temporary
  output: wall seconds, CPU seconds of the process tree, files/s, and the ratio.
* ``leakage``: for each preprocessed dataset, the share of its test chunks holding a run of at
  least 32 (and 64) consecutive pitches that occurs in its training split, compared by
  intervals as the originality guard compares them (``partita.originality``: a transposed run
  counts), on tables of every run of exactly 32 (64) pitches of the training chunks; and the
  same share counting only runs of more than :data:`STOCK_INTERVALS` distinct intervals, since
  stock figures (``[12, -11] * 16``, a repeated note) recur across unrelated pieces.
* ``every-piece``: the same shares without a split draw, so that no luck of which pieces land
  in test sways them: every chunk of every distinct piece of FOLDER (as the job cuts them),
  counted when it holds such a run found in a piece of another group; groups are the pieces
  alone (``off``), then the families that the job's own functions find (in this process).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from beam_pipelines import preprocess
from partita import contract, near_duplicates, notes, originality

RUN_LENGTHS = (32, 64)
# A run of at most this many distinct intervals is a stock figure (a repeated note, a tremolo,
# an Alberti bass, a broken-chord pattern), which unrelated pieces share.
STOCK_INTERVALS = 4


def midi_files(folder: str, limit: int) -> list[str]:
  """The MIDI files under ``folder`` in sorted order, the first ``limit`` if given."""
  paths = sorted(p for p in glob.glob(os.path.join(folder, '**', '*'), recursive=True)
                 if p.lower().endswith(('.mid', '.midi')))
  return paths[:limit] if limit else paths


def sketch_costs(args) -> None:
  """Prints the parse's and the two sketches' milliseconds per piece."""
  try:
    import datasketch
  except ImportError:
    datasketch = None
  parse_ms, numpy_ms, datasketch_ms, shingle_counts = [], [], [], []
  for path in midi_files(args.input, args.limit):
    with open(path, 'rb') as f:
      data = f.read()
    start = time.perf_counter()
    try:
      piece = notes.parse_midi(data)
    except Exception:  # noqa: BLE001 (a rejected file has no sketch to time)
      continue
    parse_ms.append((time.perf_counter() - start) * 1000)
    start = time.perf_counter()
    near_duplicates.sketch(piece)
    numpy_ms.append((time.perf_counter() - start) * 1000)
    onset, pitch, end = near_duplicates.onset_tops(piece['pitch'], piece['step'],
                                                   piece['duration'])
    shingles = [window.tobytes()
                for line in ((onset, pitch), near_duplicates.top_line(onset, pitch, end))
                for window in np.lib.stride_tricks.sliding_window_view(
                    near_duplicates.tokens(*line), near_duplicates.SHINGLE_TOKENS)]
    shingle_counts.append(len(shingles))
    if datasketch:
      start = time.perf_counter()
      sketch = datasketch.MinHash(num_perm=near_duplicates.BINS)
      sketch.update_batch(shingles)
      datasketch_ms.append((time.perf_counter() - start) * 1000)
  print(f'{len(parse_ms)} pieces, median {np.median(shingle_counts):.0f} shingles')
  for name, times in (('parse (symusic)', parse_ms), ('sketch, numpy OPH', numpy_ms),
                      ('datasketch MinHash', datasketch_ms)):
    if times:
      print(f'{name:<22} total {sum(times):8.1f} ms   mean {np.mean(times):.3f} ms/piece')


def timed_run(folder: str, mode: str, extra: list[str]) -> dict:
  """One preprocessing run in a fresh process: its wall and CPU seconds and files/s."""
  with tempfile.TemporaryDirectory() as output:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, '-m', 'beam_pipelines.preprocess', '--input', folder,
                    '--output', output, '--near-duplicates', mode, *extra], check=True,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(os.path.join(output, 'info.json')) as f:
      files = json.load(f)['counts']['files_in']
  cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
  return {'mode': mode, 'wall': wall, 'cpu': cpu, 'files': files, 'files_per_s': files / wall}


def speed(args) -> None:
  """Prints each run's speed and same-split's ratio to off."""
  runs = [timed_run(args.input, mode, args.preprocess_flags)
          for _ in range(args.repeats) for mode in ('off', 'same-split')]
  for run in runs:
    print(f"{run['mode']:<11} {run['files']} files  wall {run['wall']:6.1f} s  "
          f"cpu {run['cpu']:6.1f} s  {run['files_per_s']:6.1f} files/s")
  for key in ('wall', 'cpu'):
    off = np.median([r[key] for r in runs if r['mode'] == 'off'])
    searched = np.median([r[key] for r in runs if r['mode'] == 'same-split'])
    print(f'same-split / off, {key}: {searched / off:.3f}')


def varied_runs_found(pitches: np.ndarray, table: originality.RunTable) -> bool:
  """Whether a run of ``pitches`` of more than STOCK_INTERVALS distinct intervals is in table."""
  found = np.flatnonzero(originality.copied_runs(pitches, table))
  return any(len(np.unique(np.diff(pitches[i:i + table.run_length]))) > STOCK_INTERVALS
             for i in found)


def leakage(args) -> None:
  """Prints each dataset's share of test chunks with a long run found in train."""
  from partita import dataset  # imports TensorFlow: only here, the others need none

  for data in args.data:
    info = dataset.load_info(data)
    pitches = {split: [chunk['pitch'].astype(np.int64) for chunk in dataset.read_chunks(
        data, info, split, info['labels'])] for split in ('train', 'test')}
    shares = []
    for run_length in RUN_LENGTHS:
      table = originality.build_table(pitches['train'], limit=run_length - 1)
      found = [originality.copied_runs(chunk, table).any() for chunk in pitches['test']]
      varied = [varied_runs_found(chunk, table) for chunk in pitches['test']]
      shares.append(f'>= {run_length}: {np.mean(found):.1%} ({np.mean(varied):.1%} without '
                    f'stock figures)')
    mode = info['options'].get('near_duplicates', 'off (before the option)')
    print(f"{data} ({mode}; {len(pitches['test'])} test chunks): {'; '.join(shares)}")


def dedup_key(fingerprint: str) -> bytes:
  """The job's dedup key of a content fingerprint."""
  return bytes.fromhex(fingerprint)[:preprocess.FINGERPRINT_BYTES]


def families_in_process(pieces: dict[str, dict]) -> dict[str, bytes]:
  """Each piece's family id as the job finds it (``partita.near_duplicates.find_families``)."""
  fingerprints = {name: dedup_key(notes.content_fingerprint(piece))
                  for name, piece in pieces.items()}
  sketches = {name: near_duplicates.sketch(piece) for name, piece in pieces.items()}
  sketched = [name for name in pieces if sketches[name]]
  found = near_duplicates.find_families(near_duplicates.SketchTable(
      [fingerprints[name] for name in sketched], sketched,
      np.array([len(pieces[name]['pitch']) for name in sketched]),
      np.array([sketches[name].shingles for name in sketched]),
      np.stack([np.frombuffer(sketches[name].minhash, '<u2') for name in sketched])))
  return {name: found.members[fingerprints[name]].family if fingerprints[name] in found.members
          else fingerprints[name] for name in pieces}


def leaking_chunks(pieces: dict[str, dict], family: dict[str, bytes], run_length: int,
                   window_length: int, stride: int) -> tuple[float, float]:
  """Shares of chunks with a run of ``run_length`` found in a piece of another family.

  Chunks as the job cuts them; the second share counts only runs that are no stock figure.
  """
  runs = {name: originality.run_hashes(piece['pitch'], run_length)
          for name, piece in pieces.items()}
  family_index = {f: i for i, f in enumerate(sorted(set(family.values())))}
  pairs = np.unique(np.stack([np.concatenate(list(runs.values())), np.concatenate(
      [np.full(len(runs[name]), family_index[family[name]], np.uint64) for name in runs])], 1),
                    axis=0)
  hashes, families = np.unique(pairs[:, 0], return_counts=True)
  shared = hashes[families > 1]
  found, varied = [], []
  for name, piece in pieces.items():
    pitches = piece['pitch'].astype(np.int64)
    in_other = np.isin(runs[name], shared)
    for start, end in contract.chunk_bounds(len(pitches), window_length, stride):
      starts = np.flatnonzero(in_other[start:end - run_length + 1]) + start
      found.append(len(starts) > 0)
      varied.append(any(len(np.unique(np.diff(pitches[i:i + run_length]))) > STOCK_INTERVALS
                        for i in starts))
  return float(np.mean(found)), float(np.mean(varied))


def every_piece(args) -> None:
  """Prints the split-independent leak of a corpus, pieces alone and in families."""
  pieces = {}
  for path in midi_files(args.input, 0):
    with open(path, 'rb') as f:
      data = f.read()
    try:
      pieces[path] = notes.parse_midi(data, notes.ParseOptions(min_notes=args.window_length + 1))
    except Exception:  # noqa: BLE001 (the job's dead letters)
      continue
  distinct = {}
  for path in sorted(pieces):
    distinct.setdefault(notes.content_fingerprint(pieces[path]), path)
  pieces = {path: pieces[path] for path in distinct.values()}
  alone = {path: dedup_key(fingerprint) for fingerprint, path in distinct.items()}
  for label, family in (('off', alone), ('families', families_in_process(pieces))):
    shares = [leaking_chunks(pieces, family, run_length, args.window_length, args.stride)
              for run_length in RUN_LENGTHS]
    print(f'{args.input} {label} ({len(pieces)} pieces, {len(set(family.values()))} groups): ' +
          '; '.join(f'>= {n}: {a:.1%} ({b:.1%} without stock figures)'
                    for n, (a, b) in zip(RUN_LENGTHS, shares)))


def main() -> None:
  """The command line."""
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  commands = parser.add_subparsers(dest='command', required=True)
  sketch = commands.add_parser('sketch')
  sketch.add_argument('--input', required=True)
  sketch.add_argument('--limit', type=int, default=0)
  speed_parser = commands.add_parser('speed')
  speed_parser.add_argument('--input', required=True)
  speed_parser.add_argument('--repeats', type=int, default=1)
  speed_parser.add_argument('preprocess_flags', nargs='*')
  leak = commands.add_parser('leakage')
  leak.add_argument('--data', action='append', required=True)
  pieces = commands.add_parser('every-piece')
  pieces.add_argument('--input', required=True)
  pieces.add_argument('--window-length', type=int, default=64)
  pieces.add_argument('--stride', type=int, default=192)
  args = parser.parse_args()
  {'sketch': sketch_costs, 'speed': speed, 'leakage': leakage,
   'every-piece': every_piece}[args.command](args)


if __name__ == '__main__':
  main()
