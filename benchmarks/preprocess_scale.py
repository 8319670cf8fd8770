r"""Preprocessing at growing corpus sizes: files/s, CPU, peak memory and shuffle bytes per file.

    python -m venv /tmp/bench && /tmp/bench/bin/pip install -e '.[bench]'
    /tmp/bench/bin/python benchmarks/preprocess_scale.py [--sizes 2400,5000,10000,50000] \
        [--modes in_memory,multi_processing,default] [--loop-size 5000] \
        [--corpus-root /tmp/partita_scale] [--seed 0] [--plot benchmarks/preprocess_scale.png] \
        [--json results.json] [--near-duplicates same-split|keep-one|off]

For each size N a corpus of N files is made once with ``benchmarks/make_corpus.py`` (variants
of the shared corpora, under ``--corpus-root``, reused by later runs), and the whole job
(``beam_pipelines.preprocess.build_pipeline`` on Beam's local runner, the same steps as
``preprocess.run``) runs on it in each ``--direct_running_mode`` (or, as ``default``, the
README's command with no runner flags, which picks its own), each in a fresh subprocess
measured as ``benchmarks/preprocess_speed.py`` measures a side: wall time, CPU time of the
process tree, peak RSS summed over the process tree (psutil, every 0.1 s). Beside them, on the
``--loop-size`` corpus, the notebook baseline: a ``pretty_midi`` loop over the same files, whose
files/s every row is compared with (the loop costs the same per file at any corpus size).

Shuffle bytes come from Beam's own counters: the runner counts the elements of every
PCollection exactly and samples their encoded sizes (``beam:metric:sampled_byte_size:v1``);
their product, summed over the inputs of every GroupByKey in the pipeline, is what the shuffle
carries. A combine (the dedup, the statistics) shuffles its input pre-combined (combiner
lifting), one accumulator per key and bundle, so its output stands in for it: exact where each
key's inputs fall in one bundle (the local runner), and on Dataflow the statistics add three
accumulators (one per split, 1.4 KB each) per bundle, however many files it holds. Side inputs
(the input digests, the statistics, the dead letters per reason) are materialised rather than
shuffled and are reported apart.

The environment: a plain install and psutil (``[bench]``), as a user who installs the project
as the README says has. Beam imports pandas at the start of every process where it is
installed, and the ``[notesequence]`` and ``[dev]`` extras bring it (setup.py), which slows
every row; the first line printed says whether it is installed.

Why: the job must not need memory or shuffle that grows with the corpus; peak RSS at 50k files
should stay within 1.5x of the peak at 2.4k, and the shuffle under 200 bytes a file (plus the
near-duplicate search's sketch table, about 330).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import runpy
import subprocess
import sys
import tempfile

import preprocess_speed

from partita import atomic

REPO_ROOT = preprocess_speed.REPO_ROOT
MIB = 2**20
# The mode that runs the README's command with no runner flags, leaving the choice to the job.
DEFAULT_MODE = 'default'


def corpus_for(size: int, root: str, seed: int) -> str:
  """The folder of the ``size``-file corpus, made with make_corpus.py if it does not exist."""
  folder = os.path.join(root, f'seed{seed}-{size}')
  if not os.path.exists(folder):
    subprocess.run([sys.executable, os.path.join(REPO_ROOT, 'benchmarks', 'make_corpus.py'),
                    '--files', str(size), '--out', folder, '--seed', str(seed)], check=True)
  return folder


def pipeline_edges(pipeline_proto) -> tuple[set[str], set[str]]:
  """(ids of the PCollections a shuffle carries, ids of those read as side inputs).

  A GroupByKey's input is shuffled as it is; a combine's is pre-combined first (combiner
  lifting), so for a combine the combine's output stands in: one accumulator per key, what
  lifting shuffles when each key's inputs fall in one bundle.
  """
  from apache_beam.portability import common_urns
  from apache_beam.portability.api import beam_runner_api_pb2
  transforms = pipeline_proto.components.transforms
  shuffled, side, lifted = set(), set(), set()
  for transform in transforms.values():
    if transform.spec.urn == common_urns.composites.COMBINE_PER_KEY.urn:
      shuffled.update(transform.outputs.values())
      lifted.update(transform.subtransforms)
  for transform_id, transform in transforms.items():
    urn = transform.spec.urn
    if urn == common_urns.primitives.GROUP_BY_KEY.urn and transform_id not in lifted:
      shuffled.update(transform.inputs.values())
    elif urn == common_urns.primitives.PAR_DO.urn:
      payload = beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload)
      side.update(transform.inputs[name] for name in payload.side_inputs)
  return shuffled, side


def pcollection_bytes(result) -> dict[str, float]:
  """Estimated encoded bytes per PCollection id: exact element count x mean sampled size."""
  from apache_beam.metrics import monitoring_infos
  counts, mean_sizes = {}, {}
  for info in result.monitoring_infos():
    pcollection = info.labels.get(monitoring_infos.PCOLLECTION_LABEL)
    if info.urn == monitoring_infos.ELEMENT_COUNT_URN:
      counts[pcollection] = counts.get(pcollection, 0) + monitoring_infos.extract_counter_value(
          info)
    elif info.urn == monitoring_infos.SAMPLED_BYTE_SIZE_URN:
      count, total, _, _ = monitoring_infos.extract_distribution(info)
      if count:
        mean_sizes[pcollection] = total / count
  return {p: counts[p] * mean_sizes.get(p, 0.0) for p in counts}


def run_job(input_folder: str, mode: str, workers: int, near_duplicates: str | None) -> dict:
  """The whole job on Beam's local runner in ``mode``; its counts and shuffle estimate."""
  import apache_beam as beam

  from beam_pipelines import inputs, preprocess, runner
  args = [f'--direct_running_mode={mode}']
  if mode != 'in_memory':
    args.append(f'--direct_num_workers={workers}')
  with tempfile.TemporaryDirectory(prefix='preprocess_scale_') as output:
    config = preprocess.PreprocessConfig(
        input=input_folder, output=output,
        **({'near_duplicates': near_duplicates} if near_duplicates else {}))
    inputs.check_inputs(config)
    pipeline = beam.Pipeline(options=runner.pipeline_options(args))
    # As the command does on a local runner: each piece parsed once, kept for the writing stage.
    with tempfile.TemporaryDirectory(prefix='preprocess_scale_kept_') as kept_folder:
      preprocess.build_pipeline(pipeline, config, kept_folder)
      shuffled, side = pipeline_edges(pipeline.to_runner_api())
      result = pipeline.run()
      result.wait_until_finish()
    with open(os.path.join(output, 'info.json')) as f:
      info = json.load(f)
  sizes = pcollection_bytes(result)
  missing = sorted(p for p in shuffled | side if p not in sizes)
  counts = info['counts']
  return {'files': counts['files_in'], 'accepted': counts['pieces_written'] + counts['duplicates'],
          'rejected': counts['dead_letters'], 'reasons': counts['dead_letter_reasons'],
          'duplicates': counts['duplicates'],
          'notes': sum(s['notes'] for s in info['splits'].values()), 'args': args,
          'shuffle_bytes': sum(sizes.get(p, 0.0) for p in shuffled),
          'side_input_bytes': sum(sizes.get(p, 0.0) for p in side),
          'unmeasured_pcollections': missing}


def run_command(input_folder: str, near_duplicates: str | None) -> dict:
  """The job as the README runs it, with no runner flags; its counts.

  That is ``python -m beam_pipelines.preprocess --input FOLDER --output OUT``, run as ``-m``
  runs it (the module as ``__main__``, with what its ``__main__`` block does before ``main``),
  so the job chooses its own local mode. Beam's shuffle counters are not read: the command
  does not hand back its pipeline result.
  """
  with tempfile.TemporaryDirectory(prefix='preprocess_scale_') as output:
    sys.argv = ['beam_pipelines.preprocess', '--input', input_folder, '--output', output,
                *(['--near-duplicates', near_duplicates] if near_duplicates else [])]
    runpy.run_module('beam_pipelines.preprocess', run_name='__main__', alter_sys=True)
    with open(os.path.join(output, 'info.json')) as f:
      counts = json.load(f)['counts']
  return {'files': counts['files_in'], 'accepted': counts['pieces_written'] + counts['duplicates'],
          'rejected': counts['dead_letters'], 'duplicates': counts['duplicates'], 'args': []}


def child_main(args: argparse.Namespace) -> None:
  """What a measured subprocess runs: one side on one corpus, its result written as JSON."""
  if args.side == 'loop':
    with open(args.files_from) as f:
      result = preprocess_speed.run_loop(f.read().split('\n'))
  elif args.mode == DEFAULT_MODE:
    result = run_command(args.input, args.near_duplicates)
  else:
    result = run_job(args.input, args.mode, args.workers, args.near_duplicates)
  result.update(preprocess_speed.own_usage())
  atomic.write_bytes(args.result_json, json.dumps(result).encode())


def table(results: list[dict], loop: dict | None) -> str:
  """The results as a Markdown table, each Beam row's files/s against the loop's files/s."""
  lines = ['| files | side | wall s | files/s | CPU s | CPU ms/file | peak RSS, tree (MiB) | '
           'shuffle B/file | side inputs B/file | written | duplicates | dead letters | '
           'load 1m start/end | files/s vs loop |',
           '| ---: | --- |' + ' ---: |' * 10 + ' --- | ---: |']
  for r in results:
    files = r['files']
    ratio = 'n/a'
    if loop and r is not loop:  # the loop's cost is the same for every file: one rate for all
      ratio = f'{(files / r["wall"]) / (loop["files"] / loop["wall"]):.1f}x'
    shuffle = f'{r["shuffle_bytes"] / files:.0f}' if 'shuffle_bytes' in r else 'n/a'
    side = f'{r["side_input_bytes"] / files:.0f}' if 'side_input_bytes' in r else 'n/a'
    written = r['accepted'] - r.get('duplicates', 0) if 'duplicates' in r else r['accepted']
    lines.append(
        f'| {files:,} | {r["label"]} | {r["wall"]:.1f} | {files / r["wall"]:.1f} | '
        f'{r["cpu"]:.1f} | {1000 * r["cpu"] / files:.2f} | {r["peak_tree_rss"] / MIB:,.0f} | '
        f'{shuffle} | {side} | {written:,} | {r.get("duplicates", "n/a")} | {r["rejected"]} | '
        f'{r["load_start"]:.2f} / {r["load_end"]:.2f} | {ratio} |')
  return '\n'.join(lines)


def plot(results: list[dict], path: str) -> None:
  """Writes the peak RSS and wall seconds against corpus size, per mode, as a PNG at ``path``."""
  import matplotlib
  matplotlib.use('Agg')
  from matplotlib import pyplot
  figure, (rss_axis, wall_axis) = pyplot.subplots(1, 2, figsize=(10, 4))
  for label in dict.fromkeys(r['label'] for r in results):
    rows = sorted((r for r in results if r['label'] == label), key=lambda r: r['files'])
    files = [r['files'] for r in rows]
    rss_axis.plot(files, [r['peak_tree_rss'] / MIB for r in rows], 'o-', label=label)
    wall_axis.plot(files, [r['wall'] for r in rows], 'o-', label=label)
  rss_axis.set(xlabel='files', ylabel='peak RSS of the process tree (MiB)', ylim=(0, None))
  wall_axis.set(xlabel='files', ylabel='wall seconds', ylim=(0, None))
  rss_axis.legend()
  figure.tight_layout()
  buffer = io.BytesIO()
  figure.savefig(buffer, format='png', dpi=100)
  atomic.write_bytes(path, buffer.getvalue())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
  """The command's flags, and the internal ones a measured subprocess gets."""
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n', 2)[2],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--sizes', default='2400,5000,10000,50000')
  parser.add_argument('--modes', default='in_memory,multi_processing',
                      help=f'comma-separated: in_memory, multi_processing (with --workers), '
                      f'{DEFAULT_MODE} (the README\'s command, no runner flags; default '
                      '%(default)s)')
  parser.add_argument('--workers', type=int, default=2)
  parser.add_argument('--near-duplicates', default=None,
                      help="the job's --near-duplicates (default: the job's own default)")
  parser.add_argument('--loop-size', type=int, default=5000,
                      help='corpus size of the pretty_midi loop (0: none; default %(default)s)')
  parser.add_argument('--corpus-root', default='/tmp/partita_scale')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--plot', help='write the RSS and seconds plot here (PNG)')
  parser.add_argument('--json', help='write every result here')
  # Internal: what a subprocess runs.
  parser.add_argument('--side', choices=('loop', 'beam'), help=argparse.SUPPRESS)
  parser.add_argument('--input', help=argparse.SUPPRESS)
  parser.add_argument('--mode', help=argparse.SUPPRESS)
  parser.add_argument('--files-from', help=argparse.SUPPRESS)
  parser.add_argument('--result-json', help=argparse.SUPPRESS)
  return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
  """Measures every size and mode (and the loop); prints the table, optionally JSON and a plot."""
  args = parse_args(argv)
  if args.side:
    child_main(args)
    return
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  pandas = importlib.util.find_spec('pandas') is not None
  print(f'pandas, which Beam imports in every process: {"installed" if pandas else "absent"}',
        flush=True)
  results, loop = [], None
  for size in [int(s) for s in args.sizes.split(',') if s]:
    folder = corpus_for(size, args.corpus_root, args.seed)
    for mode in [m for m in args.modes.split(',') if m]:
      result = preprocess_speed.measure(f'beam ({mode})', ['--side', 'beam', '--input', folder,
                                               '--mode', mode, '--workers', str(args.workers),
                                               *(['--near-duplicates', args.near_duplicates]
                                                 if args.near_duplicates else [])],
                                        __file__)
      if result:
        results.append(dict(result, size=size))
    if size == args.loop_size:
      with tempfile.NamedTemporaryFile('w', suffix='.txt') as files_from:
        files_from.write('\n'.join(preprocess_speed.list_midi_files(folder, None)))
        files_from.flush()
        loop = preprocess_speed.measure(preprocess_speed.LOOP_LABEL,
                            ['--side', 'loop', '--files-from', files_from.name], __file__)
      if loop:
        loop['size'] = size
        results.append(loop)
    print(table(results, loop), file=sys.stderr)  # so far, in case a later size fails
  print(table(results, loop))
  if args.json:
    atomic.write_bytes(args.json, json.dumps(results, indent=1).encode())
  if args.plot:
    plot([r for r in results if r is not loop], args.plot)


if __name__ == '__main__':
  main()
