"""A two-sample test by classifier: can a random forest tell one set of pieces from another?

Each piece becomes the plain features of ``partita.listening.feature_vector`` (24 numbers: sorted
pitch-class shares, pitch statistics, notes per onset, log-step and log-duration statistics,
intervals, onset rate, on-grid share). A scikit-learn ``RandomForestClassifier``
(:data:`TREES` trees, a fixed ``random_state``) learns to tell the two sets apart, scored by
stratified k-fold cross-validation: every piece is predicted once, by the forest fitted on the
folds without it, and the accuracy is the share of pieces predicted right (pooled over folds).
50% (with sets of equal size) means the forest cannot tell them apart; 100% means every piece
gives its set away.

With few pieces the test degrades rather than fails: the folds are :data:`FOLDS`, or fewer when
the smaller set has fewer pieces than that (each fold needs a piece of each set), down to 2; with
fewer than 2 pieces in either set there is nothing to hold out and the result says ``skipped``
with the reason. With so few pieces the accuracy is coarse (4 + 4 pieces give it in steps of
12.5%) and noisy: read it with its ``pieces`` and its ``standard_error``, the binomial
``sqrt(accuracy * (1 - accuracy) / pieces)`` (about 5 points on 32 + 32 pieces at 80%, as large
as the spread between sampling seeds of one model: docs/experiments.md, "What the demo's
two-sample test still reads, and eight remedies that do not change it"). When the sets differ in
size, ``chance`` (the share of the larger set, what always answering it scores) is the reference
instead of 50%.

:func:`real_halves` is the floor: the real pieces split by position (even against odd index)
and told apart the same way, which any test of generated pieces should be read against (on a
small set it is rarely exactly 50%).

No TensorFlow here: plain numpy and scikit-learn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from sklearn import ensemble, model_selection

from partita import listening

TREES = 200
FOLDS = 5
MIN_PIECES = 2  # per set: the fewest that leave a piece of each set in every one of 2 folds


def accuracy(first: Sequence[Mapping[str, np.ndarray]], second: Sequence[Mapping[str, np.ndarray]],
             seed: int = 0) -> dict:
  """How well a random forest tells ``first``'s pieces from ``second``'s, held out.

  Returns ``{'accuracy', 'standard_error', 'folds', 'pieces': [len(first), len(second)],
  'chance'}``, or ``{'skipped': reason, 'pieces'}`` when either set has fewer than
  :data:`MIN_PIECES` pieces.
  ``seed`` fixes the folds' shuffle and the forest, so the result is the same on every run.
  """
  pieces = [len(first), len(second)]
  if min(pieces) < MIN_PIECES:
    return {'skipped': f'sets of {pieces[0]} and {pieces[1]} pieces; a two-sample test needs '
                       f'at least {MIN_PIECES} in each', 'pieces': pieces}
  features = np.concatenate([listening.feature_matrix(first), listening.feature_matrix(second)])
  labels = np.repeat([0, 1], pieces)
  folds = min(FOLDS, *pieces)
  splitter = model_selection.StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
  forest = ensemble.RandomForestClassifier(n_estimators=TREES, random_state=seed, n_jobs=1)
  predicted = model_selection.cross_val_predict(forest, features, labels, cv=splitter)
  right = float(np.mean(predicted == labels))
  return {'accuracy': right, 'standard_error': float(np.sqrt(right * (1 - right) / sum(pieces))),
          'folds': folds, 'pieces': pieces, 'chance': max(pieces) / sum(pieces)}


def real_halves(real: Sequence[Mapping[str, np.ndarray]], seed: int = 0) -> dict:
  """:func:`accuracy` of the real pieces at even indices against those at odd indices.

  The floor: two disjoint samples of the same music.
  """
  return accuracy(list(real[0::2]), list(real[1::2]), seed)
