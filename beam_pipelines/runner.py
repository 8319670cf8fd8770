"""The pipeline options of both Beam jobs: Beam's FnApiRunner unless the command line names one.

Beam's default, the DirectRunner, first tries its Prism runner, which it downloads from GitHub
at run time (``Downloading prism from https://github.com/apache/beam/releases/...``): online,
a local job would fetch a binary and run on an engine that ``--direct_running_mode`` and
``--direct_num_workers`` do not configure; offline the download fails and the DirectRunner
falls back to the FnApiRunner (0.1-0.4 s later, here). Both jobs run on the FnApiRunner either
way, so they ask for it: nothing comes from the network, and the local modes the README
measures are the ones that run. ``--runner DirectRunner`` still gives Beam's default
behaviour, and ``--runner DataflowRunner`` Dataflow.

The FnApiRunner runs a job in this process (``in_memory``, one core) unless told otherwise.
:func:`local_mode` chooses for a job that names no runner and no local mode: one SDK worker
process per core (``multi_processing``; fewer where memory would not hold them, or a
container's CPU quota is lower) from :data:`MULTI_PROCESSING_INPUTS` inputs on, where the
workers' start-up (each imports Beam and starts its own parser child, about 2 s) is paid back,
and this process below it.
"""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import os

from apache_beam.options import pipeline_options as beam_options

LOCAL_RUNNER = 'FnApiRunner'
# The runners whose workers run on this machine (the DirectRunner runs the FnApiRunner or Prism).
LOCAL_RUNNERS = (LOCAL_RUNNER, 'DirectRunner', 'SwitchingDirectRunner', 'PrismRunner')
# The flags that choose where a job runs; any of them on the command line turns off the choice.
RUNNER_FLAGS = ('--runner', '--direct_running_mode', '--direct_num_workers')
# Inputs from which one worker process per core beats this process alone, and at whose size
# peak memory stops growing (docs/experiments.md, "Preprocessing with the default command";
# measured again as each file cost less: "The default command's per-file work", "One parse a
# file, and ISA-L's gzip").
MULTI_PROCESSING_INPUTS = 1_500
# Memory to leave per worker process: each holds Beam and a parser child, about 350 MiB
# measured at 50,000 files; with room to spare, so that a machine with many cores and little
# memory gets fewer workers rather than swapping.
WORKER_MEMORY_BYTES = 2**30
# The most malloc arenas each of the command's processes uses, and the size from which the
# command's own process maps each block apart (limit_malloc); glibc's mallopt parameters that
# set them in a running process (M_ARENA_MAX and M_MMAP_THRESHOLD in malloc.h).
MALLOC_ARENAS = 2
MMAP_THRESHOLD_BYTES = 2**20
M_ARENA_MAX = -8
M_MMAP_THRESHOLD = -3


def pipeline_options(pipeline_args: list[str] | None) -> beam_options.PipelineOptions:
  """Beam's options from ``pipeline_args``, with :data:`LOCAL_RUNNER` when they name no runner."""
  options = beam_options.PipelineOptions(pipeline_args or [])
  standard = options.view_as(beam_options.StandardOptions)
  if standard.runner is None:
    standard.runner = LOCAL_RUNNER
  return options


def runs_here(options: beam_options.PipelineOptions) -> bool:
  """Whether every worker of a job with ``options`` runs on this machine, seeing its disk.

  Beam's local runners, unless their SDK workers run in containers or elsewhere
  (``--environment_type`` DOCKER or EXTERNAL).
  """
  environment = (options.view_as(beam_options.PortableOptions).environment_type or '').upper()
  return (options.view_as(beam_options.StandardOptions).runner in LOCAL_RUNNERS
          and environment in ('', 'LOOPBACK', 'EMBEDDED', 'PROCESS'))


def worker_processes(options: beam_options.PipelineOptions) -> bool:
  """Whether a job with ``options`` runs its DoFns in worker processes of this machine's own.

  Processes that the local runner starts for this job alone (``multi_processing``), not the
  process that runs the job (``in_memory``), which may be a test's or a notebook's.
  """
  mode = options.view_as(beam_options.DirectOptions).direct_running_mode
  return runs_here(options) and mode == 'multi_processing'


def freeze_long_lived() -> None:
  """Spares the garbage collector, for the rest of this process, every object alive now.

  For a process that exists for one job, once Beam's modules and the job's are imported: some
  140,000 objects that live until it exits. Otherwise every full collection walks them all,
  and so does the interpreter as the process exits, about 0.2 s each time in every process of a
  local run, whose runner stops its workers one after the other (docs/experiments.md, "The
  collector, malloc's arenas and the metre"). Garbage is collected first, so that none is kept
  for good. Never in a process that outlives the job (a test's, a notebook's): an object alive
  now that later becomes cyclic garbage would never be freed (``gc.freeze``).
  """
  gc.collect()
  gc.freeze()


def limit_malloc() -> bool:
  """Keeps glibc's malloc from holding memory that grows with the corpus, here and in children.

  Two settings, each unless the environment already sets it:

  * at most two arenas (``MALLOC_ARENA_MAX``), here and in every process started from now on:
    malloc gives each thread that allocates an arena of its own, up to eight a core, and keeps
    what is freed in each, and Beam's gRPC threads spread the job's data over many
    (docs/experiments.md, "The collector, malloc's arenas and the metre");
  * in this process, blocks of :data:`MMAP_THRESHOLD_BYTES` or more mapped apart, so that
    freeing one returns it (``MALLOC_MMAP_THRESHOLD_``): malloc otherwise raises that threshold
    to the size of each large block freed, up to 32 MiB, and keeps later blocks under it in
    its heap once freed. This process, the runner's, holds each stage's outputs between stages
    in such blocks. Not the workers', whose data plane's buffers of that size came and went 2%
    slower (docs/experiments.md, "note-seq as an extra, one sink for the three splits").

  For the command's own process only, before it starts a thread: its children inherit
  ``os.environ``, and its own malloc, which read its environment at its start, is told through
  ``mallopt``. Returns whether this process's malloc took both (False off glibc, or where the
  environment set either).
  """
  settings = []  # (mallopt's parameter, value) for this process
  if 'MALLOC_ARENA_MAX' not in os.environ:
    os.environ['MALLOC_ARENA_MAX'] = str(MALLOC_ARENAS)
    settings.append((M_ARENA_MAX, MALLOC_ARENAS))
  if 'MALLOC_MMAP_THRESHOLD_' not in os.environ:
    settings.append((M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
  try:
    mallopt = ctypes.CDLL(None).mallopt
  except (OSError, AttributeError):  # not glibc
    return False
  taken = [mallopt(option, value) == 1 for option, value in settings]
  return len(taken) == 2 and all(taken)


@dataclasses.dataclass(frozen=True)
class LocalMode:
  """Where a job runs, as chosen by :func:`local_mode`: the flags it adds, and why, in words."""
  args: tuple[str, ...]
  reason: str


def usable_cores(cpu_max: str = '/sys/fs/cgroup/cpu.max') -> int:
  """The cores this process may use: its CPU affinity, capped by a container's CPU quota.

  A container limited to N CPUs (cgroup v2's ``cpu.max``: ``QUOTA PERIOD``) still sees every
  core of its host in its affinity.
  """
  cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
  try:
    with open(cpu_max) as f:
      quota, period = f.read().split()[:2]
    if quota != 'max':
      cores = min(cores, max(1, int(quota) // int(period)))
  except (OSError, ValueError):
    pass  # no cgroup v2 quota here
  return max(1, cores or 1)


def usable_memory() -> int:
  """This machine's physical memory in bytes (0 where the system does not say)."""
  try:
    return os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
  except (AttributeError, ValueError, OSError):
    return 0


def local_mode(pipeline_args: list[str] | None, inputs: int, cores: int,
               memory_bytes: int = 0) -> LocalMode:
  """The local mode for a job of ``inputs`` inputs on ``cores`` cores, unless the flags chose.

  Explicit runner flags (:data:`RUNNER_FLAGS`, in either ``--flag value`` or ``--flag=value``
  form) always win: then no flag is added, and the reason names them. With ``memory_bytes``
  (0: unknown), the workers are at most one per :data:`WORKER_MEMORY_BYTES`.
  """
  args = list(pipeline_args or ())
  given = [arg for i, arg in enumerate(args) if arg.split('=', 1)[0] in RUNNER_FLAGS
           or (i and args[i - 1] in RUNNER_FLAGS)]
  if given:
    return LocalMode((), f'runner: as the flags say ({" ".join(given)})')
  workers = min(cores, memory_bytes // WORKER_MEMORY_BYTES) if memory_bytes else cores
  if workers > 1 and inputs >= MULTI_PROCESSING_INPUTS:
    each = ('one per core' if workers == cores
            else f'one per GiB of memory, on {cores} cores')
    return LocalMode(
        ('--direct_running_mode=multi_processing', f'--direct_num_workers={workers}'),
        f'local runner: {workers} worker processes, {each} ({inputs:,} inputs, at least '
        f'{MULTI_PROCESSING_INPUTS:,}; --direct_running_mode=in_memory runs in this process)')
  if workers > 1:
    why = (f'{inputs:,} inputs, under {MULTI_PROCESSING_INPUTS:,}: workers would start for '
           'longer than they save')
  else:
    why = 'one core' if cores == 1 else 'memory for one worker'
  return LocalMode(('--direct_running_mode=in_memory',),
                   f'local runner: this process ({why}; --direct_running_mode=multi_processing '
                   '--direct_num_workers=N runs N worker processes)')
