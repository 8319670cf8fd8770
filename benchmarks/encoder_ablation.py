r"""The encoder ablation: a BiLSTM against a causal LSTM, at the same CPU budget.

The BiLSTM predicts the note after its window; the causal LSTM predicts the note after every
position and carries its state while generating.

    python benchmarks/encoder_ablation.py --data /tmp/bench-data/piano --out /tmp/ablation \
        [--config configs/small.yaml] [--steps 3000]

1. Trains the BiLSTM (``model.encoder=bilstm``, the preset as it is) for ``--steps`` steps with
   ``trainer.task.train`` and measures the CPU time of this process (every thread) while it
   trains and exports.
2. Trains the causal encoder (``model.encoder=causal``, otherwise the same preset) for the
   number of steps that costs the same CPU time: two 500-step probes (causal and BiLSTM, each
   trained and exported the same way) give the ratio of their CPU times, and the causal run's
   steps are ``--steps`` divided by it. (The probes' fixed costs, start-up and export, pull the
   ratio towards 1.)
3. Evaluates both exports with ``evaluation.evaluate`` (test pitch, step, duration and note
   NLL; mean overlapping area of generated continuations) into ``OUT/<encoder>/report``.
4. Times each export's ``generate`` signature: 64 test primes, 256 notes, seed 0, median of 3
   calls after a warm-up call (which compiles).

Prints a Markdown table and writes it with every figure to ``OUT/ablation.json``. Both runs
train on the same data in the same way (same batch, augmentation and seed); the causal encoder's
training loss averages over the window's positions, its validation and test figures are, like
the BiLSTM's, the note after the whole window.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from evaluation import evaluate as evaluate_lib  # noqa: E402
from partita import atomic, constants  # noqa: E402
from partita import dataset as dataset_lib  # noqa: E402
from serving import export_client  # noqa: E402
from trainer import config as config_lib  # noqa: E402
from trainer import task  # noqa: E402

PROBE_STEPS = 500
GENERATION_BATCH = 64
GENERATION_NOTES = 256


def train_measured(data: str, model_dir: str, config: config_lib.Config) -> float:
  """Trains and exports; returns the CPU seconds it took."""
  started = time.process_time()
  task.train(data, model_dir, config)
  return time.process_time() - started


def generation_notes_per_second(export_dir: str, data: str) -> float:
  """Notes per second of the export's ``generate`` on test primes: the median of 3 timed calls."""
  export = export_client.load_export(export_dir).model
  info = dataset_lib.load_info(data)
  primes, _ = evaluate_lib.primes_and_continuations(
      dataset_lib.read_chunks(data, info, 'test', info['labels']), info['window_length'],
      GENERATION_BATCH, 0)
  primes = {name: np.resize(values, (GENERATION_BATCH,) + values.shape[1:])
            for name, values in primes.items()}
  arguments = {
      **{name: tf.constant(primes[name], tf.int32 if name == 'pitch' else tf.float32)
         for name in constants.NOTE_FEATURES},
      'num_notes': tf.constant(GENERATION_NOTES), 'temperature': tf.constant(1.0),
      'top_k': tf.constant(128), 'top_p': tf.constant(1.0), 'label_guidance': tf.constant(1.0),
      'tempo': tf.constant(0.0), 'seed': tf.constant(0, tf.int64),
      'label': tf.zeros([GENERATION_BATCH], tf.int32)}
  export.generate(**arguments)  # compiles
  seconds = []
  for _ in range(3):
    started = time.perf_counter()
    export.generate(**arguments)['pitch'].numpy()
    seconds.append(time.perf_counter() - started)
  return GENERATION_BATCH * GENERATION_NOTES / statistics.median(seconds)


def main() -> None:
  """Trains, evaluates and times both encoders; prints the table, writes ``OUT/ablation.json``."""
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--data', required=True, help='a preprocessed dataset')
  parser.add_argument('--out', required=True, help='folder for the two runs and the results')
  parser.add_argument('--config', default=os.path.join(REPO, 'configs', 'small.yaml'))
  parser.add_argument('--steps', type=int, default=3000, help="the BiLSTM's training steps")
  args = parser.parse_args()

  bilstm = config_lib.load(args.config, [f'train.steps={args.steps}', 'model.encoder=bilstm'])
  results = {'bilstm': {'steps': args.steps}}
  results['bilstm']['cpu_seconds'] = train_measured(args.data, f'{args.out}/bilstm', bilstm)

  probe = config_lib.load(args.config, [f'train.steps={PROBE_STEPS}', 'model.encoder=causal'])
  bilstm_probe = config_lib.load(args.config, [f'train.steps={PROBE_STEPS}'])
  cpu_ratio = (train_measured(args.data, f'{args.out}/probe-causal', probe)
               / train_measured(args.data, f'{args.out}/probe-bilstm', bilstm_probe))
  causal_steps = int(round(args.steps / cpu_ratio))
  causal = config_lib.load(args.config, [f'train.steps={causal_steps}', 'model.encoder=causal'])
  results['causal'] = {'steps': causal_steps, 'probe_cpu_ratio': cpu_ratio}
  results['causal']['cpu_seconds'] = train_measured(args.data, f'{args.out}/causal', causal)

  for name, row in results.items():
    export = f'{args.out}/{name}/export'
    evaluation = evaluate_lib.evaluate(args.data, export, f'{args.out}/{name}/report')
    model = evaluation['likelihood']['model']
    row.update({metric: model[metric] for metric in
                ('pitch_nll', 'pitch_accuracy', 'step_nll', 'duration_nll', 'note_nll')})
    row['mean_oa'] = evaluation['statistics']['mean_oa']['model']
    row['min_rhythm_oa'] = evaluation['statistics']['min_rhythm_oa']['model']
    row['generation_notes_per_second'] = generation_notes_per_second(export, args.data)
  atomic.write_bytes(os.path.join(args.out, 'ablation.json'),
                     json.dumps(results, indent=1).encode())

  print('| encoder | steps | CPU s | test pitch NLL | top-1 | step NLL | duration NLL | '
        'note NLL | mean OA | lowest rhythm OA | generation notes/s |')
  print('| --- |' + ' ---: |' * 10)
  for name, row in results.items():
    print(f"| {name} | {row['steps']} | {row['cpu_seconds']:.0f} | {row['pitch_nll']:.3f} | "
          f"{row['pitch_accuracy']:.1%} | {row['step_nll']:.3f} | {row['duration_nll']:.3f} | "
          f"{row['note_nll']:.3f} | {row['mean_oa']:.3f} | {row['min_rhythm_oa']:.3f} | "
          f"{row['generation_notes_per_second']:,.0f} |")


if __name__ == '__main__':
  main()
