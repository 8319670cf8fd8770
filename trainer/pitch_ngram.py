"""Count models of the training pieces' pitches, mixed into the network's pitch distribution.

One count model for all pieces and one per label.

The network reads the window; a Kneser-Ney n-gram (``partita.baselines.NGram``) reads the last
``order - 1`` pitches and remembers every passage of the training pieces exactly. The two err
differently, and their mixture beats both (figures: docs/experiments.md, "Label n-grams"). A label
adds to it what the window cannot: a composer repeats figures, sequences and cadence formulas
across pieces, and a count model fitted on that composer's pieces alone knows them where the
one fitted on every piece mixes them with everyone's. So the pitch distribution of a note whose
piece has label ``l`` is::

    P = (1 - a_l) P_network + a_l ((1 - w_l) P_all + w_l P_l)

with ``P_all`` the n-gram of every training piece and ``P_l`` the n-gram of label ``l``'s
training pieces. The weights are one pair for every label (``a_l = a`` and ``w_l = w``), except
the unconditional id, which has its own ``a`` and ``w = 0`` (no label: the n-gram of every
piece), and a label without training pieces, which has ``w = 0``. They are chosen on validation
windows (:func:`fit_weights`), after training: the counts hold every training window's own
next note, so weights learnt on training windows would trust them far more than unseen music
deserves.

:class:`PitchNGrams` computes the n-grams in TensorFlow (graph and XLA) from the arrays of
``NGram``, every label's in one sorted table per order with the label id as the key's leading
digit, so a batch of rows with different labels is one look-up per order. :func:`fit_mixture`
is what the trainer calls after training: the n-grams of the training split, their weights
chosen with the trained network on the validation windows.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses

import keras
import numpy as np
import tensorflow as tf

from partita import baselines, constants, contract
from partita import dataset as dataset_lib
from partita import labels as labels_lib
from trainer import model as model_lib

# The grid the two weights are chosen on. Neither 0 nor 1: the mixture keeps every pitch's
# probability above 0 whatever the network's softmax underflows to (the n-grams' never does).
WEIGHT_GRID = np.round(np.arange(0.05, 0.96, 0.05), 2)


@dataclasses.dataclass(frozen=True)
class Weights:
  """The mixture's weights (see the module docstring), chosen by :func:`fit_weights`."""
  ngram: float  # a: the n-grams' share, for labelled rows
  label: float  # w: the label's n-gram's share of the n-grams', for labelled rows
  unconditional_ngram: float  # a for rows of the unconditional id


def fit(pitches_by_label: dict[int, Sequence[np.ndarray]], order: int,
        first_target: int) -> dict[int, baselines.NGram]:
  """The n-grams: id 0 counts every sequence, each other id its own sequences.

  Id 0 is :data:`partita.labels.UNCONDITIONAL_ID`; the other ids are those in
  ``pitches_by_label`` (``NGram.fit``'s ``first_target``).
  """
  everything = [s for sequences in pitches_by_label.values() for s in sequences]
  models = {labels_lib.UNCONDITIONAL_ID: baselines.NGram.fit(everything, order, first_target)}
  for label, sequences in sorted(pitches_by_label.items()):
    if label != labels_lib.UNCONDITIONAL_ID and len(sequences):
      models[label] = baselines.NGram.fit(sequences, order, first_target)
  return models


def fit_weights(network_labelled: np.ndarray, network_unconditional: np.ndarray,
                everyone: np.ndarray, own: np.ndarray, labelled: np.ndarray) -> Weights:
  """The weights of :data:`WEIGHT_GRID` that maximise the likelihood of validation targets.

  Each argument holds one probability per validation window, of its true next pitch: the
  network's given the window's label and given the unconditional id, the n-gram of every
  piece's and the window's label's n-gram's (any value where ``labelled`` is False: the label
  has none). The unconditional weight is fitted on every window scored with the unconditional
  id, so that it is the model asked for no label; the labelled pair on the labelled windows.
  """
  def nll(probabilities):
    return -np.log(probabilities).mean(axis=-1)

  grid = WEIGHT_GRID[:, None]
  unconditional = WEIGHT_GRID[int(np.argmin(nll((1 - grid) * network_unconditional
                                                + grid * everyone)))]
  if not labelled.any():
    return Weights(ngram=float(unconditional), label=0.0,
                   unconditional_ngram=float(unconditional))
  n, e, o = (values[labelled] for values in (network_labelled, everyone, own))
  a, w = WEIGHT_GRID[:, None, None], WEIGHT_GRID[None, :, None]
  scores = nll((1 - a) * n + a * ((1 - w) * e + w * o))
  best_a, best_w = np.unravel_index(int(np.argmin(scores)), scores.shape)
  return Weights(ngram=float(WEIGHT_GRID[best_a]), label=float(WEIGHT_GRID[best_w]),
                 unconditional_ngram=float(unconditional))


class PitchNGrams(tf.Module):
  """The n-grams of :func:`fit` and the mixture's :class:`Weights`, as TensorFlow variables.

  The weights are set by :meth:`set_weights`; the variables are saved with an export and read by
  its functions.

  Order ``k``'s table holds, for every id, ``NGram``'s level-``k`` arrays: the contexts, with
  the id as the leading digit of each key (``baselines.with_leading``; each id's sort below
  the next id's, so the concatenation stays sorted), their totals, types and first k-gram, and
  the k-grams' last pitches and counts in key order. A look-up is one binary search per row
  for the context, then its k-grams, which lie together, read in one contiguous slice.
  """

  def __init__(self, models: dict[int, baselines.NGram], num_labels: int):
    super().__init__(name='pitch_ngrams')
    orders = {model.order for model in models.values()}
    if len(orders) != 1:
      raise ValueError(f'the n-grams have different orders: {sorted(orders)}')
    self.order = orders.pop()
    if num_labels * float(baselines.KEY_BASE) ** (self.order - 1) >= 2**63:
      raise ValueError(f'{num_labels} labels of order-{self.order} contexts overflow int64')
    if labels_lib.UNCONDITIONAL_ID not in models:
      raise ValueError('the n-gram of every piece (the unconditional id) is missing')
    ids = sorted(models)
    self.tables = []
    for k in range(1, self.order + 1):
      levels = {i: models[i].levels[k - 1] for i in ids}
      # Where each id's k-grams start in the concatenation, for the contexts' first k-gram.
      offsets = np.cumsum([0] + [len(level.keys) for level in levels.values()])[:-1]
      self.tables.append({
          'context_keys': _fixed(_prefixed(levels, 'context_keys', k - 1), np.int64),
          'first': _fixed(np.concatenate([offset + level.first for offset, level in
                                          zip(offsets, levels.values())]), np.int64),
          'totals': _fixed(np.concatenate([level.totals for level in levels.values()])),
          'types': _fixed(np.concatenate([level.types for level in levels.values()])),
          # The k-grams' last pitch and count, in key order: a context's are contiguous.
          'pitches': _fixed(np.concatenate([baselines.last_symbol(level.keys)
                                            for level in levels.values()]), np.int32),
          'counts': _fixed(np.concatenate([level.counts for level in levels.values()]),
                           np.float32),
      })
    # Per id and order: the discount (0 for an id without an n-gram, whose contexts are never
    # found), the mixture's weights.
    discounts = np.zeros((num_labels, self.order))
    for i in ids:
      discounts[i] = [level.discount for level in models[i].levels]
    self.discounts = _fixed(discounts)
    self.has_own = np.isin(np.arange(num_labels), ids) & (
        np.arange(num_labels) != labels_lib.UNCONDITIONAL_ID)
    # Set by set_weights, once they are chosen.
    self.ngram_weight = _fixed(np.zeros(num_labels))
    self.label_weight = _fixed(np.zeros(num_labels))

  def set_weights(self, weights: Weights) -> None:
    """Gives the mixture its weights: ``a`` per id (the unconditional id's own) and ``w``.

    ``w`` is 0 for the unconditional id and for ids without an n-gram of their own.
    """
    unconditional = np.arange(len(self.has_own)) == labels_lib.UNCONDITIONAL_ID
    self.ngram_weight.assign(np.where(unconditional, weights.unconditional_ngram, weights.ngram))
    self.label_weight.assign(np.where(self.has_own, weights.label, 0.0))

  def probabilities(self, pitches: tf.Tensor, label: tf.Tensor) -> tf.Tensor:
    """``[rows, >= order - 1]`` pitches (-1: no note) and ``[rows]`` ids -> ``[rows, 128]`` float64.

    Each row's id's n-gram after its last ``order - 1`` pitches, as ``NGram.distribution`` computes
    it (a context holding a -1 is one never seen).
    """
    pitches = tf.cast(pitches, tf.int64)
    label = tf.cast(label, tf.int64)
    rows = tf.shape(pitches)[0]
    probs = tf.fill([rows, constants.PITCHES], tf.constant(1.0 / constants.PITCHES, tf.float64))
    for k, table in enumerate(self.tables, start=1):
      history = pitches[:, tf.shape(pitches)[1] - (k - 1):]
      context = label
      for column in range(k - 1):
        context = baselines.append_symbol(context, history[:, column])
      where, seen = _find(table['context_keys'], context)
      seen = seen & tf.reduce_all(history >= 0, axis=1)
      total = tf.where(seen, tf.gather(table['totals'], where), 1.0)
      types = tf.gather(table['types'], where)
      discount = tf.gather(self.discounts[:, k - 1], label)
      # The context's k-grams: at most 128 contiguous entries from its first.
      first = tf.gather(table['first'], where)[:, None]
      entry = first + tf.range(constants.PITCHES, dtype=tf.int64)
      present = tf.cast(entry < first + tf.cast(types, tf.int64)[:, None], tf.float64)
      entry = tf.minimum(entry, tf.size(table['counts'], out_type=tf.int64) - 1)
      discounted = present * tf.maximum(
          tf.cast(tf.gather(table['counts'], entry), tf.float64) - discount[:, None], 0.0)
      counts = tf.einsum('re,rep->rp', discounted,
                         tf.one_hot(tf.gather(table['pitches'], entry), constants.PITCHES,
                                    dtype=tf.float64))
      updated = probs * (discount * types / total)[:, None] + counts / total[:, None]
      probs = tf.where(seen[:, None], updated, probs)
    return probs

  def mix(self, logits: tf.Tensor, pitches: tf.Tensor, label: tf.Tensor) -> tf.Tensor:
    """The network's ``[rows, 128]`` pitch logits -> the mixture's float32 log-probabilities.

    For rows whose last pitches are ``pitches`` (``[rows, >= order - 1]``, -1: no note) and whose
    ids are ``label``.
    """
    network = tf.nn.softmax(tf.cast(logits, tf.float64))
    everyone = self.probabilities(pitches, tf.fill(tf.shape(label),
                                                   labels_lib.UNCONDITIONAL_ID))
    own = self.probabilities(pitches, label)
    a = tf.gather(self.ngram_weight, label)[:, None]
    w = tf.gather(self.label_weight, label)[:, None]
    return tf.cast(tf.math.log((1 - a) * network + a * ((1 - w) * everyone + w * own)),
                   tf.float32)


def fit_mixture(model: keras.Model, data_dir: str, info: dict,
                validation_data: tf.data.Dataset, order: int) -> tuple[PitchNGrams, dict]:
  """The n-grams of the training split's pitches and their mixture's weights.

  The n-grams are :func:`fit`'s; their weights are chosen on ``validation_data`` with the trained
  ``model`` (:func:`fit_weights`). Returns (:class:`PitchNGrams`, a dict of the order, the weights
  and the validation pitch NLL of the network alone).
  """
  pitches_by_label = {}
  for chunk in dataset_lib.read_chunks(data_dir, info, 'train', info['labels']):
    pitches_by_label.setdefault(int(chunk[contract.LABEL_FEATURE]), []).append(chunk['pitch'])
  ngrams = PitchNGrams(
      fit(pitches_by_label, order, first_target=info['window_length']),
      len(info['labels']['vocabulary']))

  @tf.function
  def probabilities(inputs, targets):
    """Each window's true next pitch's probability under every part of the mixture."""
    label = inputs[contract.LABEL_FEATURE][:, -1]
    unconditional_id = tf.fill(tf.shape(label), labels_lib.UNCONDITIONAL_ID)
    unconditional = {**inputs, contract.LABEL_FEATURE: tf.fill(
        tf.shape(inputs[contract.LABEL_FEATURE]), labels_lib.UNCONDITIONAL_ID)}
    pitches = model_lib.heard(inputs)['pitch']
    parts = (tf.nn.softmax(tf.cast(model(inputs, targets)['pitch'], tf.float64)),
             tf.nn.softmax(tf.cast(model(unconditional, targets)['pitch'], tf.float64)),
             ngrams.probabilities(pitches, unconditional_id),
             ngrams.probabilities(pitches, label))
    return [tf.gather(part, targets['pitch'], batch_dims=1) for part in parts], label

  found = []
  for inputs, targets in validation_data:
    parts, label = probabilities(inputs, targets)
    found.append([part.numpy() for part in parts] + [ngrams.has_own[label.numpy()]])
  columns = [np.concatenate(column) for column in zip(*found, strict=True)]
  weights = fit_weights(*columns)
  ngrams.set_weights(weights)
  result = {'order': order, **dataclasses.asdict(weights),
            'validation_pitch_nll_network': float(-np.log(columns[0]).mean())}
  print('pitch n-grams mixed in: ' + ', '.join(f'{name} {value:g}'
                                               for name, value in result.items()), flush=True)
  return ngrams, result


def _fixed(values: np.ndarray, dtype=np.float64) -> tf.Variable:
  """A variable that an export saves and nothing trains."""
  return tf.Variable(np.asarray(values, dtype), trainable=False)


def _prefixed(levels: dict[int, baselines.Level], field: str, width: int) -> np.ndarray:
  """Every id's ``field`` keys of ``width`` digits with the id as one more leading digit.

  Concatenated in id order (so still sorted).
  """
  return np.concatenate([baselines.with_leading(getattr(level, field), i, width)
                         for i, level in levels.items()])


def _find(sorted_keys: tf.Variable, keys: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """The index of each key in ``sorted_keys`` and whether it is there.

  The index is any index where the key is absent.

  A binary search written out, one vectorised step per halving of the table: XLA compiles
  ``tf.searchsorted`` on a CPU to a comparison of every key with every query, about 250 times
  slower on a table of a million keys, and the sampling loop is compiled with XLA.
  """
  size = int(sorted_keys.shape[0])
  if size == 0:
    return tf.zeros(tf.shape(keys), tf.int64), tf.zeros(tf.shape(keys), tf.bool)

  def halve(step, low, high):
    middle = (low + high) // 2
    below = tf.gather(sorted_keys, tf.minimum(middle, size - 1)) < keys
    active = low < high
    return step + 1, tf.where(active & below, middle + 1, low), tf.where(active & ~below,
                                                                          middle, high)

  # ceil(log2(size + 1)) halvings, in a loop rather than unrolled: as many copies of the step
  # made XLA's compilation of the sampling loop four times as long.
  _, low, _ = tf.while_loop(
      lambda step, *_: step < size.bit_length(), halve,
      (tf.constant(0), tf.zeros(tf.shape(keys), tf.int64),
       tf.fill(tf.shape(keys), tf.constant(size, tf.int64))))
  where = tf.minimum(low, size - 1)
  return where, tf.gather(sorted_keys, where) == keys
