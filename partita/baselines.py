"""Baseline next-pitch models the trained model is measured against, in plain numpy.

Every model here maps the pitches that precede a note to a probability for each of the 128 MIDI
pitches, through one interface: ``distribution(contexts)`` takes an integer array
``[queries, context_length]`` (the pitches before each target, oldest first; a model reads only
as many of the last ones as it needs) and returns ``[queries, 128]`` float64 probabilities, every
one > 0, each row summing to 1. So they can be scored on exactly the windows the neural model is
scored on (the last pitches of each window are the context) and sampled from the same primes.

* :class:`NGram`: interpolated Kneser-Ney n-gram of any order (order 1 is the unigram, with
  absolute discounting towards the uniform distribution).
* :class:`RepeatPrevious`: the next pitch is the previous one, with probability ``1 - eps``.

:func:`score_pitches` turns probabilities (or the model's log-probabilities) into per-note NLL
and top-k hits with one tie rule for every model.

An n-gram's tables are keyed by :func:`encode` (one int64 per k-gram, :data:`KEY_BASE` digits);
:func:`append_symbol`, :func:`last_symbol`, :func:`context_of` and :func:`with_leading` read and
extend those keys, so that ``trainer.pitch_ngram`` builds its TensorFlow tables from them.

The timing baselines score a note's ``step`` (seconds since the previous onset) or ``duration``
as the probability of the 10 ms bin of :mod:`partita.timing_bins` holding it, as the model is
scored: ``log_prob`` returns natural-log probabilities of each value's bin, each distribution
exact over all ``NUM_BINS`` bins and > 0 on every one.

* :class:`TimingHistogram`: the training histogram of bins, add-one smoothed.
* :class:`ConditionalTimingHistogram`: the bin given the previous value's bin, interpolated with
  the smoothed histogram.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from partita import constants, timing_bins

# Stands before the first note of each training piece when counting the distinct predecessors
# of an n-gram (Kneser-Ney's continuation counts), so an n-gram seen only at a piece's start
# still has one.
_START = constants.PITCHES
# The digits of a key: a k-gram (or a context) is one int64, the base-KEY_BASE number whose
# digits are its symbols (pitches and the start symbol, 0..128), oldest first, so that sorting
# keys groups the k-grams of one context together. trainer.pitch_ngram looks the same keys up
# in TensorFlow, with a label id as one more leading digit.
KEY_BASE = constants.PITCHES + 1
# Keys of order-7 n-grams take 49 of an int64's 63 bits, which leaves room for a label id.
MAX_ORDER = 7


def append_symbol(keys, symbols):
  """Keys extended by one newer symbol each; numpy arrays or TensorFlow tensors of int64."""
  return keys * KEY_BASE + symbols


def encode(grams: np.ndarray) -> np.ndarray:
  """Rows of ``k`` symbols, oldest first -> one int64 key each."""
  keys = np.zeros(len(grams), dtype=np.int64)
  for column in range(grams.shape[1]):
    keys = append_symbol(keys, grams[:, column])
  return keys


def last_symbol(keys: np.ndarray) -> np.ndarray:
  """Each k-gram's newest symbol: the pitch it predicts."""
  return keys % KEY_BASE


def context_of(keys: np.ndarray) -> np.ndarray:
  """Each k-gram's context: its key without the newest symbol."""
  return keys // KEY_BASE


def with_leading(keys: np.ndarray, digit: int, width: int) -> np.ndarray:
  """Keys of ``width`` symbols with ``digit`` (a label id) as one more, oldest digit."""
  return np.int64(digit) * np.int64(KEY_BASE) ** width + keys


def _grams(sequence: np.ndarray, k: int) -> np.ndarray:
  """All ``k`` consecutive symbols of ``sequence``, ``[len - k + 1, k]``."""
  if len(sequence) < k:
    return np.zeros((0, k), dtype=np.int64)
  return np.lib.stride_tricks.sliding_window_view(sequence, k)


class Level:
  """Counts of the k-grams of one order, and their contexts' totals, for table look-ups.

  ``keys`` are the sorted encoded k-grams with ``counts`` (raw counts at the top order,
  continuation counts below it); ``context_keys`` the sorted distinct (k-1)-gram contexts, with
  ``totals`` (the sum of their k-grams' counts), ``types`` (how many distinct next pitches) and
  ``first`` (the index in ``keys`` of the context's first k-gram).
  """

  def __init__(self, keys: np.ndarray, counts: np.ndarray, discount: float):
    self.keys = keys
    self.counts = counts
    self.discount = discount
    self.context_keys, self.first = np.unique(context_of(keys), return_index=True)
    self.totals = np.add.reduceat(counts, self.first) if len(keys) else np.zeros(0)
    self.types = np.diff(np.append(self.first, len(keys)))


def _discount(counts: np.ndarray) -> float:
  """Ney's estimate ``n1 / (n1 + 2 n2)`` from the numbers of k-grams seen once and twice.

  Clipped into [0.05, 0.95] (0.5 where there are none).
  """
  n1 = np.count_nonzero(counts == 1)
  n2 = np.count_nonzero(counts == 2)
  if n1 + n2 == 0:
    return 0.5
  return float(np.clip(n1 / (n1 + 2 * n2), 0.05, 0.95))


class NGram:
  """Interpolated Kneser-Ney n-gram over pitches (Chen & Goodman 1999, one discount per order).

  With ``c_k`` the counts of order k (raw counts at the model's own order ``n``; below it the
  continuation counts ``N1+(. h w)``: how many distinct pitches, or a piece start, precede
  ``h w`` in training), ``S_k(h)`` their sum over ``w`` and ``T_k(h)`` the number of ``w`` with
  ``c_k(h, w) > 0``::

      P_k(w | h) = max(c_k(h, w) - D_k, 0) / S_k(h) + D_k T_k(h) / S_k(h) * P_{k-1}(w | h')
      P_0(w) = 1 / 128

  where ``h'`` drops the oldest pitch of ``h``; a context never seen in training (``S_k = 0``)
  backs off entirely to ``P_{k-1}``. ``D_k`` is Ney's ``n1 / (n1 + 2 n2)`` of that order's
  counts. Each level's discounted mass is exactly what it passes down, so every distribution
  sums to 1, and the uniform floor makes every one of the 128 pitches > 0. Order 1 is the
  unigram with absolute discounting towards uniform.
  """

  def __init__(self, order: int, levels: list[Level]):
    self.order = order
    self.levels = levels  # orders 1..order

  @classmethod
  def fit(cls, sequences: Sequence[np.ndarray], order: int, first_target: int = 0) -> NGram:
    """Counts, in each pitch sequence, the n-grams of every order up to ``order``.

    Only those that end at index ``first_target`` or later count (their earlier pitches may lie
    before it).

    Sequences are not joined: no n-gram spans two of them. With the trainer's chunks as
    sequences and ``first_target`` the window length, every training note after the first
    window of its piece ends exactly one n-gram of each order, with its real history: the
    notes the neural model is trained to predict, each counted once.
    """
    if not 1 <= order <= MAX_ORDER:
      raise ValueError(f'order must be in 1..{MAX_ORDER}, got {order}')
    sequences = [np.asarray(s, dtype=np.int64) for s in sequences]
    if any(s.size and (s.min() < 0 or s.max() >= constants.PITCHES) for s in sequences):
      raise ValueError('pitches must lie in 0..127')
    # Predecessors of the n-grams at a sequence's start are the start symbol.
    padded = [np.concatenate([[_START], s]) for s in sequences]
    levels = []
    for k in range(1, order + 1):
      # The (k+1)-grams of the padded sequence: a predecessor, then a k-gram ending at index
      # k - 1 + row of the sequence; keep those ending at first_target or later.
      windows = [_grams(s, k + 1)[max(first_target - k + 1, 0):] for s in padded]
      pairs = encode(np.concatenate(windows) if windows else np.zeros((0, k + 1), int))
      if k == order:  # raw counts
        keys, counts = np.unique(pairs % KEY_BASE ** k, return_counts=True)
      else:  # continuation counts: distinct predecessors per k-gram
        keys, counts = np.unique(np.unique(pairs) % KEY_BASE ** k,
                                 return_counts=True)
      counts = counts.astype(np.float64)
      levels.append(Level(keys, counts, _discount(counts)))
    return cls(order, levels)

  def distribution(self, contexts: np.ndarray) -> np.ndarray:
    """``[queries, >= order - 1]`` preceding pitches -> ``[queries, 128]`` probabilities."""
    contexts = np.asarray(contexts, dtype=np.int64)
    if contexts.ndim != 2 or contexts.shape[1] < self.order - 1:
      raise ValueError(f'contexts must be [queries, >= {self.order - 1}], got {contexts.shape}')
    queries = len(contexts)
    probs = np.full((queries, constants.PITCHES), 1.0 / constants.PITCHES)
    for k, level in enumerate(self.levels, start=1):
      history = contexts[:, contexts.shape[1] - (k - 1):]
      context_key = encode(history)
      where = np.minimum(np.searchsorted(level.context_keys, context_key),
                         max(len(level.context_keys) - 1, 0))
      seen = (level.context_keys[where] == context_key if len(level.context_keys)
              else np.zeros(queries, bool))
      rows = np.flatnonzero(seen)
      index = where[rows]
      total = level.totals[index]
      # Back-off weight on the lower order, then each seen next pitch's discounted count.
      probs[rows] *= (level.discount * level.types[index] / total)[:, None]
      lengths = level.types[index]
      row_of_entry = np.repeat(rows, lengths)
      entry = (np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
               + np.repeat(level.first[index], lengths))
      pitch = last_symbol(level.keys[entry])
      probs[row_of_entry, pitch] += (np.maximum(level.counts[entry] - level.discount, 0.0)
                                     / np.repeat(total, lengths))
    return probs


class RepeatPrevious:
  """The next pitch repeats the previous one with probability ``1 - eps``.

  The other 127 pitches share ``eps`` equally.

  :meth:`fit` sets ``eps`` to the fraction of training notes whose pitch differs from the
  previous note's: the maximum-likelihood ``eps`` on the training split (the likelihood
  ``(1 - eps)^r (eps / 127)^(N - r)`` of ``r`` repeats in ``N`` notes peaks there).
  """

  def __init__(self, eps: float):
    if not 0.0 < eps < 1.0:
      raise ValueError(f'eps must be in (0, 1), got {eps}')
    self.eps = eps

  @classmethod
  def fit(cls, sequences: Sequence[np.ndarray], first_target: int = 0) -> RepeatPrevious:
    """Fits ``eps`` on the notes at index ``max(first_target, 1)`` or later of each sequence.

    Each note against the note before it, as :meth:`NGram.fit` counts.
    """
    changes, transitions = 0, 0
    for pitches in map(np.asarray, sequences):
      target = pitches[max(first_target, 1):]
      changes += int(np.count_nonzero(target != pitches[max(first_target, 1) - 1:-1]))
      transitions += len(target)
    if not transitions:
      raise ValueError('no training transitions')
    return cls(float(np.clip(changes / transitions, 1e-6, 1 - 1e-6)))

  def distribution(self, contexts: np.ndarray) -> np.ndarray:
    """``[rows, 128]`` probabilities of the next pitch after each row of ``contexts``."""
    contexts = np.asarray(contexts, dtype=np.int64)
    probs = np.full((len(contexts), constants.PITCHES), self.eps / (constants.PITCHES - 1))
    probs[np.arange(len(contexts)), contexts[:, -1]] = 1.0 - self.eps
    return probs


def score_pitches(log_probs: np.ndarray, targets: np.ndarray,
                  top_k: Sequence[int] = (1, 5)) -> dict[str, np.ndarray]:
  """Per-target NLL (nats) and top-k hits from ``[queries, 128]`` log-probabilities.

  A target is in the top k when fewer than k other pitches have a probability at least as
  high as its own: ties count against the target, so a model cannot gain accuracy by giving
  many pitches the same probability (:class:`RepeatPrevious`'s top-5 equals its top-1).
  Returns ``{'pitch_nll': [queries], 'pitch_accuracy': ..., 'pitch_top5_accuracy': ...}``
  (the accuracy keys for ``top_k`` 1 and 5, ``pitch_topK_accuracy`` for others), as float64.
  """
  log_probs = np.asarray(log_probs, dtype=np.float64)
  targets = np.asarray(targets, dtype=np.int64)
  rows = np.arange(len(targets))
  target_log_prob = log_probs[rows, targets]
  others_at_least = np.count_nonzero(log_probs >= target_log_prob[:, None], axis=1) - 1
  scores = {'pitch_nll': -target_log_prob}
  for k in top_k:
    name = 'pitch_accuracy' if k == 1 else f'pitch_top{k}_accuracy'
    scores[name] = (others_at_least < k).astype(np.float64)
  return scores


def log_softmax(logits: np.ndarray) -> np.ndarray:
  """Log-probabilities from logits, in float64 along the last axis."""
  logits = np.asarray(logits, dtype=np.float64)
  shifted = logits - logits.max(axis=-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def sample(model, primes: np.ndarray, num_notes: int, rng: np.random.Generator) -> np.ndarray:
  """Continues each row of ``primes`` by ``num_notes`` pitches drawn from ``model.distribution``.

  ``primes`` is ``[pieces, context]`` pitches; returns ``[pieces, num_notes]`` int64.
  """
  history = np.asarray(primes, dtype=np.int64)
  generated = np.zeros((len(history), num_notes), dtype=np.int64)
  for i in range(num_notes):
    probs = model.distribution(history)
    cumulative = np.cumsum(probs, axis=1)
    draws = rng.random(len(history))[:, None] * cumulative[:, -1:]
    generated[:, i] = np.minimum((cumulative < draws).sum(axis=1), constants.PITCHES - 1)
    history = np.concatenate([history[:, 1:], generated[:, i:i + 1]], axis=1)
  return generated


# The weight, in pseudo-counts, of the smoothed histogram in each of
# ConditionalTimingHistogram's conditional distributions: a previous bin seen n times in
# training keeps n / (n + 2) of its mass on its own counts. Small, because the next step or
# duration usually repeats the previous one's bin, which the histogram of all notes knows
# nothing of; large enough that a bin seen once or twice does not put most of its mass on one
# next bin. Fixed, not fitted.
TIMING_BACKOFF_WEIGHT = 2.0


def _time_bins(seconds) -> np.ndarray:
  """Times in seconds (any shape) -> their bins; a NaN or a negative time is a bug upstream."""
  seconds = np.asarray(seconds, dtype=np.float64)
  if np.isnan(seconds).any() or (seconds < 0).any():
    raise ValueError('times must be >= 0 seconds and not NaN')
  return timing_bins.to_bins(seconds)


def _training_bins(sequences: Sequence[np.ndarray]) -> list[np.ndarray]:
  """Each training sequence of times in seconds (1-D) -> its array of bins."""
  bins = [_time_bins(s) for s in sequences]
  if any(b.ndim != 1 for b in bins):
    raise ValueError('each training sequence must be 1-D')
  return bins


class TimingHistogram:
  """The training histogram of a time's bin, add-one (Laplace) smoothed over all bins.

  The probability of bin ``b`` is::

      P(b) = (count(b) + 1) / (N + NUM_BINS)

  with ``N`` the number of training values, so every one of the ``NUM_BINS`` bins is > 0 and
  the distribution sums to 1. ``probs`` holds the ``[NUM_BINS]`` float64 probabilities.
  """

  def __init__(self, counts: np.ndarray):
    self.counts = np.asarray(counts, dtype=np.float64)
    if self.counts.shape != (timing_bins.NUM_BINS,):
      raise ValueError(f'counts must be [{timing_bins.NUM_BINS}], got {self.counts.shape}')
    self.probs = (self.counts + 1.0) / (self.counts.sum() + timing_bins.NUM_BINS)
    self._log_probs = np.log(self.probs)

  @classmethod
  def fit(cls, sequences: Sequence[np.ndarray], first_target: int = 0) -> TimingHistogram:
    """Counts the bins of the values at index ``first_target`` or later of each sequence.

    The sequences are of times in seconds; counted as :meth:`NGram.fit` counts its targets.
    """
    targets = [bins[first_target:] for bins in _training_bins(sequences)]
    counts = np.bincount(np.concatenate(targets) if targets else np.zeros(0, np.int64),
                         minlength=timing_bins.NUM_BINS)
    if not counts.sum():
      raise ValueError('no training values')
    return cls(counts)

  def log_prob(self, values_seconds) -> np.ndarray:
    """The natural-log probability (float64, the input's shape) of each value's bin."""
    return self._log_probs[_time_bins(values_seconds)]


class ConditionalTimingHistogram:
  """The bin ``b`` of a time given the bin ``p`` of the previous one in its sequence.

  The previous one is the previous step for a step, the previous duration for a duration::

      P(b | p) = (count(p, b) + beta * P_hist(b)) / (count(p) + beta)

  where ``count(p, b)`` counts training transitions ``p -> b``, ``count(p)`` is their sum over
  ``b``, ``P_hist`` is :class:`TimingHistogram` and ``beta`` is
  :data:`TIMING_BACKOFF_WEIGHT`. A previous bin never seen in training (``count(p) = 0``) backs
  off to ``P_hist`` alone. Each ``P(. | p)`` sums to 1 over the ``NUM_BINS`` bins and is > 0
  on every one, since ``P_hist`` is.

  Transitions are stored sparsely: ``pair_keys`` the sorted distinct ``p * NUM_BINS + b`` with
  their ``pair_counts``; ``context_keys`` the sorted distinct ``p`` with ``totals`` (``count(p)``).
  """

  def __init__(self, histogram: TimingHistogram, pair_keys: np.ndarray, pair_counts: np.ndarray,
               beta: float = TIMING_BACKOFF_WEIGHT):
    if not beta > 0:
      raise ValueError(f'beta must be > 0, got {beta}')
    self.histogram = histogram
    self.beta = float(beta)
    self.pair_keys = np.asarray(pair_keys, dtype=np.int64)
    self.pair_counts = np.asarray(pair_counts, dtype=np.float64)
    self.context_keys, first = np.unique(self.pair_keys // timing_bins.NUM_BINS,
                                         return_index=True)
    self.totals = (np.add.reduceat(self.pair_counts, first) if len(first)
                   else np.zeros(0, np.float64))

  @classmethod
  def fit(cls, sequences: Sequence[np.ndarray], first_target: int = 0,
          beta: float = TIMING_BACKOFF_WEIGHT) -> ConditionalTimingHistogram:
    """Counts, in each sequence of times in seconds, the transitions into its later values.

    The transitions into the values at index ``max(first_target, 1)`` or later, from the value
    before each (which may lie before ``first_target``); ``P_hist`` is
    :meth:`TimingHistogram.fit` with the same ``first_target``.

    Sequences are not joined: no transition spans two of them. With the trainer's chunks and
    ``first_target`` the window length, each note the neural model predicts is counted once,
    with its real previous value.
    """
    histogram = TimingHistogram.fit(sequences, first_target)
    start = max(first_target, 1)
    pairs = [bins[start - 1:-1] * timing_bins.NUM_BINS + bins[start:]
             for bins in _training_bins(sequences) if len(bins) > start]
    pair_keys, pair_counts = np.unique(
        np.concatenate(pairs) if pairs else np.zeros(0, np.int64), return_counts=True)
    return cls(histogram, pair_keys, pair_counts, beta)

  def log_prob(self, values_seconds, previous_seconds) -> np.ndarray:
    """The natural-log probability (float64) of each value's bin given the previous value.

    The two arrays broadcast together, and the result has their broadcast shape.
    """
    values, previous = np.broadcast_arrays(_time_bins(values_seconds),
                                           _time_bins(previous_seconds))
    shape = values.shape
    values, previous = values.ravel(), previous.ravel()
    backoff = self.histogram.probs[values]
    log_probs = np.log(backoff)  # for previous bins never seen in training
    where = _lookup(self.context_keys, previous)
    seen = where >= 0
    pair = _lookup(self.pair_keys, previous[seen] * timing_bins.NUM_BINS + values[seen])
    count = np.where(pair >= 0, self.pair_counts[np.maximum(pair, 0)], 0.0)
    log_probs[seen] = (np.log(count + self.beta * backoff[seen])
                       - np.log(self.totals[where[seen]] + self.beta))
    return log_probs.reshape(shape)


def _lookup(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
  """The index of each key in ``sorted_keys`` (distinct, ascending), -1 where it is absent."""
  if not len(sorted_keys):
    return np.full(keys.shape, -1, dtype=np.int64)
  where = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
  return np.where(sorted_keys[where] == keys, where, -1)
