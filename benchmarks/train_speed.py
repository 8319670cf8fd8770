r"""Training speed: windows/s per preset, the input pipeline alone, and stream vs in memory.

    python benchmarks/train_speed.py --data /tmp/bench-data/piano [--steps N]

For each preset (``configs/tiny.yaml``, ``configs/small.yaml`` and the full-size model:
``configs/full.yaml`` if there is one, else the defaults of ``trainer/config.py``) it measures,
in one process and one after the other:

* **stream**: the trainer's training steps (``trainer.train_loop.Trainer.train_steps``) on
  ``trainer.data.make_dataset`` (the training split, shuffled and augmented as the preset
  says), as ``trainer.task`` trains;
* **numpy**: the notebook way, the same steps on numpy arrays in memory
  (``tf.data.Dataset.from_tensor_slices``, reshuffled on every pass) holding the very windows
  the stream delivered (taken from the same pipeline beforehand), so both do the same
  arithmetic on the same data;
* **input pipeline alone** (the small preset): ``make_dataset`` iterated without a model.

Each run trains a new model for ``warm-up + steps`` steps with the same batch size, the
warm-up steps in one call and the timed ``steps`` in the next, so tracing, the shuffle buffer's
first fill and tf.data's autotuning are excluded. Stream and numpy runs alternate (stream,
numpy, numpy, stream, ...) so that load from other processes on a shared machine falls on both;
windows/s are medians over the runs, ratios medians over the (stream, numpy) pairs. Besides
wall-clock windows/s it reports the process's CPU time (all threads) per 1,000 windows, which
other processes' load changes much less: the stream's extra CPU time is what the input pipeline
costs the training.

Why: the trainer streams TFRecords so that corpora larger than memory train the same way; that
is only worth it if streaming costs (almost) nothing against the in-memory way (target: within
10%), and the input pipeline must be far faster than training (target: 10x the windows/s of a
training step, small preset) so that it never starves the model, even on a 2-core machine where
it competes with the training step for the same cores. Prints Markdown tables; takes about 6
minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import typing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import keras  # noqa: E402  (after quieting TensorFlow)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from partita import dataset as dataset_lib  # noqa: E402
from trainer import config as config_lib  # noqa: E402
from trainer import data as data_lib  # noqa: E402
from trainer import model as model_lib  # noqa: E402
from trainer import train_loop  # noqa: E402


def presets() -> list[tuple[str, config_lib.Config]]:
  """(name, config) of tiny, small and the full-size model."""
  full = os.path.join(REPO, 'configs', 'full.yaml')
  return [
      ('tiny', config_lib.load(os.path.join(REPO, 'configs', 'tiny.yaml'))),
      ('small', config_lib.load(os.path.join(REPO, 'configs', 'small.yaml'))),
      ('full' if os.path.exists(full) else 'full (defaults)',
       config_lib.load(full if os.path.exists(full) else None)),
  ]


class Rate(typing.NamedTuple):
  """A throughput: windows per wall-clock second, and process CPU ms per 1,000 windows."""
  windows_per_second: float  # wall clock
  cpu_ms_per_1k: float  # CPU time of the whole process (training + input) per 1,000 windows


def now() -> tuple[float, float]:
  """Wall-clock and process CPU time (all threads)."""
  return time.perf_counter(), time.process_time()


def rate(start: tuple[float, float], end: tuple[float, float], windows: int) -> Rate:
  """Throughput of ``windows`` between two :func:`now` readings."""
  (wall_0, cpu_0), (wall_1, cpu_1) = start, end
  return Rate(windows / (wall_1 - wall_0), 1e6 * (cpu_1 - cpu_0) / windows)


def train_dataset(data_dir: str, info: dict, config: config_lib.Config) -> tf.data.Dataset:
  """The trainer's own training input pipeline over the dataset."""
  return data_lib.make_dataset(data_dir, info, 'train', config.data, training=True,
                               batch_size=config.data.batch_size, seed=config.train.seed)


def in_memory(arrays: tuple[dict, dict], batch_size: int) -> tf.data.Dataset:
  """Batches of the numpy arrays ``(x, y)``, reshuffled on every pass."""
  windows = len(arrays[1]['pitch'])
  return (tf.data.Dataset.from_tensor_slices(arrays).shuffle(windows)
          .batch(batch_size, drop_remainder=True).repeat())


def train_speed(info: dict, config: config_lib.Config, dataset: tf.data.Dataset, warmup: int,
                steps: int) -> Rate:
  """Throughput of a new model's training steps on ``dataset``, after ``warmup`` steps."""
  keras.utils.set_random_seed(config.train.seed)
  model = model_lib.build_model(config.model, info['window_length'], info['timing'],
                                len(info['labels']['vocabulary']))
  optimizer = train_loop.make_optimizer(config.train, 'float32', model.trainable_variables)
  trainer = train_loop.Trainer(model, optimizer, tf.distribute.get_strategy(), config)
  batches = iter(dataset)
  trainer.train_steps(batches, tf.constant(warmup)).numpy()
  start = now()
  trainer.train_steps(batches, tf.constant(steps)).numpy()
  return rate(start, now(), steps * config.data.batch_size)


def materialise(data_dir: str, info: dict, config: config_lib.Config,
                batches: int) -> tuple[dict, dict]:
  """The first ``batches`` batches of the training stream as numpy arrays (x, y)."""
  xs, ys = [], []
  for x, y in train_dataset(data_dir, info, config).take(batches):
    xs.append(x)
    ys.append(y)

  def stack(parts):
    return {name: np.concatenate([p[name].numpy() for p in parts]) for name in parts[0]}
  return stack(xs), stack(ys)


def pipeline_alone(data_dir: str, info: dict, config: config_lib.Config, warmup: int,
                   batches: int) -> Rate:
  """Throughput of the training input pipeline iterated without a model."""
  iterator = iter(train_dataset(data_dir, info, config))
  for _ in range(warmup):
    next(iterator)
  start = now()
  for _ in range(batches):
    next(iterator)
  return rate(start, now(), batches * config.data.batch_size)


def load_average() -> str:
  """The system's load averages over 1, 5 and 15 minutes, as text."""
  return ', '.join(f'{value:.2f}' for value in os.getloadavg())


def main(argv: list[str] | None = None) -> None:
  """Times each preset's training from the stream and from memory; prints Markdown tables."""
  parser = argparse.ArgumentParser(
      description=__doc__.split('\n\n', 2)[2], formatter_class=argparse.RawTextHelpFormatter)
  parser.add_argument('--data', required=True,
                      help='dataset folder written by `python -m beam_pipelines.preprocess`')
  parser.add_argument('--steps', type=int, default=150,
                      help='timed steps per run for tiny and small (default 150)')
  parser.add_argument('--full-steps', type=int, default=20,
                      help='timed steps per run for the full-size model (default 20: it is '
                      'slow on a CPU)')
  parser.add_argument('--warmup', type=int, default=20,
                      help='untimed steps before the timed ones (default 20; at most 5 for '
                      'full)')
  parser.add_argument('--rounds', type=int, default=6,
                      help='(stream, numpy) pairs of runs for the small preset, the one the '
                      'targets are about, alternating the order of each pair; medians are '
                      'reported (default 6; tiny and full get at most 2)')
  parser.add_argument('--pipeline-batches', type=int, default=2000,
                      help='timed batches of the input pipeline alone (default 2000)')
  parser.add_argument('--presets', default='tiny,small,full',
                      help='comma-separated subset of tiny,small,full (default all three)')
  args = parser.parse_args(argv)

  info = dataset_lib.load_info(args.data)
  wanted = args.presets.split(',')
  started = time.perf_counter()
  print(f'load average (1, 5, 15 min) at the start: {load_average()}', flush=True)
  rows = []
  for name, config in presets():
    if name.split()[0] not in wanted:
      continue
    is_full = name.startswith('full')
    steps = args.full_steps if is_full else args.steps
    warmup = min(args.warmup, 5) if is_full else args.warmup
    rounds = args.rounds if name == 'small' else min(args.rounds, 2)
    arrays = materialise(args.data, info, config, warmup + steps)
    pairs = []
    for i in range(rounds):
      pair = {}
      for kind in ('stream', 'numpy') if i % 2 == 0 else ('numpy', 'stream'):
        dataset = (train_dataset(args.data, info, config) if kind == 'stream'
                   else in_memory(arrays, config.data.batch_size))
        pair[kind] = train_speed(info, config, dataset, warmup, steps)
        print(f'{name}: {kind} {pair[kind].windows_per_second:,.0f} windows/s, '
              f'{pair[kind].cpu_ms_per_1k:,.0f} CPU ms per 1k windows', flush=True)
      pairs.append(pair)
    rows.append((name, config, steps, pairs))
  print(f'load average after training: {load_average()}', flush=True)

  def median(pairs, value):
    return statistics.median(value(pair) for pair in pairs)

  def ratios(pairs, field):
    """Median and range over the pairs of stream / numpy."""
    values = [getattr(p['stream'], field) / getattr(p['numpy'], field) for p in pairs]
    return f'{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})'

  print()
  print('| preset | batch | LSTM units | pairs of runs x timed steps | stream windows/s '
        '| numpy windows/s | stream / numpy windows/s | stream / numpy CPU time per window |')
  print('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
  for name, config, steps, pairs in rows:
    print(f'| {name} | {config.data.batch_size} | {config.model.lstm_units} '
          f'| {len(pairs)} x {steps} '
          f'| {median(pairs, lambda p: p["stream"].windows_per_second):,.0f} '
          f'| {median(pairs, lambda p: p["numpy"].windows_per_second):,.0f} '
          f'| {ratios(pairs, "windows_per_second")} | {ratios(pairs, "cpu_ms_per_1k")} |')
  print('\nMedians over the runs; ratios: median (range) over the (stream, numpy) pairs.')

  small = [pairs for name, _, _, pairs in rows if name == 'small']
  if small:
    config = dict(presets())['small']
    alone = pipeline_alone(args.data, info, config, args.warmup, args.pipeline_batches)
    training = Rate(median(small[0], lambda p: p['stream'].windows_per_second),
                    median(small[0], lambda p: p['stream'].cpu_ms_per_1k))
    print()
    print('| small preset | windows/s | CPU ms per 1k windows |')
    print('| --- | ---: | ---: |')
    print(f'| input pipeline alone (train split, shuffled, augmented) '
          f'| {alone.windows_per_second:,.0f} | {alone.cpu_ms_per_1k:.1f} |')
    print(f'| training from the stream (model and pipeline) | {training.windows_per_second:,.0f} '
          f'| {training.cpu_ms_per_1k:,.0f} |')
    print(f'| pipeline / training | {alone.windows_per_second / training.windows_per_second:.0f}x '
          f'| {alone.cpu_ms_per_1k / training.cpu_ms_per_1k:.1%} |')
  print(f'\nload average at the end: {load_average()}; '
        f'{time.perf_counter() - started:.0f} s in all')


if __name__ == '__main__':
  main()
