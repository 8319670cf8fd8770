"""Objective statistics of sets of pieces, and how far one set's lie from a reference set's.

Per-piece features (:func:`piece_features`) of a notes dict (pitch, step, duration; times in
seconds), each a 1-D float64 vector (length 1 for scalars):

* ``pitch_class_histogram`` (12): share of notes per pitch class, C first.
* ``pitch_range`` (1): highest minus lowest pitch, semitones.
* ``polyphony`` (1): mean number of notes sounding at each distinct onset time, a note
  sounding on ``[onset, onset + duration)``.
* ``inter_onset_interval`` (1): mean time between consecutive distinct onsets, seconds.
* ``duration_histogram`` (8): share of notes per duration bin, bin edges
  :data:`DURATION_BIN_EDGES` (seconds, doubling from 1/16 s).
* ``pitch_class_transitions`` (144): the 12 x 12 matrix of pitch-class pairs of consecutive
  notes, row-major, as shares of all pairs.
* ``scale_consistency`` (1): :func:`scale_consistency`, the share of notes in the best-fitting
  diatonic scale.
* ``pitch_class_entropy`` (1): Shannon entropy of the pitch-class histogram, bits.
* ``note_density`` (1): notes per second, from the first onset to the last note's end.
* ``repetition_rate`` (1): share of the piece's 4-note pitch patterns already played earlier in
  the piece (high for loops, low for aimless wandering).

The next three describe rhythm as a listener hears it, on *perceived* onsets: onsets closer than
:data:`ONSET_TOLERANCE` (5 ms) to the first onset of a group sound as one onset, at that first
onset's time (sorted onsets are grouped greedily: an onset starts a new group unless it lies less
than 5 ms after the current group's first onset).

* ``ioi_ratio_histogram`` (11): share of the ratios of consecutive inter-onset intervals
  (between perceived onsets; ``log2(later / earlier)``, so positive means slowing down) per bin
  of :data:`IOI_RATIO_EDGES`: bins 1 to 9 are centred on the ratios 1:4, 1:3, 1:2, 2:3, 1:1, 3:2,
  2:1, 3:1 and 4:1 with edges halfway between neighbouring centres in log2 (1:1 takes ratios
  from 0.82 to 1.22, for instance); bin 0 takes ratios below 2^-2.5 (about 1:5.7) and bin 10 those
  above 2^2.5. All zero when the piece has fewer than 3 perceived onsets (no pair of intervals).
* ``chord_onset_fraction`` (1): share of perceived onsets at which two or more notes start.
* ``onset_rate_variation`` (2): the coefficient of variation (population standard deviation over
  mean) of the perceived onsets per second in consecutive windows of
  :data:`ONSET_RATE_WINDOW` (2 s), and the share of those windows with no onset at all (stalls).
  The windows tile the piece from its first onset to its last note's end; a remainder shorter
  than a window joins the last window (its rate is its count over its own length), so every
  window is at least 2 s long. A piece shorter than two windows (4 s) has one window and gets
  ``[0, 0]``. The mean rate is left out: ``note_density`` and ``inter_onset_interval`` already
  carry the pace, and onsets per second would swamp the two scale-free shares in the Euclidean
  distances of the set comparison.

:data:`RHYTHM_FEATURES` names the features that describe rhythm and timing.

Set comparison (:func:`compare_sets`) follows Yang & Lerch, "On the evaluation of generative
models in music" (Neural Computing and Applications, 2018): for each feature, the Euclidean
distances between the per-piece vectors of every pair of reference pieces (the *intra-set*
distances of the real set) and between every (generated, real) pair (the *inter-set*
distances) are two samples; each is smoothed by a Gaussian kernel density estimate and the two
densities are compared by their overlapping area (OA, in [0, 1], 1 when the generated pieces
sit among the real ones as the real ones sit among themselves) and the Kullback-Leibler
divergence KL(intra || inter) (nats, 0 when equal). See :func:`kernel_density` and
:func:`overlap_and_divergence` for the numerical details.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

FEATURES = ('pitch_class_histogram', 'pitch_range', 'polyphony', 'inter_onset_interval',
            'duration_histogram', 'pitch_class_transitions', 'scale_consistency',
            'pitch_class_entropy', 'note_density', 'repetition_rate', 'ioi_ratio_histogram',
            'chord_onset_fraction', 'onset_rate_variation')
RHYTHM_FEATURES = ('polyphony', 'inter_onset_interval', 'duration_histogram', 'note_density',
                   'ioi_ratio_histogram', 'chord_onset_fraction', 'onset_rate_variation')
DURATION_BIN_EDGES = np.array([0.0, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1, 2, 4, np.inf])
MAJOR_SCALE = np.array([0, 2, 4, 5, 7, 9, 11])
REPETITION_PATTERN = 4
# Onsets less than this many seconds after the first onset of a group sound as one onset (the
# rhythm features only; the older features group exactly equal onsets). Compared with 1 ns of
# slack, so that onsets 5 ms apart stay two however the seconds were rounded (1.005 - 1.0 is
# 0.0049999... in float64).
ONSET_TOLERANCE = 0.005
_ONSET_SLACK = 1e-9
# Centres of the inner bins of ioi_ratio_histogram, log2(later interval / earlier interval).
IOI_RATIO_CENTRES = np.log2([1 / 4, 1 / 3, 1 / 2, 2 / 3, 1, 3 / 2, 2, 3, 4])
# Inner edges of ioi_ratio_histogram: +-2.5 (halfway to 1:8 and 8:1) outside, halfway between
# neighbouring centres inside; bin k holds [edge k-1, edge k), bins 0 and 10 are open-ended.
IOI_RATIO_EDGES = np.concatenate([[-2.5], (IOI_RATIO_CENTRES[1:] + IOI_RATIO_CENTRES[:-1]) / 2,
                                  [2.5]])
ONSET_RATE_WINDOW = 2.0  # seconds
GRID_POINTS = 1000
# KL divergence: the inter-set density is floored at this fraction of its peak before the log,
# so a region with reference mass but (numerically) no inter-set mass costs a large but finite
# amount instead of infinity.
KL_FLOOR = 1e-6


def onsets_from_first(step: np.ndarray) -> np.ndarray:
  """Onset times of a piece's notes, the first at 0."""
  step = np.asarray(step, dtype=np.float64)
  return np.cumsum(np.concatenate([[0.0], step[1:]]))


def scale_consistency(pitch: np.ndarray) -> float:
  """The share of ``pitch``'s notes in their best-fitting diatonic scale (at least one note).

  Of the 12 major scales, which also hold the natural minor ones (Mogren's C-RNN-GAN).
  """
  pitch_class = np.asarray(pitch, dtype=np.int64) % 12
  return float(max(np.isin(pitch_class, (MAJOR_SCALE + tonic) % 12).mean()
                   for tonic in range(12)))


def piece_features(notes: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Every feature of :data:`FEATURES` for one piece (at least one note)."""
  pitch = np.asarray(notes['pitch'], dtype=np.int64)
  duration = np.asarray(notes['duration'], dtype=np.float64)
  if not len(pitch):
    raise ValueError('a piece needs at least one note')
  start = onsets_from_first(notes['step'])
  end = start + duration
  pitch_class = pitch % 12

  pc_histogram = np.bincount(pitch_class, minlength=12) / len(pitch)
  distinct_onsets = np.unique(start)
  sounding = (np.searchsorted(np.sort(start), distinct_onsets, side='right')
              - np.searchsorted(np.sort(end), distinct_onsets, side='right'))
  transitions = np.zeros(144)
  if len(pitch) > 1:
    transitions = np.bincount(pitch_class[:-1] * 12 + pitch_class[1:], minlength=144)
    transitions = transitions / transitions.sum()
  nonzero = pc_histogram[pc_histogram > 0]
  span = end.max() - start.min()
  return {
      'pitch_class_histogram': pc_histogram,
      'pitch_range': np.array([pitch.max() - pitch.min()], dtype=np.float64),
      'polyphony': np.array([sounding.mean()]),
      'inter_onset_interval': np.array([np.diff(distinct_onsets).mean()
                                        if len(distinct_onsets) > 1 else 0.0]),
      'duration_histogram': np.histogram(duration, DURATION_BIN_EDGES)[0] / len(pitch),
      'pitch_class_transitions': transitions,
      'scale_consistency': np.array([scale_consistency(pitch)]),
      'pitch_class_entropy': np.array([-(nonzero * np.log2(nonzero)).sum()]),
      'note_density': np.array([len(pitch) / span if span > 0 else float(len(pitch))]),
      'repetition_rate': np.array([_repetition_rate(pitch)]),
      **_rhythm_features(start, span),
  }


def feature_vector(notes: Mapping[str, np.ndarray]) -> np.ndarray:
  """One piece's :func:`piece_features` in the order of :data:`FEATURES`, as one float64 vector.

  Column ``j`` means the same for every piece: a style classifier's input.
  """
  features = piece_features(notes)
  return np.concatenate([np.asarray(features[name], dtype=np.float64).ravel()
                         for name in FEATURES])


def perceived_onsets(start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Onset times as heard, and how many notes start at each.

  Sorted onsets are grouped greedily: an onset joins the current group when it lies less than
  :data:`ONSET_TOLERANCE` after the group's first onset, and otherwise starts a new group (anchoring
  at the first onset keeps a slow arpeggio of 4 ms steps from merging into one onset). A group's
  time is its first onset's.
  """
  times, sizes = [], []
  for onset in np.sort(np.asarray(start, dtype=np.float64)):
    if times and onset - times[-1] < ONSET_TOLERANCE - _ONSET_SLACK:
      sizes[-1] += 1
    else:
      times.append(onset)
      sizes.append(1)
  return np.array(times, dtype=np.float64), np.array(sizes, dtype=np.int64)


def _rhythm_features(start: np.ndarray, span: float) -> dict[str, np.ndarray]:
  """``ioi_ratio_histogram``, ``chord_onset_fraction`` and ``onset_rate_variation`` of a piece.

  The piece has onsets ``start`` and lasts ``span`` seconds from its first onset to its last end.
  """
  times, sizes = perceived_onsets(start)
  ratio_histogram = np.zeros(len(IOI_RATIO_EDGES) + 1)
  if len(times) >= 3:
    intervals = np.diff(times)  # each at least ONSET_TOLERANCE, so the ratios are finite
    bins = np.searchsorted(IOI_RATIO_EDGES, np.log2(intervals[1:] / intervals[:-1]),
                           side='right')
    ratio_histogram = np.bincount(bins, minlength=len(ratio_histogram)) / len(bins)
  return {
      'ioi_ratio_histogram': ratio_histogram.astype(np.float64),
      'chord_onset_fraction': np.array([np.mean(sizes >= 2)], dtype=np.float64),
      'onset_rate_variation': _onset_rate_variation(times - times[0], span),
  }


def _onset_rate_variation(times: np.ndarray, span: float) -> np.ndarray:
  """Coefficient of variation of the onsets per second in ONSET_RATE_WINDOW windows.

  And the share of windows without an onset (``times`` from the first onset, 0).
  """
  windows = max(int(np.floor(span / ONSET_RATE_WINDOW)), 1)
  if windows == 1:
    return np.zeros(2)
  window = np.minimum(np.floor(times / ONSET_RATE_WINDOW).astype(np.int64), windows - 1)
  lengths = np.full(windows, ONSET_RATE_WINDOW)
  lengths[-1] = span - (windows - 1) * ONSET_RATE_WINDOW
  rates = np.bincount(window, minlength=windows) / lengths
  # The first window holds the first onset, so the mean rate is positive.
  return np.array([rates.std() / rates.mean(), np.mean(rates == 0)])


def _repetition_rate(pitch: np.ndarray) -> float:
  """Share of the piece's REPETITION_PATTERN-note pitch patterns seen earlier in it."""
  if len(pitch) < REPETITION_PATTERN:
    return 0.0
  patterns = np.lib.stride_tricks.sliding_window_view(pitch, REPETITION_PATTERN)
  _, first = np.unique(patterns, axis=0, return_index=True)
  return 1.0 - len(first) / len(patterns)


def set_features(pieces: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
  """Per-piece features of a set: ``{feature: [pieces, dimension]}``."""
  per_piece = [piece_features(piece) for piece in pieces]
  return {name: np.stack([features[name] for features in per_piece]) for name in FEATURES}


def intra_set_distances(values: np.ndarray) -> np.ndarray:
  """Euclidean distances between the vectors of every pair of distinct pieces (``[n, d]``)."""
  values = np.asarray(values, dtype=np.float64)
  first, second = np.triu_indices(len(values), k=1)
  return np.linalg.norm(values[first] - values[second], axis=-1)


def inter_set_distances(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
  """Euclidean distances between every piece of one set and every piece of the reference."""
  values = np.asarray(values, dtype=np.float64)
  reference = np.asarray(reference, dtype=np.float64)
  return np.linalg.norm(values[:, None, :] - reference[None, :, :], axis=-1).ravel()


def bandwidth(samples: np.ndarray, scale: float) -> float:
  """Scott's rule, ``std * n^(-1/5)`` (scipy's ``gaussian_kde`` default), floored.

  Floored at ``1e-3 * scale`` (``scale``: the largest magnitude in the samples being compared) so
  that a sample of identical values still gets a narrow bump rather than a zero-width one.
  """
  samples = np.asarray(samples, dtype=np.float64)
  scott = samples.std(ddof=1) * len(samples) ** (-1 / 5) if len(samples) > 1 else 0.0
  return max(scott, 1e-3 * max(scale, 1e-9))


def _integral(values: np.ndarray, grid: np.ndarray) -> float:
  """Trapezoid rule (numpy's own is ``trapz`` before 2.0 and ``trapezoid`` after)."""
  return float(((values[1:] + values[:-1]) * np.diff(grid)).sum() / 2)


def kernel_density(samples: np.ndarray, grid: np.ndarray, width: float) -> np.ndarray:
  """Gaussian kernel density estimate of ``samples`` at ``grid`` points."""
  samples = np.asarray(samples, dtype=np.float64)
  z = (grid[:, None] - samples[None, :]) / width
  return np.exp(-0.5 * z * z).sum(axis=1) / (len(samples) * width * np.sqrt(2 * np.pi))


def overlap_and_divergence(reference: np.ndarray,
                           other: np.ndarray) -> dict[str, float | np.ndarray]:
  """OA and KL(reference || other) between the kernel densities of two distance samples.

  Both densities are evaluated on one grid of :data:`GRID_POINTS` points from the smallest
  sample value minus 3 bandwidths to the largest plus 3 (each density's own Scott bandwidth;
  together they hold all but a negligible share of both masses), renormalised to integrate to 1
  on the grid (trapezoid rule), and then ``OA = integral of min(p, q)`` and ``KLD = integral of
  p log(p / q)`` with ``q`` floored at :data:`KL_FLOOR` times its peak. Returns ``oa``,
  ``kld`` and, for plots, ``grid``, ``reference_density`` and ``other_density``.
  """
  reference = np.asarray(reference, dtype=np.float64)
  other = np.asarray(other, dtype=np.float64)
  scale = float(max(np.abs(reference).max(), np.abs(other).max()))
  widths = bandwidth(reference, scale), bandwidth(other, scale)
  low = min(reference.min(), other.min()) - 3 * max(widths)
  high = max(reference.max(), other.max()) + 3 * max(widths)
  grid = np.linspace(low, high, GRID_POINTS)
  p = kernel_density(reference, grid, widths[0])
  q = kernel_density(other, grid, widths[1])
  p /= _integral(p, grid)
  q /= _integral(q, grid)
  q_floored = np.maximum(q, KL_FLOOR * q.max())
  with np.errstate(divide='ignore', invalid='ignore'):
    integrand = np.where(p > 0, p * np.log(p / q_floored), 0.0)
  return {'oa': float(_integral(np.minimum(p, q), grid)),
          'kld': float(max(_integral(integrand, grid), 0.0)),
          'grid': grid, 'reference_density': p, 'other_density': q}


def compare_sets(reference: Mapping[str, np.ndarray],
                 other: Mapping[str, np.ndarray]) -> dict[str, dict]:
  """Per feature of :data:`FEATURES`, how ``other``'s pieces sit among ``reference``'s.

  Takes two outputs of :func:`set_features` (the reference needs at least 3 pieces, so that
  its intra-set distances are a sample of more than one). Returns ``{feature: {'oa', 'kld',
  'intra', 'inter', 'grid', 'reference_density', 'other_density'}}``: the intra-set distances
  of the reference, the inter-set distances between the two sets, and
  :func:`overlap_and_divergence` of those two samples.
  """
  if len(next(iter(reference.values()))) < 3:
    raise ValueError('the reference set needs at least 3 pieces')
  comparison = {}
  for name in FEATURES:
    intra = intra_set_distances(reference[name])
    inter = inter_set_distances(other[name], reference[name])
    comparison[name] = {'intra': intra, 'inter': inter,
                        **overlap_and_divergence(intra, inter)}
  return comparison
