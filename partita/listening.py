"""Measures a listener hears: pulse, key, texture, and the plain features a two-sample test reads.

Generated pieces can match the music statistics of ``partita.music_stats`` on average and still
have no pulse, stray from their key or stack voices. These per-piece measures name those faults
directly. Each takes a notes dict (``pitch``, ``step``, ``duration``; numpy arrays; ``step`` in
seconds since the previous onset, ``duration`` in seconds; at least one note). Onset times are
``music_stats.onsets_from_first`` (the cumulative steps, the first note at 0: only differences
matter here), heard as ``music_stats.perceived_onsets`` hears them (onsets less than 5 ms after a
group's first onset are one onset, at that first onset's time).

* :func:`on_grid_share` (metrical regularity): the share of distinct onsets within
  :data:`GRID_TOLERANCE` (20 ms) of the piece's own grid. The grid's spacing comes from the most
  common inter-onset interval (IOI) between consecutive distinct onsets, after rounding to
  :data:`IOI_ROUNDING` (10 ms; ties go to the shorter interval): half of it when it is over
  :data:`SUBDIVIDE_ABOVE` (0.2 s, so that a piece of quarter notes with some eighths is on its
  grid), else the IOI itself. The grid's origin is the first onset; an onset ``t`` is on the grid
  when ``|t - t0 - g * round((t - t0) / g)| <= 0.020``. A piece with one distinct onset has no
  IOI and scores 1 (its one onset is the grid's origin).
* :func:`key_stability`: the share of sliding :data:`KEY_WINDOW`-note windows (stride
  :data:`KEY_STRIDE`, 1) whose best-fitting key is the piece's own (:func:`piece_key`). A key is
  the best of the 24 Krumhansl-Kessler profiles (:data:`KEY_PROFILES`) by Pearson correlation
  with the **count-weighted** pitch-class histogram: note counts, not durations, so that one
  held note cannot outweigh a melody (generated durations can run to seconds), and so that the
  windows, counted in notes, weigh every note alike. Ties go to the first key in
  :data:`KEY_NAMES` order. A histogram with every pitch class equally often (a chromatic run)
  correlates with no profile and has no key (-1): such a window never matches. A piece shorter
  than a window is one window, the piece itself, and scores 1.
* :func:`notes_per_onset` (texture): the mean number of notes starting at each perceived onset.
* :func:`pitch_span` (texture): the pitch span (highest minus lowest pitch, semitones) of the
  notes *starting* in each :data:`STRETCH_SECONDS` (4 s) stretch ``[t0 + 4k, t0 + 4(k + 1))``
  from the first onset, median over the stretches that hold a note (the last one may be short).
* :func:`feature_vector`: the :data:`FEATURE_NAMES` (24 numbers) a two-sample classifier reads.

No TensorFlow or Beam here: plain numpy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from partita import music_stats

GRID_TOLERANCE = 0.020  # seconds
IOI_ROUNDING = 0.010  # seconds
SUBDIVIDE_ABOVE = 0.2  # seconds: a modal IOI longer than this is halved into the grid
# Floating-point slack on the grid test, so that an onset exactly 20 ms off counts as on.
_SLACK = 1e-9
KEY_WINDOW = 32  # notes
KEY_STRIDE = 1
STRETCH_SECONDS = 4.0
# Krumhansl & Kessler (1982), "Tracing the dynamic changes in perceived tonal organization in a
# spatial representation of musical keys", Psychological Review 89(4), 334-368: probe-tone
# ratings of each pitch class in a major and a minor context, tonic first (as tabulated in
# Krumhansl, "Cognitive Foundations of Musical Pitch", 1990, and used by the
# Krumhansl-Schmuckler key-finding algorithm).
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
PITCH_CLASS_NAMES = ('C', 'C#', 'D', 'Eb', 'E', 'F', 'F#', 'G', 'Ab', 'A', 'Bb', 'B')
# Key k < 12 is the major key on pitch class k, key 12 + k the minor key on pitch class k.
KEY_NAMES = tuple([f'{name} major' for name in PITCH_CLASS_NAMES]
                  + [f'{name} minor' for name in PITCH_CLASS_NAMES])
# [24, 12]: each key's profile rotated so that its tonic's rating sits at its pitch class.
KEY_PROFILES = np.stack([np.roll(KK_MAJOR, tonic) for tonic in range(12)]
                        + [np.roll(KK_MINOR, tonic) for tonic in range(12)])
NO_KEY = -1
# A step of more than this many semitones between consecutive notes is a leap.
LEAP_SEMITONES = 7
# Durations are floored here before their log (a zero-length note would be -inf).
MIN_DURATION = 1e-3  # seconds
FEATURE_NAMES = tuple(
    [f'pitch_class_share_{rank}' for rank in range(1, 13)]
    + ['pitch_mean', 'pitch_std', 'pitch_range', 'notes_per_onset', 'log_step_mean',
       'log_step_std', 'log_duration_mean', 'log_duration_std', 'mean_abs_interval',
       'leap_share', 'onsets_per_second', 'on_grid_share'])
MEASURES = ('on_grid_share', 'key_stability', 'notes_per_onset', 'pitch_span')


def _perceived(notes: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  """The piece's perceived onset times (from 0) and the number of notes starting at each."""
  if not len(notes['pitch']):
    raise ValueError('a piece needs at least one note')
  return music_stats.perceived_onsets(music_stats.onsets_from_first(notes['step']))


def grid_spacing(times: np.ndarray) -> float | None:
  """The grid spacing of distinct onset ``times`` (sorted).

  The modal IOI rounded to 10 ms, halved when over 0.2 s; None with fewer than two onsets.
  """
  if len(times) < 2:
    return None
  # Whole units of IOI_ROUNDING; perceived onsets lie at least 5 ms apart, and an interval that
  # rounds to 0 counts as one unit, so the grid is never empty.
  units = np.maximum(np.floor(np.diff(times) / IOI_ROUNDING + 0.5).astype(np.int64), 1)
  modal = int(np.argmax(np.bincount(units)))  # ties: the shortest interval
  ioi = modal * IOI_ROUNDING
  return ioi / 2 if modal * IOI_ROUNDING > SUBDIVIDE_ABOVE + _SLACK else ioi


def on_grid_share(notes: Mapping[str, np.ndarray]) -> float:
  """The share of the piece's distinct onsets within 20 ms of its own grid (see the module)."""
  times, _ = _perceived(notes)
  spacing = grid_spacing(times)
  if spacing is None:
    return 1.0
  offsets = times - times[0]
  error = np.abs(offsets - spacing * np.round(offsets / spacing))
  return float(np.mean(error <= GRID_TOLERANCE + _SLACK))


def best_keys(histograms: np.ndarray) -> np.ndarray:
  """The best-fitting key (an index of :data:`KEY_NAMES`) of each pitch-class histogram.

  The histograms are ``[n, 12]``; the key is the Krumhansl-Kessler profile each correlates with
  most; :data:`NO_KEY` for a flat histogram.
  """
  histograms = np.asarray(histograms, dtype=np.float64)
  centred = histograms - histograms.mean(axis=1, keepdims=True)
  profiles = KEY_PROFILES - KEY_PROFILES.mean(axis=1, keepdims=True)
  norms = np.linalg.norm(centred, axis=1)
  correlation = (centred @ profiles.T) / np.linalg.norm(profiles, axis=1)
  keys = np.argmax(correlation, axis=1)  # dividing by each row's norm would not change it
  return np.where(norms > _SLACK, keys, NO_KEY)


def pitch_class_counts(pitch: np.ndarray) -> np.ndarray:
  """The 12 counts of the pitch classes of ``pitch``, C first."""
  return np.bincount(np.asarray(pitch, dtype=np.int64) % 12, minlength=12).astype(np.float64)


def piece_key(notes: Mapping[str, np.ndarray]) -> int:
  """The piece's best-fitting key over all its notes (an index of :data:`KEY_NAMES`)."""
  return int(best_keys(pitch_class_counts(notes['pitch'])[None])[0])


def window_keys(notes: Mapping[str, np.ndarray]) -> np.ndarray:
  """The best-fitting key of each sliding :data:`KEY_WINDOW`-note window.

  The stride is :data:`KEY_STRIDE`; the piece itself is the one window of a piece shorter than
  that.
  """
  pitch_class = np.asarray(notes['pitch'], dtype=np.int64) % 12
  one_hot = np.eye(12)[pitch_class]
  if len(pitch_class) <= KEY_WINDOW:
    return best_keys(one_hot.sum(axis=0)[None])
  totals = np.concatenate([np.zeros((1, 12)), np.cumsum(one_hot, axis=0)])
  starts = np.arange(0, len(pitch_class) - KEY_WINDOW + 1, KEY_STRIDE)
  return best_keys(totals[starts + KEY_WINDOW] - totals[starts])


def key_stability(notes: Mapping[str, np.ndarray]) -> float:
  """The share of the piece's windows whose key is the piece's own key (see the module)."""
  key = piece_key(notes)
  if key == NO_KEY:
    return 0.0
  return float(np.mean(window_keys(notes) == key))


def notes_per_onset(notes: Mapping[str, np.ndarray]) -> float:
  """The mean number of notes starting at each perceived onset."""
  _, sizes = _perceived(notes)
  return float(sizes.mean())


def pitch_span(notes: Mapping[str, np.ndarray]) -> float:
  """The median span (semitones) of the pitches starting in each 4-second stretch.

  The median is over the 4-second stretches holding an onset.
  """
  pitch = np.asarray(notes['pitch'], dtype=np.int64)
  if not len(pitch):
    raise ValueError('a piece needs at least one note')
  start = music_stats.onsets_from_first(notes['step'])
  stretch = np.floor((start - start.min()) / STRETCH_SECONDS + _SLACK).astype(np.int64)
  spans = [np.ptp(pitch[stretch == k]) for k in np.unique(stretch)]
  return float(np.median(spans))


def piece_measures(notes: Mapping[str, np.ndarray]) -> dict[str, float]:
  """Every measure of :data:`MEASURES` for one piece."""
  return {'on_grid_share': on_grid_share(notes), 'key_stability': key_stability(notes),
          'notes_per_onset': notes_per_onset(notes), 'pitch_span': pitch_span(notes)}


def set_measures(pieces: Sequence[Mapping[str, np.ndarray]]) -> dict[str, dict]:
  """Each measure over a set of pieces: ``{measure: {'median', 'mean', 'values'}}``.

  The values are per piece, in the set's order.
  """
  if not len(pieces):
    raise ValueError('no pieces to measure')
  per_piece = [piece_measures(piece) for piece in pieces]
  summary = {}
  for name in MEASURES:
    values = np.array([measures[name] for measures in per_piece])
    summary[name] = {'median': float(np.median(values)), 'mean': float(values.mean()),
                     'values': values.tolist()}
  return summary


def _log_stats(values: np.ndarray) -> list[float]:
  """Mean and population standard deviation of ``log(values)``; 0 and 0 when empty."""
  if not len(values):
    return [0.0, 0.0]
  logs = np.log(values)
  return [float(logs.mean()), float(logs.std())]


def feature_vector(notes: Mapping[str, np.ndarray]) -> np.ndarray:
  """The :data:`FEATURE_NAMES` of one piece, as float64.

  Its pitch-class shares sorted from the largest down (so the key does not matter), the mean,
  standard deviation and range of its pitches, :func:`notes_per_onset`, the mean and standard
  deviation of the log of its nonzero steps (after the first note's; 0 and 0 without any) and of
  the log of its durations (floored at 1 ms), the mean absolute interval between consecutive
  notes and the share of those over 7 semitones (0 and 0 for one note), perceived onsets per
  second (from the first onset to the last note's end; the count itself when that is 0) and
  :func:`on_grid_share`.
  """
  pitch = np.asarray(notes['pitch'], dtype=np.float64)
  step = np.asarray(notes['step'], dtype=np.float64)[1:]
  duration = np.asarray(notes['duration'], dtype=np.float64)
  times, sizes = _perceived(notes)
  start = music_stats.onsets_from_first(notes['step'])
  span = float((start + duration).max() - start.min())
  intervals = np.abs(np.diff(pitch))
  shares = np.sort(pitch_class_counts(pitch))[::-1] / len(pitch)
  return np.array([
      *shares, pitch.mean(), pitch.std(), np.ptp(pitch), sizes.mean(),
      *_log_stats(step[step > 0]), *_log_stats(np.maximum(duration, MIN_DURATION)),
      intervals.mean() if len(intervals) else 0.0,
      np.mean(intervals > LEAP_SEMITONES) if len(intervals) else 0.0,
      len(times) / span if span > 0 else float(len(times)), on_grid_share(notes)],
      dtype=np.float64)


def feature_matrix(pieces: Sequence[Mapping[str, np.ndarray]]) -> np.ndarray:
  """``[pieces, len(FEATURE_NAMES)]``: :func:`feature_vector` of each piece."""
  if not len(pieces):
    raise ValueError('no pieces to compute features of')
  return np.stack([feature_vector(piece) for piece in pieces])
