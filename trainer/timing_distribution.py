"""The distribution of a note's step or duration: a mixture of logistics over log-seconds.

The step also has a point mass at 0 (the notes of one chord).

Its parameters, each ``[batch, components]`` but the chord logit ``[batch]`` (the export's
``predict_next`` returns them under these names with a ``step_`` or ``duration_`` prefix):

* ``mixture_logits``: unnormalised log-weights of the components;
* ``locations``: each component's location, log-seconds;
* ``scales``: each component's scale (> 0), log-seconds;
* ``chord_logit`` (step only): the log-odds that the step is 0.

The last components of each mixture may be *anchored* (``model.timing_anchors``): one per
recent value of the same part in the window (the last steps, or the last durations), located
exactly at that value's logarithm, sharing one learned scale, with a learned weight each. Music
repeats its times: on ``piano-midi`` 66% of the steps that are not chords fall in the very 10 ms
bin of one of the two nonzero steps before them (78% within a bin of it), and 74% of the
durations in the bin of one of the eight durations before them (82%), which free components
can only approximate. An anchor the window does not have (a step of 0, a zero duration, a
position before the piece) gets the weight 0, a mixture logit of :data:`ABSENT_LOGIT`.

So ``log(time)`` has the density ``sum_k w_k logistic((u - locations_k) / scales_k) / scales_k``
with ``w = softmax(mixture_logits)``; for the step that density is scaled by
``1 - sigmoid(chord_logit)``. Trained by maximum likelihood of the 10 ms bin holding the true
time (``partita.timing_bins``): the bin's mass is a difference of the logistic's cumulative
distribution, the sigmoid, at the bin's edges, so the loss is the very NLL that the evaluation
reports and a component cannot shrink onto a repeated value to gain an unbounded density.
Times on a log scale, because musical steps and durations span three decades (a grace note's
20 ms to a held chord's 20 s) and ratios, not differences, are what a listener hears.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from partita import timing_bins

# The smallest scale, log-seconds: keeps every component's mass spread over at least a few
# bins' worth of log-time.
MIN_SCALE = 0.01
# The anchored components' smallest scale: a tenth of a 10 ms bin's width at 1 s, so that an
# anchor can put nearly all its mass in its own bin (a repeated time of sequenced MIDI);
# trained on bins, its likelihood cannot exceed 1 however small the scale.
ANCHOR_MIN_SCALE = 0.001
PARAMETERS = ('mixture_logits', 'locations', 'scales')
CHORD_LOGIT = 'chord_logit'
# The mixture logit of an anchor the window does not have: a weight of 0 to float precision,
# finite so that no softmax or Gumbel draw meets inf - inf.
ABSENT_LOGIT = -1e9


def parameter_count(components: int, chord: bool, anchors: int = 0) -> int:
  """Outputs of the dense layer that :func:`from_dense` reads.

  Per free component a logit, a location and a scale, the chord logit, and per anchor a logit
  plus the anchors' one scale.
  """
  return 3 * components + int(chord) + (anchors + 1 if anchors else 0)


def from_dense(outputs: tf.Tensor, components: int, chord: bool, location_offset: float,
               anchors: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
  """Splits a dense layer's ``[batch, parameter_count]`` outputs into named parameters.

  ``location_offset`` (log-seconds) shifts every free location, so that an untrained layer
  (outputs near 0) starts near the training split's typical time rather than at 1 s.
  ``anchors``: ``[batch, n]`` recent times in seconds, or None; each becomes one more component,
  after the free ones.
  """
  free = 3 * components
  logits, locations, raw_scales = tf.split(outputs[:, :free], 3, axis=-1)
  parameters = {'mixture_logits': logits, 'locations': locations + location_offset,
                'scales': tf.nn.softplus(raw_scales) + MIN_SCALE}
  if chord:
    parameters[CHORD_LOGIT] = outputs[:, free]
  if anchors is not None:
    count = anchors.shape[-1]
    start = free + int(chord)
    present = anchors >= timing_bins.BIN_SECONDS / 2  # not in bin 0
    anchor_logits = tf.where(present, outputs[:, start:start + count], ABSENT_LOGIT)
    anchor_scales = (tf.nn.softplus(outputs[:, start + count:start + count + 1])
                     + ANCHOR_MIN_SCALE)
    parameters['mixture_logits'] = tf.concat([logits, anchor_logits], axis=-1)
    parameters['locations'] = tf.concat([parameters['locations'], tf.math.log(
        tf.maximum(anchors, timing_bins.BIN_SECONDS / 2))], axis=-1)
    parameters['scales'] = tf.concat(
        [parameters['scales'], tf.tile(anchor_scales, [1, count])], axis=-1)
  return parameters


def to_bins(seconds: tf.Tensor) -> tf.Tensor:
  """The grid bin of each time, as ``partita.timing_bins.to_bins`` (but in float32)."""
  bins = tf.floor(seconds / timing_bins.BIN_SECONDS + 0.5)
  return tf.cast(tf.clip_by_value(bins, 0, timing_bins.NUM_BINS - 1), tf.int32)


def _log1mexp(x: tf.Tensor) -> tf.Tensor:
  """``log(1 - exp(-x))`` for x > 0, accurate for small and large x (Maechler 2012)."""
  return tf.where(x > np.log(2.0), tf.math.log1p(-tf.exp(-x)), tf.math.log(-tf.math.expm1(-x)))


def log_bin_probability(parameters: dict[str, tf.Tensor], bins: tf.Tensor) -> tf.Tensor:
  """``[batch]`` natural-log probabilities of one grid bin per row (int ``[batch]``)."""
  lower = tf.gather(tf.constant(timing_bins.LOG_LOWER, tf.float32), bins)[:, None]
  upper = tf.gather(tf.constant(timing_bins.LOG_UPPER, tf.float32), bins)[:, None]
  width = tf.gather(tf.constant(timing_bins.LOG_WIDTH, tf.float32), bins)[:, None]
  scales = parameters['scales']
  above = (upper - parameters['locations']) / scales
  below = (lower - parameters['locations']) / scales
  # log(sigmoid(above) - sigmoid(below)), without subtracting two nearly equal numbers.
  component = tf.math.log_sigmoid(above) - tf.nn.softplus(below) + _log1mexp(width / scales)
  log_weights = tf.nn.log_softmax(parameters['mixture_logits'], axis=-1)
  log_probability = tf.reduce_logsumexp(log_weights + component, axis=-1)
  if CHORD_LOGIT not in parameters:
    return log_probability
  chord = parameters[CHORD_LOGIT]
  not_chord = tf.math.log_sigmoid(-chord) + log_probability
  # Bin 0 holds step 0 as well as the continuous part's mass below 5 ms.
  return tf.where(bins == 0, tf.reduce_logsumexp(
      tf.stack([tf.math.log_sigmoid(chord), not_chord]), axis=0), not_chord)


def uniforms_per_draw(components: int) -> int:
  """Uniform numbers :func:`sample` takes per row.

  A Gumbel draw per component, one for the logistic and one for the chord.
  """
  return components + 2


def sample(parameters: dict[str, tf.Tensor], temperature: tf.Tensor,
           uniform: tf.Tensor) -> tf.Tensor:
  """One time per row, seconds (``[batch]``), drawn with ``temperature``.

  Temperature divides the mixture's logits and the chord logit, as it divides the pitch logits,
  and multiplies every scale: at 1 the draw is from the distribution itself, below 1 it
  concentrates on the likeliest component and its centre, above 1 it spreads.
  ``uniform``: ``[batch, uniforms_per_draw(components)]`` numbers in (0, 1), the row's random
  draws (the caller's seeds decide them); the same parameters and uniforms give the same time.
  A time beyond the grid's last bin centre is that centre, ``timing_bins.LONGEST_SECONDS``.
  """
  logits = parameters['mixture_logits'] / temperature
  components = logits.shape[-1]
  # Gumbel-max picks a component with probability softmax(logits).
  gumbel = -tf.math.log(-tf.math.log(uniform[:, :components]))
  chosen = tf.argmax(logits + gumbel, axis=-1, output_type=tf.int32)
  location = tf.gather(parameters['locations'], chosen, batch_dims=1)
  scale = tf.gather(parameters['scales'], chosen, batch_dims=1) * temperature
  logistic = uniform[:, components]
  # The logistic's inverse cumulative distribution.
  log_seconds = location + scale * (tf.math.log(logistic) - tf.math.log1p(-logistic))
  seconds = tf.minimum(tf.exp(log_seconds), timing_bins.LONGEST_SECONDS)  # inf included
  if CHORD_LOGIT not in parameters:
    return seconds
  chord = tf.math.log(uniform[:, components + 1]) < tf.math.log_sigmoid(
      parameters[CHORD_LOGIT] / temperature)
  return tf.where(chord, 0.0, seconds)
