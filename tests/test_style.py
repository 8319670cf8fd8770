"""The style classifier on synthetic composers whose statistics differ by construction."""

import json
import os

import numpy as np
import pytest

from evaluation import style
from partita import music_stats

# Each synthetic composer: the pitch range it draws from (low, high inclusive), its step and
# duration in seconds. Steps vary by +-20 % per note, so no two pieces are alike.
COMPOSERS = {
    'low_slow': ((36, 50), 0.5),
    'high_fast': ((70, 90), 0.1),
    'middle_chords': ((55, 68), 0.25),
}
NAMES = list(COMPOSERS)
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def synthetic_piece(name: str, rng: np.random.Generator, notes: int = 200) -> dict:
  (low, high), step = COMPOSERS[name]
  steps = step * rng.uniform(0.8, 1.2, notes)
  if name == 'middle_chords':
    steps[1::3] = steps[2::3] = 0.0  # three-note chords
  return {'pitch': rng.integers(low, high + 1, notes), 'step': steps,
          'duration': steps.max() * np.ones(notes), 'velocity': np.full(notes, 80)}


def corpus(counts: dict[str, int], seed: int) -> tuple[list[dict], list[str]]:
  rng = np.random.default_rng(seed)
  labels = [name for name, count in counts.items() for _ in range(count)]
  return [synthetic_piece(name, rng) for name in labels], labels


@pytest.fixture(scope='module')
def classifier():
  # Unbalanced on purpose, as composer corpora are. The classes differ in a few of the 185
  # features (range, pace, durations, chords) and the rest is noise, so the classifier needs a
  # few dozen pieces of 200 notes: half as many pieces, or 40-note ones, misname some.
  pieces, labels = corpus({'low_slow': 24, 'high_fast': 8, 'middle_chords': 12}, seed=1)
  return style.fit(pieces, labels)


def test_feature_vector_concatenates_the_features_in_their_documented_order():
  piece = synthetic_piece('low_slow', np.random.default_rng(0))
  features = music_stats.piece_features(piece)
  vector = music_stats.feature_vector(piece)
  assert vector.dtype == np.float64
  assert vector.shape == (185,)
  start = 0
  for name in music_stats.FEATURES:
    np.testing.assert_array_equal(vector[start:start + len(features[name])], features[name])
    start += len(features[name])
  assert start == len(vector)
  matrix = style.feature_matrix([piece, piece])
  assert matrix.shape == (2, 185)
  np.testing.assert_array_equal(matrix[1], vector)


def test_held_out_pieces_are_all_named_right(classifier):
  pieces, labels = corpus({'low_slow': 3, 'high_fast': 5, 'middle_chords': 2}, seed=2)
  result = style.score(classifier, pieces, labels, NAMES)
  assert result == {
      'labels': NAMES,
      'confusion': [[3, 0, 0], [0, 5, 0], [0, 0, 2]],
      'accuracy': 1.0,
      'pieces': 10,
      'chance': 1 / 3,
      'majority_rate': 0.5,
      'per_label_accuracy': {'low_slow': 1.0, 'high_fast': 1.0, 'middle_chords': 1.0},
  }
  assert json.loads(json.dumps(result)) == result


def test_confusion_follows_label_names_order_and_empty_labels_get_none(classifier):
  pieces, labels = corpus({'high_fast': 3, 'low_slow': 1}, seed=3)
  names = ['middle_chords', 'high_fast', 'low_slow', 'nobody']
  result = style.score(classifier, pieces, labels, names)
  assert result['confusion'] == [[0, 0, 0, 0], [0, 3, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
  assert result['chance'] == 0.25
  assert result['majority_rate'] == 0.75
  assert result['per_label_accuracy'] == {'middle_chords': None, 'high_fast': 1.0,
                                          'low_slow': 1.0, 'nobody': None}


def test_a_wrong_prediction_counts_off_the_diagonal(classifier):
  pieces, _ = corpus({'high_fast': 2, 'low_slow': 2}, seed=4)
  result = style.score(classifier, pieces, ['high_fast', 'low_slow', 'low_slow', 'low_slow'],
                       NAMES)
  # Rows low_slow, high_fast, middle_chords: the second high_fast piece is labelled low_slow.
  assert result['confusion'] == [[2, 1, 0], [0, 1, 0], [0, 0, 0]]
  assert result['accuracy'] == 0.75
  assert result['per_label_accuracy'] == {'low_slow': 2 / 3, 'high_fast': 1.0,
                                          'middle_chords': None}


def test_unrelated_labels_do_not_classify_held_out_pieces_perfectly():
  pieces, labels = corpus({'low_slow': 20, 'high_fast': 20, 'middle_chords': 20}, seed=5)
  shuffled = list(np.random.default_rng(6).permutation(labels))
  fitted = style.fit(pieces[::2], shuffled[::2])
  result = style.score(fitted, pieces[1::2], shuffled[1::2], NAMES)
  # 30 held-out pieces of 3 labels: chance is 1/3 (this split gets 8 of 30 right).
  assert result['accuracy'] < 0.6
  # The same split with the true labels names every piece right.
  fitted = style.fit(pieces[::2], labels[::2])
  assert style.score(fitted, pieces[1::2], labels[1::2], NAMES)['accuracy'] == 1.0


def test_fit_is_deterministic():
  pieces, labels = corpus({'low_slow': 4, 'high_fast': 4}, seed=7)
  first, second = style.fit(pieces, labels, seed=3), style.fit(pieces, labels, seed=3)
  matrix = style.feature_matrix(pieces)
  np.testing.assert_array_equal(first.predict_proba(matrix), second.predict_proba(matrix))


def test_fit_refuses_fewer_than_two_labels_and_mismatched_lengths():
  pieces, labels = corpus({'low_slow': 3}, seed=8)
  with pytest.raises(ValueError, match='at least 2 distinct labels'):
    style.fit(pieces, labels)
  with pytest.raises(ValueError, match='3 pieces but 2 labels'):
    style.fit(pieces, ['low_slow', 'high_fast'])
  with pytest.raises(ValueError, match='at least 2 distinct labels'):
    style.fit([], [])
  with pytest.raises(ValueError, match='no pieces'):
    style.feature_matrix([])


def test_score_refuses_labels_outside_the_label_names(classifier):
  pieces, labels = corpus({'low_slow': 2, 'high_fast': 1}, seed=9)
  with pytest.raises(ValueError, match=r"true labels \['bach'\]"):
    style.score(classifier, pieces, ['bach', 'low_slow', 'high_fast'], NAMES)
  # The classifier predicts high_fast, which these names leave out.
  with pytest.raises(ValueError, match=r"predicted labels \['high_fast'\]"):
    style.score(classifier, pieces, labels[:2] + ['low_slow'], ['low_slow', 'middle_chords'])
  with pytest.raises(ValueError, match='repeat'):
    style.score(classifier, pieces, labels, ['low_slow', 'low_slow', 'high_fast'])
  with pytest.raises(ValueError, match='3 pieces but 2 labels'):
    style.score(classifier, pieces, labels[:2], NAMES)


def test_plot_confusion_writes_a_png_and_no_temporary(classifier, tmp_path):
  pieces, labels = corpus({'low_slow': 2, 'high_fast': 2, 'middle_chords': 2}, seed=10)
  result = style.score(classifier, pieces, labels, NAMES + ['nobody'])
  path = tmp_path / 'confusion.png'
  style.plot_confusion(result, path, 'synthetic composers, real test pieces')
  data = path.read_bytes()
  assert data.startswith(PNG_SIGNATURE)
  assert len(data) > 1000
  assert os.listdir(tmp_path) == ['confusion.png']
