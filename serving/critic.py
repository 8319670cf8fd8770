"""The critic: how much a generated piece sounds like its corpus, one number per candidate.

``serving.choosing`` draws several candidates per requested piece and keeps the one the critic
scores highest. The critic reads six features of a candidate (:data:`FEATURES`):

* ``real_log_odds``: the log-odds that the piece is real, by a two-sample classifier (a
  logistic regression on the 24 plain features of ``partita.listening.feature_vector``) fitted
  to tell real continuations of training pieces from the model's own continuations of them;
* ``label_log_prob``: the log-probability of the requested label by a style classifier fitted
  on the real training pieces (``partita.music_stats.feature_vector``; the one
  ``evaluation.style`` fits); only for a labelled request;
* ``pitch_log_likelihood``: the export's own mean log-probability of the continuation's
  pitches, each given the window before it (its ``predict_next``, the true notes before);
* ``on_grid_share`` and ``key_stability`` (``partita.listening``);
* ``scale_consistency``: the share of its notes in their best-fitting diatonic scale
  (``partita.music_stats``), the measure whose overlapping area the evaluation reports. Without
  it, a critic fitted at temperature 0.8 kept pieces less in key than single draws (its weight
  on the likelihood is negative there, and nothing else in it names the scale):
  docs/experiments.md, "A critic that hears the scale".

A logistic regression over them (``labelled`` for a request with a label, ``unlabelled``
without ``label_log_prob``), fitted on the validation split to tell real continuations from the
model's, turns them into the critic's score: its log-odds that the candidate is real. So every
weight is chosen on data: the classifiers on the training split, their combination on the
validation split, none by hand. ``python -m evaluation.critic`` fits it and saves it as JSON in
the export's assets (``export_contract.ASSET_CRITIC``); :meth:`Critic.from_json` reads it back.

No scikit-learn here: each fitted model is its standardisation and its linear weights, applied
in numpy. Only :func:`pitch_log_likelihood` runs TensorFlow (the export's ``predict_next``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
import json

import numpy as np

from partita import constants, export_contract, listening, music_stats

FEATURES = ('real_log_odds', 'label_log_prob', 'pitch_log_likelihood', 'on_grid_share',
            'key_stability', 'scale_consistency')
UNLABELLED_FEATURES = tuple(name for name in FEATURES if name != 'label_log_prob')
# The temperature of the continuations a critic is fitted on unless told otherwise, and that of
# every critic fitted before its ``fit`` recorded one.
DEFAULT_TEMPERATURE = 1.0
# Windows per predict_next call when scoring candidates.
SCORE_BATCH = 1024


@dataclasses.dataclass(frozen=True)
class Linear:
  """A fitted linear model on standardised features: ``((x - mean) / scale) @ weights.T + bias``.

  ``weights`` is ``[outputs, features]``: one row for a binary model (the log-odds of its second
  class), one per class for a multinomial one.
  """
  mean: tuple[float, ...]
  scale: tuple[float, ...]
  weights: tuple[tuple[float, ...], ...]
  bias: tuple[float, ...]

  def decision(self, features: np.ndarray) -> np.ndarray:
    """``[pieces, outputs]`` decision values of ``[pieces, features]``."""
    standard = (np.asarray(features, np.float64) - np.asarray(self.mean)) / np.asarray(self.scale)
    return standard @ np.asarray(self.weights).T + np.asarray(self.bias)

  def log_probabilities(self, features: np.ndarray) -> np.ndarray:
    """``[pieces, classes]`` log-probabilities (two classes for a binary model)."""
    decision = self.decision(features)
    if decision.shape[1] == 1:
      decision = np.concatenate([np.zeros_like(decision), decision], axis=1)
    return decision - np.logaddexp.reduce(decision, axis=1, keepdims=True)


@dataclasses.dataclass(frozen=True)
class Critic:
  """The fitted critic (see the module docstring)."""
  two_sample: Linear  # on listening.feature_vector; class 1 is real
  style: Linear | None  # on music_stats.feature_vector, classes style_labels; None: no labels
  style_labels: tuple[str, ...]
  labelled: Linear  # on FEATURES; class 1 is real
  unlabelled: Linear  # on UNLABELLED_FEATURES
  # How it was fitted and how well it separates real from generated (for the reader).
  fit: dict = dataclasses.field(default_factory=dict)

  def to_json(self) -> str:
    """The critic as the JSON the export's assets hold."""
    return json.dumps(dataclasses.asdict(self), indent=1)

  @classmethod
  def from_json(cls, text: str) -> Critic:
    """The critic :meth:`to_json` wrote."""
    fields = json.loads(text)

    def linear(value):
      return None if value is None else Linear(
          tuple(value['mean']), tuple(value['scale']),
          tuple(tuple(row) for row in value['weights']), tuple(value['bias']))

    return cls(linear(fields['two_sample']), linear(fields['style']),
               tuple(fields['style_labels']), linear(fields['labelled']),
               linear(fields['unlabelled']), fields.get('fit', {}))

  def features(self, continuations: Sequence[Mapping[str, np.ndarray]],
               labels: Sequence[str | None], pitch_log_likelihoods: np.ndarray) -> np.ndarray:
    """``[pieces, len(FEATURES)]``: each continuation's features.

    ``labels`` are the requested labels by name (None: unlabelled; ``label_log_prob`` is then
    NaN, and :meth:`scores` does not read it).
    """
    real = self.two_sample.decision(listening.feature_matrix(continuations))[:, 0]
    label_log_prob = np.full(len(continuations), np.nan)
    labelled = [i for i, label in enumerate(labels) if label in self.style_labels]
    if labelled and self.style is not None:
      style = self.style.log_probabilities(np.stack(
          [music_stats.feature_vector(continuations[i]) for i in labelled]))
      columns = [self.style_labels.index(labels[i]) for i in labelled]
      label_log_prob[labelled] = style[np.arange(len(labelled)), columns]
    return np.stack([real, label_log_prob, np.asarray(pitch_log_likelihoods, np.float64),
                     [listening.on_grid_share(piece) for piece in continuations],
                     [listening.key_stability(piece) for piece in continuations],
                     [music_stats.scale_consistency(piece['pitch']) for piece in continuations]],
                    axis=1)

  def mismatch(self) -> str | None:
    """Why this version cannot score with this critic (None: it can).

    A critic fitted by an older version combines another set of features than :data:`FEATURES`.
    """
    widths = len(self.labelled.mean), len(self.unlabelled.mean)
    if widths == (len(FEATURES), len(UNLABELLED_FEATURES)):
      return None
    return (f'it combines {widths[0]} features, and this version scores {len(FEATURES)} '
            f'({", ".join(FEATURES)})')

  def scores(self, features: np.ndarray) -> np.ndarray:
    """The critic's log-odds that each piece is real, from :meth:`features`."""
    labelled = ~np.isnan(features[:, FEATURES.index('label_log_prob')])
    unlabelled_columns = [FEATURES.index(name) for name in UNLABELLED_FEATURES]
    scores = np.empty(len(features))
    if labelled.any():
      scores[labelled] = self.labelled.decision(features[labelled])[:, 0]
    if (~labelled).any():
      scores[~labelled] = self.unlabelled.decision(
          features[~labelled][:, unlabelled_columns])[:, 0]
    return scores


def pitch_log_likelihood(model, primes: Mapping[str, np.ndarray],
                         continuations: Sequence[Mapping[str, np.ndarray]],
                         label_ids: Sequence[int]) -> np.ndarray:
  """Each continuation's mean log-probability of its pitches under the export ``model``.

  Each pitch is scored by ``predict_next`` on the window of the notes before it (the prime's
  last notes, then the continuation's own), given its label id. ``primes`` are ``[pieces,
  window]`` note arrays; a continuation with no notes scores 0.
  """
  import tensorflow as tf  # deferred: the critic's numpy parts need none
  window_length = primes['pitch'].shape[1]
  windows = {name: [] for name in constants.NOTE_FEATURES}
  targets = {name: [] for name in ('pitch', 'step', 'duration')}
  owners, labels = [], []
  for piece, continuation in enumerate(continuations):
    notes = len(continuation['pitch'])
    sequence = {name: np.concatenate([primes[name][piece], continuation[name]])
                for name in constants.NOTE_FEATURES}
    for name in constants.NOTE_FEATURES:
      windows[name].append(np.lib.stride_tricks.sliding_window_view(
          sequence[name], window_length)[:notes])
    for name in targets:
      targets[name].append(continuation[name])
    owners.append(np.full(notes, piece))
    labels.append(np.full(notes, label_ids[piece]))
  windows = {name: np.concatenate(values) for name, values in windows.items()}
  targets = {name: np.concatenate(values) for name, values in targets.items()}
  owners, labels = np.concatenate(owners), np.concatenate(labels)
  predict_next = getattr(model, export_contract.PREDICT_NEXT)
  log_probs = []
  for start in range(0, len(owners), SCORE_BATCH):
    rows = slice(start, start + SCORE_BATCH)
    outputs = predict_next(
        **{name: tf.constant(values[rows], tf.int32 if name == 'pitch' else tf.float32)
           for name, values in windows.items()},
        **{f'next_{name}': tf.constant(values[rows], tf.int32 if name == 'pitch' else tf.float32)
           for name, values in targets.items()},
        label=tf.constant(labels[rows], tf.int32))
    log_softmax = tf.nn.log_softmax(tf.cast(outputs['pitch_logits'], tf.float64)).numpy()
    log_probs.append(log_softmax[np.arange(len(log_softmax)), targets['pitch'][rows]])
  log_probs = np.concatenate(log_probs) if log_probs else np.zeros(0)
  totals = np.bincount(owners, weights=log_probs, minlength=len(continuations))
  counts = np.bincount(owners, minlength=len(continuations))
  return totals / np.maximum(counts, 1)
