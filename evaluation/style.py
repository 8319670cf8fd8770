"""A style classifier: tells composers apart from objective per-piece music statistics.

A model conditioned on a composer label should write pieces in that composer's style. To check
it, a classifier is fitted on real training pieces of every label (:func:`fit`), scored on real
test pieces (:func:`score`; the ceiling: how well these statistics tell the composers apart at
all) and then on the pieces generated for each label: the closer the generated pieces' accuracy
comes to the real ones', the more each label's pieces sound like that composer (to the
classifier). :func:`plot_confusion` draws what :func:`score` returns.

A piece's features are every vector of ``partita.music_stats.piece_features`` concatenated in the
order of ``music_stats.FEATURES`` (the order ``piece_features`` returns them in, documented
there; 185 numbers), so column ``j`` means the same in every matrix. No TensorFlow here: plain
numpy, scikit-learn and matplotlib on the Agg canvas (as ``evaluation.report`` draws).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import io
import os

from matplotlib import figure as figure_lib
from matplotlib.backends import backend_agg
import numpy as np
from sklearn import linear_model, pipeline, preprocessing

from partita import atomic, music_stats

# Inverse L2 strength on standardised features. Corpora give tens to hundreds of pieces per
# composer for 185 correlated features (the 144 transition shares above all, noisy in short
# pieces), so a tighter prior than scikit-learn's default of 1 leans against memorising the
# training pieces, which would make the real test accuracy (the ceiling) an underestimate.
REGULARISATION_C = 0.1
# lbfgs converges in under 20 iterations on the tests' synthetic corpora; the headroom is for
# real corpora, where stopping early would leave a ConvergenceWarning and a half-fitted model.
MAX_ITER = 5000


def feature_matrix(pieces: Sequence[Mapping[str, np.ndarray]]) -> np.ndarray:
  """``[pieces, features]``: ``music_stats.feature_vector`` of each piece, one row each."""
  if not len(pieces):
    raise ValueError('no pieces to compute features of')
  return np.stack([music_stats.feature_vector(piece) for piece in pieces])


def fit(pieces: Sequence[Mapping[str, np.ndarray]], labels: Sequence[str],
        seed: int = 0) -> pipeline.Pipeline:
  """A standardise-then-multinomial-logistic-regression classifier of ``labels`` (one per piece).

  ``seed`` goes to the regression's ``random_state``; lbfgs itself draws nothing, so the fit is
  the same on every run whatever the seed, and the seed matters only if the solver changes.
  """
  labels = list(labels)
  if len(labels) != len(pieces):
    raise ValueError(f'{len(pieces)} pieces but {len(labels)} labels')
  if len(set(labels)) < 2:
    raise ValueError(f'a style classifier needs pieces of at least 2 distinct labels, got '
                     f'{sorted(set(labels))}')
  classifier = pipeline.make_pipeline(
      # Unit variance per feature, so that the one L2 penalty weighs a share and a pitch range
      # alike (and no feature's units decide how much it may count).
      preprocessing.StandardScaler(),
      # lbfgs fits one multinomial (softmax) model over all labels. 'balanced' weighs each
      # piece by 1 / its label's frequency: composer corpora are very unbalanced (Bach or
      # Chopin can have ten times the pieces of others), and unweighted the classifier would
      # learn to answer the big composers, scoring well on real test pieces by the prior alone
      # and calling generated pieces of small composers the big ones.
      linear_model.LogisticRegression(C=REGULARISATION_C, class_weight='balanced',
                                      solver='lbfgs', max_iter=MAX_ITER, random_state=seed))
  return classifier.fit(feature_matrix(pieces), np.asarray(labels))


def _indices(labels: Sequence[str], index: Mapping[str, int], what: str) -> np.ndarray:
  unknown = sorted({str(label) for label in labels if label not in index})
  if unknown:
    raise ValueError(f'{what} labels {unknown} are not among the label names {list(index)}')
  return np.array([index[label] for label in labels], dtype=np.int64)


def score(classifier: pipeline.Pipeline, pieces: Sequence[Mapping[str, np.ndarray]],
          labels: Sequence[str], label_names: Sequence[str]) -> dict:
  """How well ``classifier`` names the labels of ``pieces``, as JSON-ready numbers.

  ``confusion[i][j]`` counts pieces of label ``label_names[i]`` predicted ``label_names[j]``.
  ``chance`` is 1 / the number of labels: the rate of guessing at random, the reference when
  every label has as many pieces (generated sets). ``majority_rate`` is the share of the
  commonest true label here: the rate of always answering it, the reference for unbalanced
  (real) sets. ``per_label_accuracy`` is each label's recall, None for a label with no piece.
  """
  label_names = list(label_names)
  labels = list(labels)
  if len(set(label_names)) != len(label_names):
    raise ValueError(f'label names repeat: {label_names}')
  if len(labels) != len(pieces):
    raise ValueError(f'{len(pieces)} pieces but {len(labels)} labels')
  index = {name: i for i, name in enumerate(label_names)}
  true = _indices(labels, index, 'true')
  predicted = _indices(list(classifier.predict(feature_matrix(pieces))), index, 'predicted')
  confusion = np.zeros((len(label_names), len(label_names)), dtype=np.int64)
  np.add.at(confusion, (true, predicted), 1)
  totals = confusion.sum(axis=1)
  return {
      'labels': [str(name) for name in label_names],
      'confusion': confusion.tolist(),
      'accuracy': float(np.trace(confusion) / len(true)),
      'pieces': len(true),
      'chance': 1.0 / len(label_names),
      'majority_rate': float(totals.max() / len(true)),
      'per_label_accuracy': {
          str(name): float(confusion[i, i] / totals[i]) if totals[i] else None
          for i, name in enumerate(label_names)},
  }


def plot_confusion(result: Mapping, path: str | os.PathLike[str], title: str) -> None:
  """Writes a PNG heat map of :func:`score`'s confusion matrix to ``path``, atomically.

  Colours are shares of each true label's pieces (rows normalised), so a small label's row is
  as readable as a big one's; each cell is annotated with its count of pieces.
  """
  names = list(result['labels'])
  confusion = np.asarray(result['confusion'], dtype=np.float64)
  totals = confusion.sum(axis=1, keepdims=True)
  shares = np.divide(confusion, totals, out=np.zeros_like(confusion), where=totals > 0)
  size = 2.0 + 0.6 * len(names)
  figure = figure_lib.Figure(figsize=(size + 1.0, size))
  backend_agg.FigureCanvasAgg(figure)
  axes = figure.add_subplot(1, 1, 1)
  image = axes.imshow(shares, cmap='Blues', vmin=0.0, vmax=1.0)
  figure.colorbar(image, ax=axes, label='share of the true label\'s pieces')
  for (row, column), count in np.ndenumerate(confusion):
    axes.text(column, row, f'{int(count)}', ha='center', va='center',
              color='white' if shares[row, column] > 0.5 else 'black')
  axes.set_xticks(range(len(names)), names, rotation=45, ha='right')
  axes.set_yticks(range(len(names)), names)
  axes.set_xlabel('predicted label')
  axes.set_ylabel('true label')
  axes.set_title(f"{title}\naccuracy {result['accuracy']:.1%} (chance {result['chance']:.1%}, "
                 f"{result['pieces']} pieces)")
  figure.tight_layout()
  buffer = io.BytesIO()
  figure.savefig(buffer, format='png', dpi=80)
  atomic.write_bytes(path, buffer.getvalue())
