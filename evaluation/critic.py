r"""Fit the critic that chooses among candidates, and add it to an export's assets.

    python -m evaluation.critic --data DATA_DIR --model MODEL_DIR/export [--pieces 128] \
        [--num-notes 192] [--seed 0] [--temperature 1.0]

The critic (``serving.critic``) scores a generated continuation by how real it looks. It is
fitted on the model's own output against real music, in two stages on two splits:

1. **training split**: ``--pieces`` chunks, spread over the split, each cut into a prime window
   and its real continuation of ``--num-notes`` notes; the export continues every prime (at
   ``--temperature``, no top-k or top-p cut, guidance 1, with the piece's label). A logistic
   regression learns to tell the real continuations from the model's on the 24 plain features
   of ``partita.listening`` (the two-sample classifier), and a style classifier
   (``evaluation.style.fit``) learns the labels from the real ones.
2. **validation split**: the same for other pieces. Each real and generated continuation gets
   the critic's features (``serving.critic.FEATURES``: the two-sample log-odds, the style
   classifier's log-probability of its label, the export's mean pitch log-likelihood, its
   on-grid share, key stability and scale consistency), and a logistic regression over them
   learns to tell real from generated: its weights are the critic's. It is fitted twice, with
   the label's feature (for labelled requests; pieces of a known label) and without (every
   piece).

The critic is written to ``EXPORT/assets/critic.json`` (``export_contract.ASSET_CRITIC``),
where ``serving.generate --candidates N`` and the Beam job read it; its ``fit`` section holds
how it was fitted and the combination's held-out accuracy on validation (5-fold, or fewer
folds with fewer pieces). Nothing else in the export changes.

Fit it at the temperature you will generate at. A critic learns what sets the model's pieces
apart at the temperature it saw, and pushes its choices the other way: fitted at 1, where the
pieces stray out of key, it prefers the most in-key candidates, which at 0.8, where the pieces
already settle on too few pitch classes, makes them less like real music, not more
(docs/experiments.md, "The critic at the temperature it judges").
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import numpy as np
from sklearn import linear_model, model_selection, pipeline, preprocessing

from evaluation import evaluate
from evaluation import style as style_lib
from partita import atomic, constants, contract, export_contract, failures, listening
from partita import dataset as dataset_lib
from partita import labels as labels_lib
from serving import critic as critic_lib
from serving import export_client

PIECES = 128
NUM_NOTES = 192
FOLDS = 5  # or fewer, when a set has fewer pieces
MIN_PIECES = 2  # real and generated validation pieces each, to fit and hold out
# Inverse L2 strength on standardised features, scikit-learn's default: the critic's
# regressions see a few hundred pieces and at most 24 features.
REGULARISATION_C = 1.0


def split_pieces(data_dir: str, info: dict, split: str, count: int,
                 num_notes: int) -> tuple[dict[str, np.ndarray], list[dict], list[int]]:
  """``count`` pieces of ``split`` spread over it: primes, real continuations and label ids.

  Each is a chunk of at least a window and ``num_notes`` notes.

  Raises:
    ValueError: the split has no chunk that long.
  """
  window_length = info['window_length']
  chunks = [chunk for chunk in dataset_lib.read_chunks(data_dir, info, split, info['labels'])
            if len(chunk['pitch']) >= window_length + num_notes]
  if not chunks:
    raise ValueError(f'the {split} split has no chunk of {window_length + num_notes} notes '
                     f'(a window and --num-notes {num_notes})')
  chosen = np.unique(np.linspace(0, len(chunks) - 1, count).round().astype(int))
  primes = {name: np.stack([chunks[i][name][:window_length] for i in chosen])
            for name in constants.NOTE_FEATURES}
  real = [{name: chunks[i][name][window_length:window_length + num_notes]
           for name in constants.NOTE_FEATURES} for i in chosen]
  return primes, real, [int(chunks[i][contract.LABEL_FEATURE]) for i in chosen]


def model_continuations(export: export_client.Export, primes: dict[str, np.ndarray],
                        label_ids: list[int], num_notes: int, seed: int,
                        temperature: float) -> list[dict]:
  """The export's continuation of each prime, with its label, at ``temperature``."""
  sampling = evaluate.model_sampling(num_notes, temperature, seed)
  generated = export_client.generate(export.model, primes, sampling, labels=label_ids)
  return [{name: values[i] for name, values in generated.items()}
          for i in range(len(label_ids))]


def linear(classifier: pipeline.Pipeline) -> critic_lib.Linear:
  """A fitted standardise-then-logistic-regression pipeline as a ``serving.critic.Linear``."""
  scaler, regression = classifier[0], classifier[-1]
  return critic_lib.Linear(tuple(scaler.mean_.tolist()), tuple(scaler.scale_.tolist()),
                           tuple(tuple(row) for row in regression.coef_.tolist()),
                           tuple(regression.intercept_.tolist()))


def logistic(seed: int) -> pipeline.Pipeline:
  """The critic's regressions: standardise, then an L2 logistic regression."""
  return pipeline.make_pipeline(
      preprocessing.StandardScaler(),
      linear_model.LogisticRegression(C=REGULARISATION_C, max_iter=5000, random_state=seed))


def label_names(info: dict, label_ids: list[int]) -> list[str | None]:
  """Each id's label name; None for the unconditional id (a piece of no known label)."""
  vocabulary = info['labels']['vocabulary']
  return [None if label_id == labels_lib.UNCONDITIONAL_ID else vocabulary[label_id]
          for label_id in label_ids]


def fit_classifiers(export: export_client.Export, data_dir: str, info: dict, pieces: int,
                    num_notes: int, seed: int, temperature: float) -> critic_lib.Critic:
  """Stage 1, on the training split: the critic's two-sample and style classifiers.

  Returns a critic without its combinations (``labelled`` and ``unlabelled`` None), which
  computes features (``Critic.features``) but not scores.
  """
  primes, real, label_ids = split_pieces(data_dir, info, 'train', pieces, num_notes)
  generated = model_continuations(export, primes, label_ids, num_notes, seed, temperature)
  targets = np.repeat([1, 0], [len(real), len(generated)])
  two_sample = logistic(seed).fit(listening.feature_matrix(real + generated), targets)
  names = label_names(info, label_ids)
  known = [i for i, name in enumerate(names) if name is not None]
  style, style_labels = None, ()
  if len({names[i] for i in known}) >= 2:
    style = style_lib.fit([real[i] for i in known], [names[i] for i in known], seed)
    style_labels = tuple(str(name) for name in style[-1].classes_)
  return critic_lib.Critic(linear(two_sample), None if style is None else linear(style),
                           style_labels, None, None)


def fit_combinations(features: np.ndarray, targets: np.ndarray,
                     seed: int) -> tuple[critic_lib.Linear, critic_lib.Linear, dict]:
  """Stage 2: the labelled and unlabelled combinations of ``features`` (real: target 1).

  Returns them and their held-out accuracies. With no labelled piece, the labelled combination
  is the unlabelled one with a weight of 0 on the label's feature.

  Raises:
    ValueError: fewer than MIN_PIECES real or generated pieces.
  """
  labelled_rows = ~np.isnan(features[:, critic_lib.FEATURES.index('label_log_prob')])
  unlabelled_columns = [critic_lib.FEATURES.index(name)
                        for name in critic_lib.UNLABELLED_FEATURES]
  combinations, held_out = {}, {}
  for name, rows, columns in (
      ('labelled', labelled_rows, list(range(len(critic_lib.FEATURES)))),
      ('unlabelled', np.ones(len(features), bool), unlabelled_columns)):
    x, y = features[rows][:, columns], targets[rows]
    smaller = min(np.bincount(y, minlength=2))
    if smaller < MIN_PIECES:
      continue
    combinations[name] = linear(logistic(seed).fit(x, y))
    folds = model_selection.StratifiedKFold(min(FOLDS, smaller), shuffle=True,
                                            random_state=seed)
    held_out[name] = float(np.mean(
        model_selection.cross_val_predict(logistic(seed), x, y, cv=folds) == y))
  if 'unlabelled' not in combinations:
    raise ValueError(f'too few validation pieces to fit the critic ({int(targets.sum())} '
                     f'real); it needs at least {MIN_PIECES}')
  labelled = combinations.get('labelled') or _with_zero_weight(
      combinations['unlabelled'], critic_lib.FEATURES.index('label_log_prob'))
  return labelled, combinations['unlabelled'], held_out


def fit(export: export_client.Export, data_dir: str, pieces: int = PIECES,
        num_notes: int = NUM_NOTES, seed: int = 0,
        temperature: float = critic_lib.DEFAULT_TEMPERATURE) -> critic_lib.Critic:
  """The critic of ``export``, fitted on ``data_dir``'s training and validation splits.

  ``temperature``: that of the model's continuations it learns from, which should be that of
  the candidates it will choose among (see the module docstring).
  """
  info = dataset_lib.load_info(data_dir)
  started = time.perf_counter()
  classifiers = fit_classifiers(export, data_dir, info, pieces, num_notes, seed, temperature)
  print(f"critic: the classifiers fitted on the training split's pieces and the model's "
        f'continuations of them ({time.perf_counter() - started:.0f} s)', flush=True)
  primes, real, label_ids = split_pieces(data_dir, info, 'validation', pieces, num_notes)
  generated = model_continuations(export, primes, label_ids, num_notes, seed + 1, temperature)
  both = real + generated
  likelihood = critic_lib.pitch_log_likelihood(
      export.model, {name: np.concatenate([values, values]) for name, values in primes.items()},
      both, label_ids * 2)
  features = classifiers.features(both, label_names(info, label_ids) * 2, likelihood)
  labelled, unlabelled, held_out = fit_combinations(
      features, np.repeat([1, 0], [len(real), len(generated)]), seed)
  weights = {name: dict(zip(columns, (np.asarray(line.weights[0])
                                      / np.asarray(line.scale)).tolist(), strict=True))
             for name, line, columns in (('labelled', labelled, critic_lib.FEATURES),
                                         ('unlabelled', unlabelled,
                                          critic_lib.UNLABELLED_FEATURES))}
  return dataclasses.replace(
      classifiers, labelled=labelled, unlabelled=unlabelled,
      fit={'data': data_dir, 'pieces_per_split': len(real), 'num_notes': num_notes,
           'seed': seed, 'temperature': temperature, 'validation_accuracy_held_out': held_out,
           'weights_per_unit': weights, 'seconds': round(time.perf_counter() - started, 1)})


def _with_zero_weight(line: critic_lib.Linear, position: int) -> critic_lib.Linear:
  """``line`` with a feature of weight 0 inserted at ``position`` (mean 0, scale 1)."""
  def insert(values, value):
    return tuple(values[:position]) + (value,) + tuple(values[position:])
  return critic_lib.Linear(insert(line.mean, 0.0), insert(line.scale, 1.0),
                           tuple(insert(row, 0.0) for row in line.weights), line.bias)


def save(critic: critic_lib.Critic, export_dir: str) -> str:
  """Writes ``critic`` into the export's assets (atomically, local or ``gs://``); its path."""
  path = os.path.join(export_dir, export_contract.ASSETS_DIR, export_contract.ASSET_CRITIC)
  atomic.write_bytes(path, critic.to_json().encode())
  return path


def argument_parser() -> argparse.ArgumentParser:
  """The command's flags."""
  parser = argparse.ArgumentParser(
      description="Fit the critic that serving.generate --candidates uses to choose among a "
      "piece's candidates, on the export's own continuations against real music (training "
      'split: the two-sample and style classifiers; validation split: their combination), and '
      "write it into the export's assets as critic.json.")
  parser.add_argument('--data', required=True, help='the dataset folder the model trained on')
  parser.add_argument('--model', required=True, help='export folder (MODEL_DIR/export)')
  parser.add_argument('--pieces', type=int, default=PIECES,
                      help='pieces per split, real and generated each (default %(default)s)')
  parser.add_argument('--num-notes', type=int, default=NUM_NOTES,
                      help='notes per continuation (default %(default)s)')
  parser.add_argument('--seed', type=int, default=0, help='sampling seed (default 0)')
  parser.add_argument('--temperature', type=float, default=critic_lib.DEFAULT_TEMPERATURE,
                      help="the model's sampling temperature for the continuations the critic "
                      'learns from: the temperature you will generate at (default %(default)s)')
  return parser


def main(argv: list[str] | None = None) -> int:
  """The ``python -m evaluation.critic`` command; returns its exit status."""
  parser = argument_parser()
  args = parser.parse_args(argv)
  if args.pieces < MIN_PIECES or args.num_notes < 1:
    parser.error(f'--pieces must be at least {MIN_PIECES} and --num-notes at least 1')
  try:
    evaluate.model_sampling(args.num_notes, args.temperature, args.seed).check()
    export = export_client.load_export(args.model)
    critic = fit(export, args.data, args.pieces, args.num_notes, args.seed, args.temperature)
  except (failures.RejectionError, ValueError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  path = save(critic, args.model)
  accuracy = critic.fit['validation_accuracy_held_out']
  print('critic: tells real from generated validation continuations at '
        + ', '.join(f'{name} {value:.1%}' for name, value in accuracy.items())
        + f' (held out); wrote {path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
