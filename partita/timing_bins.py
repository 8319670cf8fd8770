"""The grid on which every predictor's step and duration likelihoods are measured.

A continuous density's value at a point is not a probability and cannot be compared with a
histogram's, so step and duration are scored as the probability of the 10 ms bin holding the
true value, by the model and by every baseline alike. Bin ``b`` holds the times that round to
``b * BIN_SECONDS``: bin 0 is ``[0, 5 ms)`` (the notes of one chord, step 0, fall in it),
bin ``b`` is ``[(b - 0.5) * 10 ms, (b + 0.5) * 10 ms)``, and the last bin holds everything
from ``(NUM_BINS - 1.5) * 10 ms`` (29.995 s) up. The model's timing distributions live on
log-seconds, so the bins' edges are also given as log-seconds, with finite stand-ins for the
open ends (``log 0`` and ``log inf``).
"""

from __future__ import annotations

import numpy as np

# The parts of a note whose likelihood is measured on this grid.
TIMED_PARTS = ('step', 'duration')
BIN_SECONDS = 0.01
NUM_BINS = 3001  # the last bin, from 29.995 s up, holds every longer time
# The last bin's centre: the longest time a sampler returns. Trained and scored on these bins, a
# distribution says how likely "30 s or longer" is but nothing about how much longer, so a draw
# beyond it is the last bin's draw; unclamped, an untrained model's long logistic tails (fed
# back through the timing anchors) wrote continuations hours long.
LONGEST_SECONDS = (NUM_BINS - 1) * BIN_SECONDS
# Stand-ins for log(0 s) and log(inf s): e^-40 s and e^40 s lie beyond any time a
# distribution of this project puts mass on, so a cumulative distribution is 0 and 1 there
# to float precision.
LOG_ZERO = -40.0
LOG_INFINITY = 40.0


def to_bins(seconds) -> np.ndarray:
  """The bin of each time (int64), times computed in float64 so that every caller agrees."""
  seconds = np.asarray(seconds, dtype=np.float64)
  return np.clip(np.floor(seconds / BIN_SECONDS + 0.5), 0, NUM_BINS - 1).astype(np.int64)


def _log_edges() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  centres = np.arange(NUM_BINS, dtype=np.float64)
  with np.errstate(divide='ignore'):
    lower = np.log(np.maximum(centres - 0.5, 0.0) * BIN_SECONDS)
  upper = np.log((centres + 0.5) * BIN_SECONDS)
  lower[0] = LOG_ZERO
  upper[-1] = LOG_INFINITY
  # The width from the bin counts directly, not as upper - lower of two nearly equal logs.
  width = upper - lower
  width[1:-1] = np.log1p(1.0 / (centres[1:-1] - 0.5))
  return lower, upper, width


# Per bin: its lower and upper edges in log-seconds, and their difference.
LOG_LOWER, LOG_UPPER, LOG_WIDTH = _log_edges()
