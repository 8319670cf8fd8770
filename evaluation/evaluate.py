r"""Evaluate an export on the test split against baselines fitted in the same run; write a report.

    python -m evaluation.evaluate --data DATA_DIR --model MODEL_DIR/export [--out REPORT_DIR]

**Likelihood.** The export's ``predict_next`` signature scores every test window that
``trainer.data.make_dataset`` yields (``training=False``: each note after the first window of
each test piece is a target exactly once), each head given the true parts of the note before
its own: pitch NLL (nats/note), top-1 and top-5 accuracy, and the NLL of the step and of the
duration on the 10 ms grid of ``partita.timing_bins`` (the log-probability of the bin holding
the true time), and the note NLL, the sum of the three (``trainer.metrics.note_scores``, under
the names of ``metrics.json`` and TensorBoard). The baselines score the very same targets,
reading their context from the same windows (the last pitches, or the last step and duration,
before the target), so every row of the table is a mean over the same notes:

* unigram and interpolated Kneser-Ney n-grams of orders 2 to 5 (``partita.baselines.NGram``),
* repeat-the-previous-pitch (``RepeatPrevious``, its ``eps`` the training change rate),
* timing histogram: the smoothed training histogram of binned steps and of binned durations
  (``TimingHistogram``),
* timing histogram | previous: the same conditioned on the previous note's binned step (for
  the step) or duration (for the duration) (``ConditionalTimingHistogram``).

They are fitted on the training split's chunks, counting the targets at each chunk's index
``first_target`` = window length or later: every training note the network learns to predict,
once, with its real history, and no other. The model's note NLL is compared with the best
n-gram's pitch NLL plus the better timing baseline's step and duration NLLs.

**Music statistics.** Primes are the first window of test chunks long enough to hold a window
plus ``--num-notes`` more notes (evenly spread over the split's chunks in file order, so over its
pieces); the *real* set is the notes that follow each prime in the piece. The *model* set is the
export's ``generate`` signature on the same primes (a ``serving.sampling.Sampling`` of
``--num-notes``, ``--temperature`` and ``--seed``, with no top-k or top-p cut, so it samples the
distribution the NLL measures), and the *n-gram* set samples the
best n-gram (lowest test NLL in this run) from the same primes, each note's step, duration and
velocity drawn at random from the training targets (an n-gram over pitches has no timing of its
own). ``partita.music_stats`` computes per-piece features and compares each set with the real
one by overlapping area and KL divergence (Yang & Lerch 2018).

**Measures a listener hears.** On the same three sets, ``evaluation.listening`` reports each
set's on-grid share, key stability, notes per onset and pitch span (``partita.listening``) and
how well a random forest tells each generated set from the real one (``evaluation.two_sample``),
beside the real set's two halves told apart (the floor), in ``results['listening']``.

**Report.** ``REPORT_DIR`` (default ``MODEL_DIR/report``, beside the export) gets
``report.md``, ``evaluation.json`` (every number), ``training_curves.png`` (from the TensorBoard
event files in ``MODEL_DIR/logs``, if any), ``features.png``, ``distances.png`` and piano rolls
in ``pieces/`` with their MIDI and WAV, and ``index.html`` to look at and listen to them.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import numpy as np
from tensorboard.backend.event_processing import event_accumulator
import tensorflow as tf

from evaluation import conditioning, listening
from evaluation import report as report_lib
from partita import (
  baselines,
  constants,
  contract,
  export_contract,
  failures,
  music_stats,
  timing_bins,
)
from partita import dataset as dataset_lib
from partita import labels as labels_lib
from serving import export_client
from serving import sampling as sampling_lib
from trainer import config as config_lib
from trainer import data as data_lib
from trainer import metrics as metrics_lib
from trainer import timing_distribution

NGRAM_ORDERS = (2, 3, 4, 5)
TIMING_HISTOGRAM = 'timing histogram'
TIMING_CONDITIONAL = 'timing histogram | previous'


def fit_baselines(train_chunks: list[dict[str, np.ndarray]], window_length: int) -> dict:
  """The baselines, fitted on the training targets.

  The targets are the notes at index ``window_length`` or later of each chunk. Returns
  ``{'pitch': {name: pitch model}, 'timing': {name: {'step' | 'duration': timing model}}}``.
  """
  pitches = [chunk['pitch'] for chunk in train_chunks]
  models = {'unigram': baselines.NGram.fit(pitches, 1, first_target=window_length)}
  for order in NGRAM_ORDERS:
    models[f'{order}-gram'] = baselines.NGram.fit(pitches, order, first_target=window_length)
  models['repeat previous'] = baselines.RepeatPrevious.fit(pitches, first_target=window_length)
  timing = {
      TIMING_HISTOGRAM: {part: baselines.TimingHistogram.fit(
          [chunk[part] for chunk in train_chunks], first_target=window_length)
          for part in timing_bins.TIMED_PARTS},
      TIMING_CONDITIONAL: {part: baselines.ConditionalTimingHistogram.fit(
          [chunk[part] for chunk in train_chunks], first_target=window_length)
          for part in timing_bins.TIMED_PARTS}}
  return {'pitch': models, 'timing': timing}


def _model_scores(outputs: dict, targets: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The model's per-note scores from ``predict_next``'s outputs for the true notes."""
  timing_nll = {}
  for part in timing_bins.TIMED_PARTS:
    parameters = {name[len(part) + 1:]: value for name, value in outputs.items()
                  if name.startswith(f'{part}_')}
    bins = tf.constant(timing_bins.to_bins(targets[part]), tf.int32)
    timing_nll[part] = -timing_distribution.log_bin_probability(parameters, bins).numpy()
  return metrics_lib.note_scores(outputs['pitch_logits'].numpy(), targets['pitch'], timing_nll)


def likelihood(export, data_dir: str, info: dict, fitted: dict, by_label: bool,
               batch_size: int = 512) -> tuple[dict[str, dict], int, dict[int, dict]]:
  """Test-split metrics of the export and of every baseline, over the same windows.

  ``info``: the export's (its label vocabulary reads the dataset's labels). Returns
  ``({row name: {metric: mean}}, number of windows, per-label sums)``: ``model`` has every
  metric, the pitch baselines the pitch metrics, the timing baselines the step and duration
  NLLs. With ``by_label``, every window is also scored with the unconditional label id, and the
  per-label sums (``{label id: {'windows', 'pitch_nll', 'note_nll', and both
  '*_unconditional'}}``, see ``evaluation.conditioning.label_rows``) are filled.
  """
  dataset = data_lib.make_dataset(data_dir, info, 'test', config_lib.DataConfig(),
                                  training=False, batch_size=batch_size)
  sums: dict[str, dict[str, float]] = {}
  per_label: dict[int, dict[str, float]] = {}
  count = 0

  def add(totals: dict, scores: dict[str, np.ndarray]) -> None:
    for name, values in scores.items():
      totals[name] = totals.get(name, 0.0) + float(np.sum(values, dtype=np.float64))

  predict_next = getattr(export, export_contract.PREDICT_NEXT)
  for inputs, targets in dataset:
    # The true next note: each head is conditioned on the true parts before its own.
    arguments = {**{name: inputs[name] for name in constants.NOTE_FEATURES},
                 'next_step': targets['step'], 'next_pitch': targets['pitch'],
                 'next_duration': targets['duration']}
    label = inputs[contract.LABEL_FEATURE][:, -1]
    target = {name: values.numpy() for name, values in targets.items()}
    scores = _model_scores(predict_next(**arguments, label=label), target)
    add(sums.setdefault('model', {}), scores)
    if by_label:
      unconditional = _model_scores(predict_next(**arguments, label=tf.zeros_like(label)),
                                    target)
      window_labels = label.numpy()
      for label_id in np.unique(window_labels):
        rows = window_labels == label_id
        add(per_label.setdefault(int(label_id), {}), {
            'windows': rows, **{f'{metric}{suffix}': values[metric][rows]
                                for metric in ('pitch_nll', 'note_nll')
                                for suffix, values in (('', scores),
                                                       ('_unconditional', unconditional))}})
    context = inputs['pitch'].numpy()
    for name, model in fitted['pitch'].items():
      add(sums.setdefault(name, {}),
          baselines.score_pitches(np.log(model.distribution(context)), target['pitch']))
    histogram, conditional = (fitted['timing'][name] for name in (TIMING_HISTOGRAM,
                                                                   TIMING_CONDITIONAL))
    add(sums.setdefault(TIMING_HISTOGRAM, {}), {
        f'{part}_nll': -histogram[part].log_prob(target[part]) for part in timing_bins.TIMED_PARTS})
    # The previous value is the window's last note's.
    add(sums.setdefault(TIMING_CONDITIONAL, {}), {
        f'{part}_nll': -conditional[part].log_prob(target[part], inputs[part].numpy()[:, -1])
        for part in timing_bins.TIMED_PARTS})
    count += len(target['pitch'])
  return ({row: {name: total / count for name, total in totals.items()}
           for row, totals in sums.items()}, count, per_label)


def best_baselines(rows: dict[str, dict]) -> dict:
  """The baseline the model's note NLL is compared with, and its note NLL.

  It is the best n-gram (lowest pitch NLL) with the better timing baseline (lowest step +
  duration NLL); its note NLL is their sum's.
  """
  ngram = min((f'{order}-gram' for order in NGRAM_ORDERS), key=lambda r: rows[r]['pitch_nll'])
  timing = min((TIMING_HISTOGRAM, TIMING_CONDITIONAL),
               key=lambda r: rows[r]['step_nll'] + rows[r]['duration_nll'])
  timing_nll = rows[timing]['step_nll'] + rows[timing]['duration_nll']
  return {'best_ngram': ngram, 'best_timing': timing,
          'baseline_note_nll': rows[ngram]['pitch_nll'] + timing_nll,
          'baseline_timing_nll': timing_nll}


def primes_and_continuations(test_chunks: list[dict[str, np.ndarray]], window_length: int,
                             num_pieces: int, num_notes: int) -> tuple[dict, list[dict]]:
  """Primes and the real continuations that follow them in the test pieces.

  Takes the chunks holding at least ``window_length + num_notes`` notes, and of those
  ``num_pieces`` evenly spaced in file order (all of them if there are fewer). Returns
  (``{feature: [pieces, window_length]}`` primes, list of real continuation notes dicts).
  """
  long_enough = [chunk for chunk in test_chunks
                 if len(chunk['pitch']) >= window_length + num_notes]
  if not long_enough:
    return {}, []
  chosen = np.unique(np.linspace(0, len(long_enough) - 1, num_pieces).round().astype(int))
  primes = {name: np.stack([long_enough[i][name][:window_length] for i in chosen])
            for name in constants.NOTE_FEATURES}
  real = [{name: long_enough[i][name][window_length:window_length + num_notes]
           for name in constants.NOTE_FEATURES} for i in chosen]
  return primes, real


def ngram_pieces(model: baselines.NGram, primes: dict, num_notes: int,
                 train_chunks: list[dict[str, np.ndarray]], window_length: int,
                 seed: int) -> list[dict]:
  """Pitches sampled from ``model`` after each prime, with the other features from training.

  Each note's step, duration and velocity are drawn (uniformly, with replacement) from the
  training targets.
  """
  rng = np.random.default_rng(seed)
  pitch = baselines.sample(model, primes['pitch'], num_notes, rng)
  timing = {name: np.concatenate([chunk[name][window_length:] for chunk in train_chunks])
            for name in ('step', 'duration', 'velocity')}
  drawn = rng.integers(0, len(timing['step']), size=pitch.shape)
  return [{'pitch': pitch[i], **{name: values[drawn[i]] for name, values in timing.items()}}
          for i in range(len(pitch))]


def model_sampling(num_notes: int, temperature: float, seed: int) -> sampling_lib.Sampling:
  """The model set's sampling: no top-k or top-p cut.

  So it samples the distribution the NLL measures.
  """
  return sampling_lib.Sampling(num_notes=num_notes, temperature=temperature,
                               top_k=constants.PITCHES, top_p=1.0, seed=seed)


def model_pieces(export, primes: dict, sampling: sampling_lib.Sampling) -> list[dict]:
  """The export's ``generate`` signature on ``primes``."""
  generated = export_client.generate(export, primes, sampling)
  return [{name: values[i] for name, values in generated.items()}
          for i in range(len(primes['pitch']))]


def read_scalars(log_dir: str) -> dict[str, dict[str, tuple[list[int], list[float]]]]:
  """TensorBoard scalars written by ``trainer.task`` under ``log_dir``.

  Returns ``{'train' | 'validation': {tag: (steps, values)}}``, each tag's points by step (a
  resumed run's later points replace earlier ones at the same step). Tags holding anything but a
  number (such as a model's config as text) are skipped.
  """
  curves = {}
  for run in ('train', 'validation'):
    run_dir = os.path.join(log_dir, run)
    if not tf.io.gfile.isdir(run_dir):
      continue
    events = event_accumulator.EventAccumulator(
        run_dir, size_guidance={event_accumulator.TENSORS: 0})
    events.Reload()
    curves[run] = {}
    for tag in events.Tags()['tensors']:
      points = {}
      for event in events.Tensors(tag):
        value = tf.make_ndarray(event.tensor_proto)
        if value.size == 1 and value.dtype.kind in 'fiu':  # not text (e.g. a model config)
          points[event.step] = float(value)
      if points:
        curves[run][tag] = (sorted(points), [points[step] for step in sorted(points)])
  return curves


def statistics_summary(comparisons: dict, pieces: int, sampling: sampling_lib.Sampling) -> dict:
  """The music statistics as ``evaluation.json`` holds them.

  How the sets were made, each generated set's OA and KLD per feature against the real set, and
  their means.
  """
  return {
      'pieces': pieces, 'notes': sampling.num_notes, 'seed': sampling.seed,
      'temperature': sampling.temperature,
      'features': {feature: {name: {'oa': comparison[feature]['oa'],
                                    'kld': comparison[feature]['kld']}
                             for name, comparison in comparisons.items()}
                   for feature in music_stats.FEATURES},
      'mean_oa': {name: float(np.mean([c[f]['oa'] for f in music_stats.FEATURES]))
                  for name, c in comparisons.items()},
      'mean_kld': {name: float(np.mean([c[f]['kld'] for f in music_stats.FEATURES]))
                   for name, c in comparisons.items()},
      # The weakest rhythm or timing feature: a set can match pitches well and still move
      # unlike music.
      'min_rhythm_oa': {name: float(min(c[f]['oa'] for f in music_stats.RHYTHM_FEATURES))
                        for name, c in comparisons.items()},
  }


def generated_statistics(export, primes: dict, real: list[dict], ngram: baselines.NGram,
                         train_chunks: list[dict], window_length: int,
                         sampling: sampling_lib.Sampling,
                         model_set: list[dict] | None = None) -> tuple[dict, dict, dict, dict]:
  """The model's and the n-gram's pieces after ``primes`` against the ``real`` continuations.

  ``model_set``: the model's pieces when drawn already (chosen among candidates, say); by
  default :func:`model_pieces` draws them with ``sampling``. Returns (sets, their features,
  their comparisons with the real set, ``results['statistics']``), or empty sets and the reason
  they were skipped when fewer than 3 real pieces are long enough.
  """
  if len(real) < 3:
    return {}, {}, {}, {
        'skipped': f'{len(real)} test chunks hold a window plus {sampling.num_notes} notes; at '
                   'least 3 are needed (try a smaller --num-notes)'}
  sets = {'real': real,
          'model': (model_pieces(export, primes, sampling) if model_set is None else model_set),
          'n-gram': ngram_pieces(ngram, primes, sampling.num_notes, train_chunks, window_length,
                                 sampling.seed)}
  features = {name: music_stats.set_features(pieces) for name, pieces in sets.items()}
  comparisons = {name: music_stats.compare_sets(features['real'], features[name])
                 for name in ('model', 'n-gram')}
  return sets, features, comparisons, statistics_summary(comparisons, len(real), sampling)


def evaluate(data_dir: str, export_dir: str, out_dir: str, num_pieces: int = 32,
             num_notes: int | None = None, temperature: float = 1.0, seed: int = 0,
             label_guidance: float = 1.0) -> dict:
  """Runs the whole evaluation, writes the report into ``out_dir``, returns its numbers.

  Raises:
    failures.RejectionError: ``bad_request``: the model set's sampling is out of range (checked
      before the export is loaded).
  """
  started = time.perf_counter()
  info = dataset_lib.load_info(data_dir)
  window_length = info['window_length']
  num_notes = num_notes or info['stride']
  if num_notes > info['stride']:
    raise ValueError(f'--num-notes {num_notes} is more than one stored chunk holds after its '
                     f"first window (the dataset's stride, {info['stride']})")
  sampling = model_sampling(num_notes, temperature, seed)
  sampling.check()
  # The pieces generated for each label (the style check) may be guided; the rest never is.
  label_sampling = dataclasses.replace(sampling, label_guidance=label_guidance)
  label_sampling.check()
  loaded = export_client.load_export(export_dir)
  export, labels = loaded.model, loaded.info['labels']
  # The model's label ids read the dataset's label names.
  info = {**info, 'labels': labels}
  train_chunks = dataset_lib.read_chunks(data_dir, info, 'train', labels)
  test_chunks = dataset_lib.read_chunks(data_dir, info, 'test', labels)
  fitted = fit_baselines(train_chunks, window_length)
  labelled = any(int(chunk[contract.LABEL_FEATURE]) != labels_lib.UNCONDITIONAL_ID
                 for chunk in test_chunks)
  rows, windows, per_label = likelihood(export, data_dir, info, fitted, by_label=labelled)
  best = best_baselines(rows)
  best_ngram = best['best_ngram']
  with tf.io.gfile.GFile(os.path.join(export_dir, export_contract.ASSETS_DIR,
                                      export_contract.ASSET_CONFIG)) as f:
    note_order = config_lib.from_yaml(f.read()).model.note_order
  results = {
      'data': data_dir, 'export': export_dir, 'test_windows': windows, 'note_order': note_order,
      'likelihood': rows, **best,
      'repeat_previous_eps': fitted['pitch']['repeat previous'].eps,
  }

  primes, real = primes_and_continuations(test_chunks, window_length, num_pieces, num_notes)
  sets, features, comparisons, results['statistics'] = generated_statistics(
      export, primes, real, fitted['pitch'][best_ngram], train_chunks, window_length, sampling)
  results['listening'] = listening.summary(sets, results['statistics'], seed)

  generated_by_label = {}
  if labelled:
    results['conditioning'] = {'likelihood': conditioning.label_rows(per_label, labels)}
    results['conditioning']['style'], generated_by_label = conditioning.style_evaluation(
        export, loaded.info, train_chunks, test_chunks, primes, label_sampling)

  model_dir = os.path.dirname(os.path.abspath(export_dir.rstrip('/')))
  log_dir = os.path.join(model_dir, 'logs')
  curves = read_scalars(log_dir) if tf.io.gfile.isdir(log_dir) else {}
  results['seconds'] = round(time.perf_counter() - started, 1)
  report_lib.write_report(out_dir, results, curves, comparisons, features, sets, primes,
                          generated_by_label)
  return results


def argument_parser() -> argparse.ArgumentParser:
  """The command's flags."""
  parser = argparse.ArgumentParser(
      description='Evaluate an export of trainer.task on the test split: pitch NLL, top-1/top-5 '
      'accuracy, step and duration NLL on a 10 ms grid and the note NLL, beside unigram, '
      'Kneser-Ney 2- to 5-gram, repeat-previous and binned timing-histogram baselines fitted on '
      'the training split in the same run; then statistics '
      '(Yang & Lerch 2018) of pieces generated from test primes by the model and by the best '
      'n-gram, against the real continuations. Writes report.md, evaluation.json and PNG plots.')
  parser.add_argument('--data', required=True,
                      help='dataset folder written by beam_pipelines.preprocess (its test split '
                      'is scored, its training split fits the baselines)')
  parser.add_argument('--model', required=True, help='export folder (MODEL_DIR/export)')
  parser.add_argument('--out', help='report folder (default: MODEL_DIR/report, beside the '
                      'export; training curves are read from MODEL_DIR/logs)')
  parser.add_argument('--num-pieces', type=int, default=32,
                      help='primes, hence pieces per generated set (default %(default)s)')
  parser.add_argument('--num-notes', type=int,
                      help="notes per generated piece and real continuation (default and "
                      "maximum: the dataset's stride, 192 unless preprocessing chose another)")
  parser.add_argument('--temperature', type=float, default=1.0,
                      help='sampling temperature of the model set (default %(default)s)')
  parser.add_argument('--seed', type=int, default=0,
                      help='seed of both generated sets (default %(default)s)')
  parser.add_argument('--label-guidance', type=float, default=1.0,
                      help='label guidance of the pieces generated for each label in the style '
                      'check (serving.generate --label-guidance; default %(default)s)')
  return parser


def main(argv: list[str] | None = None) -> int:
  """The ``python -m evaluation.evaluate`` command; returns its exit status."""
  parser = argument_parser()
  args = parser.parse_args(argv)
  if args.num_pieces < 3:
    parser.error('--num-pieces must be >= 3 (intra-set distances need pairs)')
  if args.num_notes is not None and args.num_notes < 4:
    parser.error('--num-notes must be >= 4')
  out_dir = args.out or os.path.join(
      os.path.dirname(os.path.abspath(args.model.rstrip('/'))), 'report')
  try:
    results = evaluate(args.data, args.model, out_dir, args.num_pieces, args.num_notes,
                       args.temperature, args.seed, args.label_guidance)
  except (ValueError, FileNotFoundError, failures.RejectionError) as e:
    parser.exit(2, f'{parser.prog}: error: {e}\n')
  for line in report_lib.headline_lines(results):
    print(line)
  print(f'report: {os.path.join(out_dir, report_lib.REPORT_FILE)}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
