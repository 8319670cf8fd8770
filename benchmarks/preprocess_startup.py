r"""Where the preprocessing command's time goes before its work starts: a timeline of its processes.

    /tmp/bench/bin/python benchmarks/preprocess_startup.py --input /tmp/partita_scale/seed0-5000 \
        [--runs 3] [-- --direct_running_mode=in_memory]

Runs ``python -m beam_pipelines.preprocess --input FOLDER --output TMP`` (plus any flags after
``--``) ``--runs`` times and watches its process tree with psutil every 20 ms. Each run gives:

* **imports**: from launch to the command's first line (the local mode it chose), printed once
  Beam and the project are imported and the inputs are matched;
* **build**: from there to the first SDK worker process (``sdk_worker_main``): pipeline
  construction and the runner's start (in ``in_memory`` mode there is no worker, and this phase
  runs to the first parser child);
* **workers**: from the first worker to the first parser child (``partita.isolation``): the
  workers' own imports and the first bundles' set-up;
* **work**: from the first parser child to the end;
* CPU seconds per kind of process (main, workers, parser children; the main process's is the
  tree's less the others', which are read up to 20 ms before they end).

The median of each over the runs is printed as a Markdown table row.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import psutil

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POLL_SECONDS = 0.02
PHASES = ('imports', 'build', 'workers', 'work', 'total')
KINDS = ('main', 'workers', 'parsers')


def kind_of(process: psutil.Process) -> str | None:
  """Which of :data:`KINDS` a child of the command is, from its command line."""
  try:
    command = ' '.join(process.cmdline())
  except psutil.Error:
    return None
  if 'sdk_worker_main' in command:
    return 'workers'
  if 'partita.isolation' in command:
    return 'parsers'
  return None


def one_run(input_folder: str, flags: list[str]) -> dict[str, float]:
  """One timed run of the command: its phases and CPU seconds per kind of process."""
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  with tempfile.TemporaryDirectory(prefix='startup_') as output:
    start = time.perf_counter()
    main = psutil.Popen([sys.executable, '-m', 'beam_pipelines.preprocess', '--input',
                         input_folder, '--output', output, *flags], cwd=REPO_ROOT,
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    first_line = {}

    def read_first_line():
      main.stdout.readline()
      first_line['at'] = time.perf_counter() - start
      main.stdout.read()

    reader = threading.Thread(target=read_first_line)
    reader.start()
    first_seen, cpu = {}, {}
    while main.poll() is None:
      try:
        children = main.children(recursive=True)
      except psutil.Error:
        children = []
      for child in children:
        kind = kind_of(child)
        if kind:
          first_seen.setdefault(kind, time.perf_counter() - start)
          try:
            times = child.cpu_times()
            cpu[child.pid] = (kind, times.user + times.system)
          except psutil.Error:
            pass
      time.sleep(POLL_SECONDS)
    total = time.perf_counter() - start
    reader.join()
    if main.returncode:
      raise SystemExit(f'the command failed with status {main.returncode}')
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  # The whole tree's CPU (each process waited for by its parent); the main process's share is
  # what its workers and parsers, last seen up to 20 ms before they ended, did not use.
  tree = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
  per_kind = {kind: sum(seconds for k, seconds in cpu.values() if k == kind) for kind in KINDS}
  per_kind['main'] = tree - per_kind['workers'] - per_kind['parsers']
  imported = first_line['at']
  workers_at = first_seen.get('workers', first_seen.get('parsers', total))
  parsers_at = first_seen.get('parsers', total)
  return {'imports': imported, 'build': workers_at - imported,
          'workers': parsers_at - workers_at, 'work': total - parsers_at, 'total': total,
          **{f'cpu_{kind}': seconds for kind, seconds in per_kind.items()}}


def main() -> None:
  """Times the runs and prints the medians as a Markdown table."""
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--input', required=True, help='a folder of MIDI files')
  parser.add_argument('--runs', type=int, default=3)
  parser.add_argument('--label', default='default command', help='the row label')
  parser.add_argument('flags', nargs='*', help='flags for the command, after --')
  args = parser.parse_args()
  runs = [one_run(args.input, args.flags) for _ in range(args.runs)]
  median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
  print('| run | ' + ' | '.join(f'{phase} s' for phase in PHASES) + ' | '
        + ' | '.join(f'CPU s, {kind}' for kind in KINDS) + ' |')
  print('| --- |' + ' ---: |' * (len(PHASES) + len(KINDS)))
  print(f'| {args.label} | ' + ' | '.join(f'{median[phase]:.1f}' for phase in PHASES) + ' | '
        + ' | '.join(f"{median['cpu_' + kind]:.1f}" for kind in KINDS) + ' |')


if __name__ == '__main__':
  main()
