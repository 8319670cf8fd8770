r"""Generation speed: the export's in-graph ``generate`` loop against a Python loop over notes.

    .venv/bin/python benchmarks/generate_speed.py [--export MODEL_DIR/export] \
        [--batch-sizes 1,16,64,256] [--notes 256] [--repeats 3]

Both sides run on the same SavedModel in the same process, one after the other:

* **in-graph**: one call of the export's ``generate`` signature per batch of primes; the whole
  sampling loop (``--notes`` steps of model, top-k/top-p filtering and sampling) runs inside
  the TensorFlow graph. Measured for each batch size.
* **Python loop**: the notebook way: one piece at a time, one call of the export's
  ``predict_next`` signature per generated note, the pitch sampled in numpy from the softmax of
  the returned logits, the step and duration from their returned mixtures (a chord with the
  chord probability, else a component by its weight and a logistic draw from it, in
  log-seconds), and the window slid in numpy. One call per note is a simplification:
  ``predict_next`` conditions each part on the next note's earlier parts, which this loop passes
  as zeros (step 0, pitch 0, duration 0) rather than the values it samples; sampling them
  exactly would take one call per part, three per note. So this baseline is kinder than an
  exact loop, and kinder than most notebooks, which call Keras' ``model.predict`` per note
  (several milliseconds of overhead more per call).

Without ``--export``, the model is a freshly built, untrained model of the small preset's sizes
(``configs/small.yaml``: embedding 32, BiLSTM + LSTM of 64 units, window 64), exported to a
temporary folder by ``trainer.export.export_model``: speed does not depend on the weights. Primes
are random windows (seeded). One untimed call of each side first (loading, first-call
overheads); then each figure is the median of ``--repeats`` timed calls: notes/s is generated
notes (batch x notes) over wall seconds, and CPU ms per 1,000 notes counts every thread of the
process, which other processes' load changes much less than wall time. The machine may be
shared, so the load average is printed before and after: read the ratios.

Why: the design brief's users generate with ``model.predict`` once per note; the export is meant
to generate at least 20x the notes/s of that loop at batch 64. Prints a Markdown table; takes
about a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import tempfile
import time

# Set before TensorFlow is imported, here or by the project's modules: it is read at import.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np
import tensorflow as tf

from partita import constants, originality
from serving import export_client
from serving import sampling as sampling_lib
from trainer import config as config_lib
from trainer import export as export_lib
from trainer import model as model_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WINDOW = 64
# Timing statistics of the demo corpus's training split, for the untrained model's inputs.
TIMING = {'step': {'mean': 0.126, 'std': 0.225}, 'duration': {'mean': 0.842, 'std': 3.58}}


def untrained_small_export(folder: str) -> str:
  """Exports an untrained model of the small preset's sizes to ``folder``/export."""
  config = config_lib.load(os.path.join(REPO, 'configs', 'small.yaml'))
  model = model_lib.build_model(config.model, WINDOW, TIMING, num_labels=3)
  info = {'window_length': WINDOW, 'timing': TIMING}
  export_dir = os.path.join(folder, 'export')
  primes = random_primes(1, WINDOW, seed=1)
  export_lib.export_model(model, export_dir, WINDOW, config.to_yaml(), info, primes,
                          originality.build_table(primes['pitch']))
  return export_dir


def random_primes(batch: int, window: int, seed: int) -> dict[str, np.ndarray]:
  """``batch`` random prime windows of ``window`` notes, as ``generate`` takes them."""
  rng = np.random.default_rng(seed)
  return {'pitch': rng.integers(36, 97, (batch, window)).astype(np.int32),
          'step': rng.choice([0.0, 0.125, 0.25], (batch, window)).astype(np.float32),
          'duration': rng.choice([0.125, 0.25, 0.5], (batch, window)).astype(np.float32),
          'velocity': rng.integers(40, 110, (batch, window)).astype(np.float32)}


def softmax_choice(logits: np.ndarray, rng: np.random.Generator) -> int:
  """An index drawn with probability ``softmax(logits)``."""
  probabilities = np.exp(logits - logits.max())
  return int(rng.choice(len(probabilities), p=probabilities / probabilities.sum()))


def sample_time(out: dict, part: str, rng: np.random.Generator) -> float:
  """A time (s) drawn from the first row of ``predict_next``'s ``part`` mixture.

  ``part`` is 'step' or 'duration'. The time is 0 with the chord probability (step only), else a
  logistic draw in log-seconds from a component chosen by its weight.
  """
  if part == 'step' and rng.random() < 1 / (1 + np.exp(-float(out['step_chord_logit'][0]))):
    return 0.0
  component = softmax_choice(out[f'{part}_mixture_logits'].numpy()[0].astype(np.float64), rng)
  location = float(out[f'{part}_locations'][0, component])
  scale = float(out[f'{part}_scales'][0, component])
  uniform = rng.uniform(1e-12, 1.0)
  return float(np.exp(location + scale * (np.log(uniform) - np.log1p(-uniform))))


def python_loop(model, prime: dict[str, np.ndarray], num_notes: int, seed: int) -> np.ndarray:
  """The notebook way: one ``predict_next`` call per note for one piece; returns the pitches.

  The next note's conditions are zeros (see the module docstring).
  """
  rng = np.random.default_rng(seed)
  window = {name: values[:1].copy() for name, values in prime.items()}
  zeros, zero_pitch = tf.zeros([1]), tf.zeros([1], tf.int32)
  pitches = []
  for _ in range(num_notes):
    out = model.predict_next(
        **{name: tf.constant(window[name]) for name in constants.NOTE_FEATURES},
        next_step=zeros, next_pitch=zero_pitch, next_duration=zeros, label=zero_pitch)
    pitch = softmax_choice(out['pitch_logits'].numpy()[0].astype(np.float64), rng)
    next_note = {'pitch': pitch, 'step': sample_time(out, 'step', rng),
                 'duration': sample_time(out, 'duration', rng),
                 'velocity': out['velocity'].numpy()[0],
                 # The notebook keeps the prime's last tempo and bar, and no count of beats.
                 **{name: window[name][0, -1] for name in constants.METRE_FEATURES}}
    for name, value in next_note.items():
      window[name] = np.concatenate([window[name][:, 1:], [[value]]], axis=1).astype(
          window[name].dtype)
    pitches.append(pitch)
  return np.asarray(pitches)


def timed(function, repeats: int) -> tuple[float, float]:
  """(median wall seconds, median process CPU seconds) of ``repeats`` calls.

  One untimed call comes first.
  """
  function()
  walls, cpus = [], []
  for _ in range(repeats):
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    walls.append(time.perf_counter() - wall)
    cpus.append(time.process_time() - cpu)
  return statistics.median(walls), statistics.median(cpus)


def load_average() -> str:
  """The system's load averages over 1, 5 and 15 minutes, as text."""
  return ' '.join(f'{value:.2f}' for value in os.getloadavg())


def main(argv: list[str] | None = None) -> None:
  """Times the Python loop and ``generate`` at each batch size; prints a Markdown table."""
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  parser.add_argument('--export', help='an export to measure (default: an untrained model of '
                      'the small preset, built and exported here)')
  parser.add_argument('--batch-sizes', default='1,16,64,256')
  parser.add_argument('--notes', type=int, default=256, help='notes generated per piece')
  parser.add_argument('--repeats', type=int, default=3)
  args = parser.parse_args(argv)
  batch_sizes = [int(size) for size in args.batch_sizes.split(',')]

  load_before = load_average()
  with tempfile.TemporaryDirectory() as folder:
    export_dir = args.export or untrained_small_export(folder)
    export = export_client.load_export(export_dir)
    window = export.window_length
    rows = []
    loop_prime = random_primes(1, window, seed=0)
    wall, cpu = timed(lambda: python_loop(export.model, loop_prime, args.notes, seed=0),
                      args.repeats)
    loop_rate = args.notes / wall
    rows.append(('Python loop, `predict_next` per note', 1, wall, loop_rate,
                 1000 * cpu / args.notes * 1000))
    sampling = sampling_lib.Sampling(num_notes=args.notes)
    for batch in batch_sizes:
      primes = random_primes(batch, window, seed=batch)
      wall, cpu = timed(functools.partial(export_client.generate, export.model, primes, sampling),
                        args.repeats)
      notes = batch * args.notes
      rows.append(('in-graph `generate`', batch, wall, notes / wall, 1000 * cpu / notes * 1000))
  load_after = load_average()

  print(f'export: {args.export or "untrained, small preset sizes (embedding 32, LSTM 64)"}, '
        f'window {window}, {args.notes} notes per piece, median of {args.repeats} calls')
  print(f'{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, '
        f'TensorFlow {tf.__version__}; load average (1, 5, 15 min) before: {load_before}, '
        f'after: {load_after}\n')
  print('| method | batch | wall s per call | notes/s | CPU ms per 1,000 notes | '
        'x Python loop (notes/s) |')
  print('| --- | ---: | ---: | ---: | ---: | ---: |')
  for method, batch, wall, rate, cpu_ms in rows:
    print(f'| {method} | {batch} | {wall:.3f} | {rate:,.0f} | {cpu_ms:,.0f} | '
          f'{rate / loop_rate:.1f} |')


if __name__ == '__main__':
  main()
