"""The preprocessing job's own choice of local mode, and the same dataset in either mode.

Every core for a corpus, this process for a few files, explicit runner flags first.
"""

from __future__ import annotations

import collections
import glob
import json
import os
import subprocess
import sys
import tempfile

import apache_beam as beam
from apache_beam.metrics import metric
import midi_builders
import pytest

from beam_pipelines import inputs, preprocess, runner
from partita import contract, failures


@pytest.mark.parametrize('args,given', [
    (['--runner', 'DirectRunner'], '--runner DirectRunner'),
    (['--runner=DataflowRunner', '--project', 'p'], '--runner=DataflowRunner'),
    (['--direct_running_mode=in_memory'], '--direct_running_mode=in_memory'),
    (['--direct_running_mode', 'multi_processing'], '--direct_running_mode multi_processing'),
    (['--project', 'p', '--direct_num_workers', '3'], '--direct_num_workers 3')])
def test_explicit_runner_flags_always_win(args, given):
  mode = runner.local_mode(args, inputs=50_000, cores=8)
  assert mode == runner.LocalMode((), f'runner: as the flags say ({given})')


def test_every_core_from_the_threshold_on_and_this_process_below_it():
  at = runner.MULTI_PROCESSING_INPUTS
  mode = runner.local_mode(['--project', 'p'], inputs=at, cores=4)
  assert mode.args == ('--direct_running_mode=multi_processing', '--direct_num_workers=4')
  assert mode.reason == (
      f'local runner: 4 worker processes, one per core ({at:,} inputs, at least {at:,}; '
      '--direct_running_mode=in_memory runs in this process)')
  below = runner.local_mode(None, inputs=at - 1, cores=4)
  assert below.args == ('--direct_running_mode=in_memory',)
  assert below.reason.startswith(f'local runner: this process ({at - 1:,} inputs, under {at:,}:')
  one_core = runner.local_mode([], inputs=50_000, cores=1)
  assert one_core.args == ('--direct_running_mode=in_memory',)
  assert one_core.reason.startswith('local runner: this process (one core;')


def test_workers_fit_the_memory_and_the_containers_cpu_quota(tmp_path):
  many = runner.local_mode(None, inputs=5_000, cores=64, memory_bytes=8 * 2**30)
  assert many.args == ('--direct_running_mode=multi_processing', '--direct_num_workers=8')
  assert 'local runner: 8 worker processes, one per GiB of memory, on 64 cores' in many.reason
  little = runner.local_mode(None, inputs=5_000, cores=4, memory_bytes=3 * 2**29)
  assert little.args == ('--direct_running_mode=in_memory',)
  assert little.reason.startswith('local runner: this process (memory for one worker;')
  affinity = len(os.sched_getaffinity(0))
  cpu_max = tmp_path / 'cpu.max'
  cpu_max.write_text('100000 100000\n')
  assert runner.usable_cores(str(cpu_max)) == 1
  cpu_max.write_text('max 100000\n')
  assert runner.usable_cores(str(cpu_max)) == affinity
  assert runner.usable_cores(str(tmp_path / 'absent')) == affinity


def make_corpus(folder) -> None:
  """Twelve melodies, an exact copy of one, a file that is not MIDI and a stray text file."""
  for seed in range(12):
    midi_builders.write_midi(os.path.join(folder, f'piece{seed:02d}.mid'),
                             midi_builders.random_melody(seed, 100 + 20 * seed))
  with open(os.path.join(folder, 'piece00.mid'), 'rb') as f:
    midi_builders.write_file(os.path.join(folder, 'copy.mid'), f.read())
  midi_builders.write_file(os.path.join(folder, 'bad.mid'), b'not a MIDI file')
  midi_builders.write_file(os.path.join(folder, 'notes.txt'), b'not an input')


def test_the_inputs_counted_are_midi_files_and_listed_paths(tmp_path):
  make_corpus(tmp_path / 'corpus')
  listed = tmp_path / 'list.txt'
  listed.write_text(f"# two paths\n{tmp_path / 'corpus' / 'piece00.mid'}\n\nelsewhere.mid\n")
  config = preprocess.PreprocessConfig(input=str(tmp_path / 'corpus'), input_list=str(listed),
                                       output=str(tmp_path / 'out'))
  assert inputs.check_inputs(config) == 14 + 2


def dataset(output: str) -> tuple[dict, dict, list]:
  """(split -> chunk records as a multiset, info.json less shard names and output, letters)."""
  import tensorflow as tf  # noqa: PLC0415 (only this test of the file reads the shards)
  chunks = {}
  for split in contract.SPLITS:
    paths = sorted(glob.glob(os.path.join(output, split, '*.tfrecord.gz')))
    chunks[split] = collections.Counter(
        tf.data.TFRecordDataset(paths, compression_type='GZIP').as_numpy_iterator())
  with open(os.path.join(output, contract.INFO_FILE)) as f:
    info = json.load(f)
  for split in info['splits'].values():
    split.pop('files')  # each worker writes its own shards
  info['options'].pop('output')
  letters = []
  for path in glob.glob(os.path.join(output, failures.DEAD_LETTER_DIR, '*')):
    with open(path) as f:
      letters += [json.loads(line) for line in f if line.strip()]
  return chunks, info, sorted(letters, key=lambda letter: letter['input'])


def test_the_command_says_its_mode_and_both_modes_write_the_same_dataset(tmp_path, capsys,
                                                                         monkeypatch):
  corpus = tmp_path / 'corpus'
  make_corpus(corpus)
  monkeypatch.setattr(runner, 'usable_cores', lambda: 2)
  monkeypatch.setattr(runner, 'usable_memory', lambda: 4 * runner.WORKER_MEMORY_BYTES)
  preprocess.main(['--input', str(corpus), '--output', str(tmp_path / 'one')])
  assert capsys.readouterr().out.startswith(
      'local runner: this process (14 inputs, under 1,500: workers would start for longer than '
      'they save; --direct_running_mode=multi_processing --direct_num_workers=N runs N worker '
      'processes)\n')
  # A corpus past the threshold, as far as the job can tell: the same files in two workers.
  monkeypatch.setattr(runner, 'MULTI_PROCESSING_INPUTS', 14)
  preprocess.main(['--input', str(corpus), '--output', str(tmp_path / 'two')])
  assert capsys.readouterr().out.startswith('local runner: 2 worker processes, one per core (14 '
                                            'inputs, at least 14;')
  one, two = dataset(str(tmp_path / 'one')), dataset(str(tmp_path / 'two'))
  assert one == two
  counts = one[1]['counts']
  assert (counts['pieces_written'], counts['duplicates'], counts['dead_letters']) == (12, 1, 1)
  assert sum(sum(chunks.values()) for chunks in one[0].values()) == sum(
      split['chunks'] for split in one[1]['splits'].values())
  assert [letter['reason'] for letter in one[2]] == ['not_midi']


def test_a_local_job_parses_each_file_once_and_writes_what_parsing_twice_writes(tmp_path):
  """The writing stage loads the pieces the first parse kept, and writes the same dataset."""
  make_corpus(tmp_path / 'corpus')
  (tmp_path / 'kept').mkdir()
  counters = {}
  for name, kept_folder in (('twice', ''), ('once', str(tmp_path / 'kept'))):
    config = preprocess.PreprocessConfig(input=str(tmp_path / 'corpus'),
                                         output=str(tmp_path / name))
    pipeline = beam.Pipeline(options=runner.pipeline_options([]))
    preprocess.build_pipeline(pipeline, config, kept_folder)
    result = pipeline.run()
    result.wait_until_finish()
    written = result.metrics().query(metric.MetricsFilter().with_namespace('write'))['counters']
    counters[name] = {counter.key.metric.name: counter.committed for counter in written}
  assert counters == {'twice': {'pieces_parsed_again': 12}, 'once': {'pieces_kept': 12}}
  assert dataset(str(tmp_path / 'once')) == dataset(str(tmp_path / 'twice'))


@pytest.mark.parametrize('flags', [[], ['--no-isolation']])
def test_the_command_removes_the_pieces_it_kept(tmp_path, monkeypatch, flags):
  """Its folder is gone, and no file of it stays open here (--no-isolation keeps them here)."""
  make_corpus(tmp_path / 'corpus')
  (tmp_path / 'temp').mkdir()
  monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path / 'temp'))
  preprocess.main(['--input', str(tmp_path / 'corpus'), '--output', str(tmp_path / 'out'),
                   *flags])
  assert os.listdir(tmp_path / 'temp') == []
  open_files = [os.readlink(f'/proc/self/fd/{fd}') for fd in os.listdir('/proc/self/fd')
                if os.path.exists(f'/proc/self/fd/{fd}')]
  assert not [path for path in open_files if path.startswith(str(tmp_path / 'temp'))]
  assert os.path.exists(tmp_path / 'out' / contract.COMPLETED_MARKER)


@pytest.mark.parametrize('args, here', [
    ([], True),
    (['--direct_running_mode=multi_processing'], True),
    (['--runner', 'DirectRunner', '--environment_type', 'LOOPBACK'], True),
    (['--runner', 'DirectRunner', '--environment_type', 'DOCKER'], False),
    (['--runner', 'DataflowRunner', '--project', 'p'], False)])
def test_pieces_are_kept_only_where_every_worker_sees_this_machine(args, here):
  assert runner.runs_here(runner.pipeline_options(args)) is here


@pytest.mark.parametrize('args, own', [
    ([], False),
    (['--direct_running_mode=in_memory'], False),
    (['--direct_running_mode=multi_processing', '--direct_num_workers=2'], True),
    (['--direct_running_mode=multi_processing', '--environment_type', 'DOCKER'], False),
    (['--runner', 'DataflowRunner', '--project', 'p'], False)])
def test_worker_processes_are_those_the_local_runner_starts(args, own):
  assert runner.worker_processes(runner.pipeline_options(args)) is own


@pytest.mark.parametrize('worker_process', [True, False])
def test_only_a_worker_process_freezes_its_objects(worker_process):
  """In a process of its own, as a worker would: a test's process must never be frozen."""
  code = ('import gc\n'
          'from beam_pipelines import preprocess\n'
          'from partita import notes\n'
          'assert gc.get_freeze_count() == 0\n'
          f'fn = preprocess.ParsePieceFn(notes.parse_midi, notes.ParseOptions(), '
          f'worker_process={worker_process})\n'
          'fn.setup()\n'
          'print(gc.get_freeze_count() > 10_000)\n')
  done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                        env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)), check=True)
  assert done.stdout == f'{worker_process}\n'


def test_the_job_tells_its_parse_whether_it_runs_in_worker_processes(tmp_path):
  class ParsingFns(beam.pipeline.PipelineVisitor):
    def __init__(self):
      self.flags = []

    def visit_transform(self, node):
      fn = getattr(node.transform, 'fn', None)
      if isinstance(fn, preprocess.ParsePieceFn):
        self.flags.append(fn.worker_process)

  for own in (True, False):
    pipeline = beam.Pipeline(options=runner.pipeline_options([]))
    preprocess.build_pipeline(pipeline, preprocess.PreprocessConfig(
        input=str(tmp_path), output=str(tmp_path / 'out')), '', own)
    fns = ParsingFns()
    pipeline.visit(fns)
    assert fns.flags == [own]


@pytest.mark.parametrize('environment, taken, arenas', [
    ({}, True, '2'), ({'MALLOC_ARENA_MAX': '8'}, False, '8'),
    ({'MALLOC_MMAP_THRESHOLD_': '4096'}, False, '2')])
def test_the_command_limits_malloc_here_and_in_its_children_unless_told(environment, taken,
                                                                       arenas):
  """In a subprocess: the test's own malloc is left as it is."""
  code = ('import os\n'
          'from beam_pipelines import runner\n'
          'print(runner.limit_malloc(), os.environ["MALLOC_ARENA_MAX"])\n')
  clean = {k: v for k, v in os.environ.items()
           if k not in ('MALLOC_ARENA_MAX', 'MALLOC_MMAP_THRESHOLD_')}
  done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                        env=dict(clean, PYTHONPATH=os.pathsep.join(sys.path), **environment))
  assert done.stdout == f'{taken} {arenas}\n'
