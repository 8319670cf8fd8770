r"""Preprocessing speed: the whole Beam job against a plain pretty_midi loop, same files, same run.

    .venv/bin/python benchmarks/preprocess_speed.py [--input FOLDER] [--limit N] \
        [--modes in_memory,multi_processing] [--workers 2] [--skip-loop]

What is measured, per side, each in its own fresh Python subprocess (so imports, start-up and
every child process the side spawns are counted, and one side's memory cannot hide the other's):

* **loop**: the obvious notebook approach. ``pretty_midi.PrettyMIDI(path)`` on each file in
  sorted order, collect the notes of non-drum instruments, count them; a file that raises is a
  reject. That process never imports note_seq, which would disable pretty_midi's MAX_TICK guard.
* **beam (MODE)**: ``beam_pipelines.preprocess.run(PreprocessConfig(input, output=tmp), args)``
  on Beam's local runner with the default options, i.e. the complete job (match, read, parse,
  dedup, split, chunk, TFRecord and dead-letter writing, info.json), for each
  ``--direct_running_mode`` asked for.

Figures per side: wall seconds from subprocess start to exit (interpreter and imports
included), CPU seconds (user + system of the side and all its children; steadier than wall
time when other work shares the cores), files/s (files in / wall), notes/s (loop: notes
parsed; beam: notes written after dedup and rejection, from info.json), peak memory as the
largest sum of RSS over the process tree (sampled every 0.1 s with psutil, if installed; shared
pages count once per process) and the largest single process (``ru_maxrss`` of the side and its
children), rejected files (loop: exceptions; beam: dead letters) and the 1-minute load average
when the side started and ended. The machine may be shared, so the load is printed with the figures:
read the ratios (loop / side, by wall and by CPU time), not the absolute rates.

Why: parsing in a Python loop, not the cluster, is what makes MIDI preprocessing slow
(../shared/DESIGN.md); the job is meant to be at least 10x faster in files/s than that loop on
the same 2 cores. ``--limit N`` takes the first N files in sorted order for both sides (the Beam
side reads them through a temporary folder of symlinks) for quick iteration.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

try:
  import psutil
except ImportError:  # not a declared dependency: without it only the largest process is known
  psutil = None

from partita import atomic

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_INPUT = os.path.normpath(os.path.join(REPO_ROOT, '..', 'shared', 'corpora',
                                              'classical-midi'))
MIDI_SUFFIXES = ('.mid', '.midi')
# Not 'multi_threading': on Beam 2.77 with this job it failed with "Invalid PaneInfoEncoding" in
# one run and grew to 23 GB (killed by the kernel) in the next, on the full corpus.
MODES = ('in_memory', 'multi_processing')
SAMPLE_SECONDS = 0.1
LOOP_LABEL = 'loop (pretty_midi)'


def list_midi_files(folder: str, limit: int | None) -> list[str]:
  """The .mid/.midi files under ``folder`` (recursive, any case), sorted, first ``limit``."""
  paths = []
  for root, _, names in os.walk(folder):
    paths.extend(os.path.join(root, n) for n in names if n.lower().endswith(MIDI_SUFFIXES))
  paths.sort()
  return paths[:limit] if limit else paths


def own_usage() -> dict:
  """CPU seconds and largest RSS of this process and every child it has waited for."""
  usages = [resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)]
  return {'cpu': sum(u.ru_utime + u.ru_stime for u in usages),
          'max_single_rss': 1024 * max(u.ru_maxrss for u in usages)}  # Linux reports KiB


# --- the two sides, each run in a subprocess -----------------------------------------------------


def run_loop(files: list[str]) -> dict:
  """The notebook baseline: pretty_midi in a Python loop, one file at a time."""
  import pretty_midi
  assert 'note_seq' not in sys.modules, 'note_seq would disable the MAX_TICK guard'
  notes, accepted, rejected = 0, 0, 0
  for path in files:
    try:
      midi = pretty_midi.PrettyMIDI(path)
      piece = [n for inst in midi.instruments if not inst.is_drum for n in inst.notes]
    except Exception:  # pretty_midi raises many kinds on bad files; a loop would count them all
      rejected += 1
      continue
    notes += len(piece)
    accepted += 1
  return {'files': len(files), 'accepted': accepted, 'rejected': rejected, 'notes': notes}


def run_beam(input_spec: str, mode: str, workers: int) -> dict:
  """The whole preprocessing job on Beam's local runner in ``mode``."""
  from beam_pipelines import preprocess
  args = [f'--direct_running_mode={mode}']
  if mode != 'in_memory':
    args.append(f'--direct_num_workers={workers}')
  with tempfile.TemporaryDirectory(prefix='preprocess_speed_') as output:
    info = preprocess.run(preprocess.PreprocessConfig(input=input_spec, output=output), args)
  counts = info['counts']
  return {'files': counts['files_in'], 'accepted': counts['pieces_written'] + counts['duplicates'],
          'rejected': counts['dead_letters'], 'reasons': counts['dead_letter_reasons'],
          'duplicates': counts['duplicates'],
          'notes': sum(s['notes'] for s in info['splits'].values()), 'args': args}


def child_main(args: argparse.Namespace) -> None:
  """What a measured subprocess runs: one side, its result written as JSON."""
  if args.side == 'loop':
    with open(args.files_from) as f:
      result = run_loop(f.read().split('\n'))
  else:
    result = run_beam(args.input, args.mode, args.workers)
  result.update(own_usage())
  atomic.write_bytes(args.result_json, json.dumps(result).encode())


# --- the driver ----------------------------------------------------------------------------------


def measure(label: str, child_args: list[str], script: str = __file__) -> dict | None:
  """Runs ``script`` (this one by default) as ``child_args`` in a subprocess.

  Measures wall time, memory and load around it.

  Returns None (after printing the end of the side's log) if the side fails, so that one
  failing runner mode does not lose the others' figures.
  """
  with tempfile.NamedTemporaryFile(suffix='.json') as result_file, \
       tempfile.TemporaryFile('w+') as log:
    command = [sys.executable, os.path.abspath(script), *child_args,
               '--result-json', result_file.name]
    load_start = os.getloadavg()[0]
    start = time.perf_counter()
    # Beam and TensorFlow log a lot at start-up: kept aside, shown only if the side fails.
    popen = psutil.Popen if psutil else subprocess.Popen
    child = popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    peak_tree = 0 if psutil else None
    while child.poll() is None:
      if psutil:
        try:
          processes = [child, *child.children(recursive=True)]
          peak_tree = max(peak_tree, sum(p.memory_info().rss for p in processes))
        except psutil.NoSuchProcess:  # a process ended between listing and reading it
          pass
      time.sleep(SAMPLE_SECONDS)
    wall = time.perf_counter() - start
    if child.returncode:
      log.seek(0)
      print(f'{log.read()[-5000:]}\n{label}: FAILED with status {child.returncode}',
            file=sys.stderr)
      return None
    with open(result_file.name) as f:
      result = json.load(f)
  result.update(label=label, wall=wall, peak_tree_rss=peak_tree, load_start=load_start,
                load_end=os.getloadavg()[0])
  print(f'{label}: {wall:.1f} s, {result["files"] / wall:.1f} files/s, '
        f'{result["cpu"]:.1f} CPU s', file=sys.stderr)
  return result


def markdown_table(results: list[dict], baseline: dict | None) -> str:
  """The results as a Markdown table, each side against the loop's ``baseline`` if there is one."""
  mib = 2**20
  lines = ['| side | wall s | files/s | notes/s | CPU s | peak RSS, tree sum (MiB) | '
           'largest process (MiB) | files | notes | rejected | load 1m start/end | '
           'files/s vs loop | CPU s vs loop |',
           '| --- |' + ' ---: |' * 9 + ' --- | ---: | ---: |']
  for r in results:
    ratio = f'{baseline["wall"] / r["wall"]:.1f}x' if baseline else 'n/a'
    cpu_ratio = f'{baseline["cpu"] / r["cpu"]:.1f}x' if baseline else 'n/a'
    tree = 'n/a' if r['peak_tree_rss'] is None else f'{r["peak_tree_rss"] / mib:,.0f}'
    lines.append(
        f'| {r["label"]} | {r["wall"]:.1f} | {r["files"] / r["wall"]:.1f} | '
        f'{r["notes"] / r["wall"]:,.0f} | {r["cpu"]:.1f} | {tree} | '
        f'{r["max_single_rss"] / mib:,.0f} | {r["files"]:,} | {r["notes"]:,} | '
        f'{r["rejected"]} | {r["load_start"]:.2f} / {r["load_end"]:.2f} | {ratio} | '
        f'{cpu_ratio} |')
  return '\n'.join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
  """The command's flags, and the internal ones a measured subprocess gets."""
  parser = argparse.ArgumentParser(
      description=__doc__.split('\n\n', 2)[2],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--input', default=DEFAULT_INPUT,
                      help='folder of MIDI files, searched recursively (default %(default)s)')
  parser.add_argument('--limit', type=int, default=None,
                      help='use only the first N files in sorted order, on both sides')
  parser.add_argument('--modes', default='in_memory,multi_processing',
                      help=f'comma-separated --direct_running_mode values to time, from {MODES} '
                      '(default %(default)s)')
  parser.add_argument('--workers', type=int, default=2,
                      help='--direct_num_workers for the multi_* modes (default %(default)s)')
  parser.add_argument('--skip-loop', action='store_true',
                      help='time only the Beam side (no ratio is printed)')
  # Internal: what a subprocess runs.
  parser.add_argument('--side', choices=('loop', 'beam'), help=argparse.SUPPRESS)
  parser.add_argument('--mode', help=argparse.SUPPRESS)
  parser.add_argument('--files-from', help=argparse.SUPPRESS)
  parser.add_argument('--result-json', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  modes = [m for m in args.modes.split(',') if m]
  if any(m not in MODES for m in modes):
    parser.error(f'--modes: expected values from {MODES}, got {args.modes!r}')
  args.modes = modes
  return args


def main(argv: list[str] | None = None) -> None:
  """Measures the loop and each Beam mode on the same files; prints a Markdown table."""
  args = parse_args(argv)
  if args.side:
    child_main(args)
    return
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  files = list_midi_files(args.input, args.limit)
  if not files:
    sys.exit(f'error: no .mid/.midi files under {args.input}')
  started = datetime.datetime.now().astimezone()
  load = os.getloadavg()
  results = []
  with tempfile.TemporaryDirectory(prefix='preprocess_speed_input_') as scratch:
    files_from = os.path.join(scratch, 'files.txt')
    with open(files_from, 'w') as f:
      f.write('\n'.join(files))
    beam_input = args.input
    if args.limit:  # the same subset for Beam, as a folder of symlinks
      beam_input = os.path.join(scratch, 'midi')
      os.mkdir(beam_input)
      for i, path in enumerate(files):
        os.symlink(path, os.path.join(beam_input, f'{i:06d}-{os.path.basename(path)}'))
    sides = [(f'beam ({mode})', ['--side', 'beam', '--input', beam_input, '--mode', mode,
                                 '--workers', str(args.workers)]) for mode in args.modes]
    if not args.skip_loop:
      sides.append((LOOP_LABEL, ['--side', 'loop', '--files-from', files_from]))
    failed = []
    for label, child_args in sides:
      result = measure(label, child_args)
      if result is None:
        failed.append(label)
      else:
        results.append(result)
  baseline = next((r for r in results if r['label'] == LOOP_LABEL), None)
  print(f'{len(files)} files from {args.input}; {started:%Y-%m-%d %H:%M %Z}; '
        f'{os.cpu_count()} cores; Python {platform.python_version()}; '
        f'load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, '
        f'at end {" ".join(f"{x:.2f}" for x in os.getloadavg())}')
  print()
  print(markdown_table(results, baseline))
  print()
  for label in failed:
    print(f'{label}: FAILED (its log is on stderr)')
  for r in results:
    if 'reasons' in r:
      reasons = ', '.join(f'{k} {v}' for k, v in r['reasons'].items()) or 'none'
      print(f'{r["label"]}: dead letters {reasons}; duplicates {r["duplicates"]}')


if __name__ == '__main__':
  main()
