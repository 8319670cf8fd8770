"""The Keras model: a window of notes -> the distribution of the next note, part by part.

An encoder reads the window's note features (pitch embedding, timing features) into one vector:
:class:`BiLSTMEncoder` (bidirectional LSTM -> LSTM), or with ``model.encoder=causal``
:class:`CausalEncoder` (two left-to-right LSTMs, which give a vector after every position, see
:meth:`NoteModel.call`), both with one interface for generation (``start``, ``advance``,
``vector``); a head per part of the next note turns it into
that part's distribution: a 128-way softmax for the pitch, a mixture of logistics over
log-seconds for the step and the duration (``trainer.timing_distribution``; the step's with a
point mass at 0 for chords) and a regression for the velocity. Besides the encoder's vector the
heads read the last notes themselves (:meth:`NoteModel.recent`): each timing mixture has
components anchored on the window's last ``model.timing_anchors`` values of its part (the step's
also on its last as many onset steps, :func:`last_onset_steps`), and the pitch logits weigh how
often each pitch sounded lately (:func:`pitch_memory`), because music repeats its times and
pitches exactly and LSTMs learn to carry them only slowly; the heads after the step also see
which of the last notes still sound at the next onset (:func:`sounding_notes`), which an LSTM
would have to sum steps and durations to know.

``model.note_order`` names the order of the parts: each head also sees the parts before its
own (so with ``step_pitch_duration`` the pitch head knows whether the note joins a chord, and
the duration head knows its pitch), which factors the note's likelihood as
``P(step) P(pitch | step) P(duration | step, pitch)`` with every factor exact; the velocity
comes last and sees all three. ``independent`` gives every head the encoder's vector alone.
Training feeds the true earlier parts (teacher forcing); generation feeds the sampled ones.

The piece's label (``partita.labels``: a composer id, 0 for none) conditions the whole note: a
learned embedding of it joins every note's features before the recurrence
(``model.label_conditioning=input``) or the encoder's vector before the heads (``heads``). The
label travels with the notes as one more ``[batch, time]`` feature, ``label``, constant along a
window, so that windows, generation states and every-position training carry it like the rest.

Inputs are raw values (pitch 0..127, step and duration in seconds, velocity 1..127); the timing
inputs are standardised inside the model with the training split's statistics from info.json,
so an exported model needs no preprocessing code from this project.

The LSTMs keep Keras' defaults (tanh, sigmoid recurrent activation, no recurrent dropout,
unroll=False, use_bias=True, use_cudnn='auto') and see no mask, because those are the
conditions for the cuDNN kernel on GPUs; dropout is applied between layers instead of inside
the recurrence for the same reason. Under a mixed-precision policy the embedding and LSTMs
compute in float16 or bfloat16 while the heads compute in float32: a 128-way softmax and the
mixtures' cumulative distributions lose too much in 16 bits.
"""

from __future__ import annotations

import keras
from keras import layers
import numpy as np
import tensorflow as tf

from partita import constants, contract, metre, timing_bins
from trainer import timing_distribution
from trainer.config import ModelConfig


def note_parts(note_order: str) -> tuple[str, ...]:
  """The parts of a note in the order their heads predict them.

  For ``independent`` the order does not matter; this one is the export's.
  """
  if note_order == 'independent':
    return ('step', 'pitch', 'duration')
  return tuple(note_order.split('_'))


# The spans, in notes, over which pitch_memory counts each pitch. Exact pitches only: counts
# per pitch class, tried beside them, lowered the likelihood a little more but made sampled
# continuations loop on one or two pitch classes (docs/model.md; docs/experiments.md,
# "Anchors and pitch memory").
MEMORY_SPANS = (1, 2, 4, 8, 16, 32, 64)
# What the key memory adds to each pitch's memory: its pitch class's share of the longest span,
# whether the class is absent from it, and the log of its (smoothed) count (pitch_memory).
KEY_FEATURES = 3
# The last notes whose sounding the heads see (sounding_notes).
SOUNDING_NOTES = 32
# Sizes of the embeddings of a note's position in its bar and in its beat (partita.metre).
BAR_POSITION_EMBEDDING_DIM = 16
BEAT_POSITION_EMBEDDING_DIM = 8
# Positions in a beat (partita.metre.POSITIONS_PER_QUARTER of them) and in a bar, plus index 0
# for a note without a grid.
BEAT_POSITIONS = 1 + metre.POSITIONS_PER_QUARTER
BAR_POSITIONS = 1 + metre.POSITIONS_PER_QUARTER * metre.MAX_BAR_QUARTERS
# Onset positions are kept on multiples of 1/GRID_POINTS_PER_QUARTER quarter notes (32nd notes
# and sixteenth triplets both are) when float arithmetic leaves them within POSITION_SNAP of one.
GRID_POINTS_PER_QUARTER = 24
POSITION_SNAP = 1e-3


def log_time(seconds: tf.Tensor) -> tf.Tensor:
  """Times as the heads and the encoder see them: ``log(1 + t / 10 ms) / 5``.

  About 0 to 1 from 0 to 15 s, so that the ratios between times, not their differences, count.
  """
  return tf.math.log1p(seconds / timing_bins.BIN_SECONDS) / 5.0


class BiLSTMEncoder(layers.Layer):
  """A bidirectional LSTM, then an LSTM: the vector after a window of note features.

  It reads the whole window again for every vector, so its generation state is the window's
  features, shifted by one note at each step.
  """

  def __init__(self, units: int, dropout: float, **kwargs):
    super().__init__(**kwargs)
    self.bilstm = layers.Bidirectional(layers.LSTM(units, return_sequences=True), name='bilstm')
    self.lstm = layers.LSTM(units, name='lstm')
    self.dropout = layers.Dropout(dropout)

  def call(self, features: tf.Tensor, training: bool = False) -> tf.Tensor:
    """``[batch, window, features]`` -> the ``[batch, units]`` vector after the window."""
    x = self.dropout(self.bilstm(features), training=training)
    return self.dropout(self.lstm(x), training=training)

  def start(self, features: tf.Tensor) -> tf.Tensor:
    """The state after a window's ``[batch, window, features]``: the features themselves."""
    return features

  def advance(self, state: tf.Tensor, features: tf.Tensor) -> tf.Tensor:
    """The state after one more note's ``[batch, 1, features]``."""
    return tf.concat([state[:, 1:], features], axis=1)

  def vector(self, state: tf.Tensor) -> tf.Tensor:
    """The ``[batch, units]`` vector after the notes of ``state``."""
    return self(state)


class CausalEncoder(layers.Layer):
  """Two left-to-right LSTMs: a vector after every position of a sequence of note features.

  Each vector reads the features up to its own. Its generation state is the LSTMs' states and
  the last vector, so that it reads each new note once.
  """

  def __init__(self, units: int, dropout: float, **kwargs):
    super().__init__(**kwargs)
    # Attributes, not a list: see NoteModel's heads.
    self.first_lstm, self.second_lstm = (
        layers.LSTM(units, return_sequences=True, return_state=True, name=f'lstm_{i}')
        for i in range(2))
    self.dropout = layers.Dropout(dropout)

  def every_position(self, features: tf.Tensor, training: bool = False,
                     states: list[tf.Tensor] | None = None) -> tuple[tf.Tensor, list]:
    """``[batch, time, features]`` -> the ``[batch, time, units]`` vectors and the states after.

    Continues from ``states`` (the LSTMs' ``[h, c]`` after the notes before them; None: from the
    start); the states returned are those after the last position.
    """
    x = features
    after = []
    for i, lstm in enumerate((self.first_lstm, self.second_lstm)):
      x, hidden, cell = lstm(x, initial_state=states[2 * i:2 * i + 2] if states else None)
      after += [hidden, cell]
      x = self.dropout(x, training=training)
    return x, after

  def call(self, features: tf.Tensor, training: bool = False) -> tf.Tensor:
    """``[batch, window, features]`` -> the ``[batch, units]`` vector after the window."""
    return self.every_position(features, training)[0][:, -1]

  def start(self, features: tf.Tensor, states: list[tf.Tensor] | None = None) -> dict:
    """The state after ``features``, continuing from the LSTMs' ``states``.

    ``states`` None: from the start.
    """
    vectors, states = self.every_position(features, states=states)
    return {'vector': vectors[:, -1], 'states': states}

  def advance(self, state: dict, features: tf.Tensor) -> dict:
    """The state after one more note's ``[batch, 1, features]``."""
    return self.start(features, state['states'])

  def vector(self, state: dict) -> tf.Tensor:
    """The ``[batch, units]`` vector after the notes of ``state``."""
    return state['vector']


ENCODERS = {'bilstm': BiLSTMEncoder, 'causal': CausalEncoder}  # by model.encoder


def dense_head(part: str, size: int, hidden_units: int) -> keras.Sequential:
  """The float32 layers that turn a head's inputs into ``size`` numbers for ``part``.

  One hidden ReLU layer of ``hidden_units`` (none if 0), then a linear one.
  """
  hidden = [layers.Dense(hidden_units, activation='relu', dtype='float32')
            ] if hidden_units else []
  return keras.Sequential(hidden + [layers.Dense(size, dtype='float32')], name=f'{part}_head')


class NoteModel(keras.Model):
  """The encoder and the per-part heads; see the module docstring."""

  def __init__(self, config: ModelConfig, timing: dict, num_labels: int, **kwargs):
    super().__init__(name='partita', **kwargs)
    self.label_at_input = config.label_conditioning == 'input'
    self.label_embedding = layers.Embedding(num_labels, config.label_embedding_dim,
                                            name='label_embedding')
    self.parts = note_parts(config.note_order)
    self.conditioned = config.note_order != 'independent'
    self.components = config.timing_components
    self.anchors = config.timing_anchors
    self.onset_anchors = self.anchors if config.onset_anchors else 0
    self.memory = config.pitch_memory
    self.key_memory = config.key_memory
    self.metre = config.metre
    if self.metre != 'none':
      self.bar_position_embedding = layers.Embedding(BAR_POSITIONS, BAR_POSITION_EMBEDDING_DIM,
                                                     name='bar_position_embedding')
      self.beat_position_embedding = layers.Embedding(
          BEAT_POSITIONS, BEAT_POSITION_EMBEDDING_DIM, name='beat_position_embedding')
    # Components of each timing mixture at the metre's times (metre_anchors).
    self.metre_anchors = {part: metre_anchor_count(part) if self.metre == 'full' else 0
                          for part in timing_bins.TIMED_PARTS}
    self.sounding = config.sounding
    # The notes a generation state keeps for recent().
    self.history = max(MEMORY_SPANS[-1], self.anchors)
    if self.memory:
      self.pitch_memory_weights = layers.Dense(
          len(MEMORY_SPANS) + KEY_FEATURES * self.key_memory + self.sounding,
          kernel_initializer='zeros', dtype='float32', name='pitch_memory_weights')
    self.timing = {name: (float(timing[name]['mean']), max(float(timing[name]['std']), 1e-6))
                   for name in timing_bins.TIMED_PARTS}
    # A causal encoder trains on the note after every position (trainer.train_loop).
    self.causal = config.encoder == 'causal'
    self.pitch_embedding = layers.Embedding(constants.PITCHES, config.embedding_dim,
                                            name='pitch_embedding')
    self.encoder = ENCODERS[config.encoder](config.lstm_units, config.dropout, name='encoder')
    outputs = {'pitch': constants.PITCHES, 'velocity': 1,
               **{part: timing_distribution.parameter_count(
                   self.components, chord=part == 'step',
                   anchors=self.mixture_size(part) - self.components)
                  for part in timing_bins.TIMED_PARTS}}
    self.heads = {part: dense_head(part, size, config.head_units)
                  for part, size in outputs.items()}
    # Each head an attribute too: a TensorFlow checkpoint (trainer.train_loop's) saves the layers
    # that attributes hold, and none in a dict or list, which Keras 3 tracks for itself only.
    self.pitch_head, self.velocity_head, self.step_head, self.duration_head = (
        self.heads[part] for part in ('pitch', 'velocity', 'step', 'duration'))

  def mixture_size(self, part: str) -> int:
    """Components of ``part``'s timing mixture.

    The free ones, the ones anchored on the last times (for the step, then on the last onset
    steps), then the ones at the metre's times.
    """
    onset_anchors = self.onset_anchors if part == 'step' else 0
    return self.components + self.anchors + onset_anchors + self.metre_anchors[part]

  def note_features(self, notes: dict[str, tf.Tensor]) -> tf.Tensor:
    """``[batch, time]`` notes -> ``[batch, time, features]``, what the recurrence reads."""
    def standardized(name):
      mean, std = self.timing[name]
      return (notes[name] - mean) / std

    timing_features = tf.stack(
        [standardized('step'), standardized('duration'), log_time(notes['step']),
         log_time(notes['duration']), notes['velocity'] / constants.MAX_VELOCITY], axis=-1)
    embedded = self.pitch_embedding(notes['pitch'])
    features = [embedded, tf.cast(timing_features, embedded.dtype)]
    if self.metre != 'none':
      features += self.metre_features(notes, embedded.dtype)
    if self.label_at_input:
      features.append(self.label_embedding(notes[contract.LABEL_FEATURE]))
    return tf.concat(features, axis=-1)

  def metre_features(self, notes: dict[str, tf.Tensor], dtype) -> list[tf.Tensor]:
    """What the encoder reads of each note's metre.

    Its position in the bar and in the beat (embedded), whether it has a grid, its log tempo
    relative to 120 quarter notes per minute and its bar's length in whole 4/4 bars (0 without a
    grid).
    """
    quarter_seconds = tf.cast(notes['quarter_seconds'], tf.float32)
    gridded = tf.cast(quarter_seconds > 0, tf.float32)
    bar_index, beat_index = position_indices(notes['bar_position'], quarter_seconds)
    scalars = tf.stack([
        gridded,
        gridded * tf.math.log(tf.maximum(quarter_seconds, 1e-3) / metre.DEFAULT_QUARTER_SECONDS),
        tf.cast(notes['bar_quarters'], tf.float32) / metre.DEFAULT_BAR_QUARTERS], axis=-1)
    return [tf.cast(self.bar_position_embedding(bar_index), dtype),
            tf.cast(self.beat_position_embedding(beat_index), dtype), tf.cast(scalars, dtype)]

  def with_label(self, hidden: tf.Tensor, label: tf.Tensor) -> tf.Tensor:
    """The encoder's float32 vectors, with the label's embedding if it enters at the heads.

    ``label``: the ids of the notes the vectors end at.
    """
    hidden = tf.cast(hidden, tf.float32)
    if self.label_at_input:
      return hidden
    return tf.concat([hidden, tf.cast(self.label_embedding(label), tf.float32)], axis=-1)

  def encode(self, window: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
    """``[batch, window]`` notes -> the ``[batch, units]`` float32 vector the heads read.

    The heads read it to predict the note after the window (with the label's embedding when it
    enters at the heads).
    """
    return self.with_label(self.encoder(self.note_features(window), training=training),
                           window[contract.LABEL_FEATURE][:, -1])

  def encode_every_position(self, notes: dict[str, tf.Tensor],
                            training: bool = False) -> tf.Tensor:
    """Causal encoder only: ``[batch, time]`` notes -> the ``[batch, time, units]`` float32 vectors.

    Each vector reads the notes up to its own.
    """
    vectors, _ = self.encoder.every_position(self.note_features(notes), training)
    return self.with_label(vectors, notes[contract.LABEL_FEATURE])

  def recent(self, notes: dict[str, tf.Tensor], every_position: bool = False) -> dict:
    """What the heads read of the last notes themselves, besides the encoder's vector.

    ``step`` and ``duration``, the last ``timing_anchors`` values of each (``[rows, anchors]``,
    oldest first, 0 where the notes do not reach back that far), which the timing heads anchor
    on; with ``model.onset_anchors``, ``onset_step``, :func:`last_onset_steps`, where the step
    head anchors too; ``pitch_memory``, :func:`pitch_memory` (``[rows, 128, features]``), which
    the pitch head weighs; with ``model.sounding``, ``sounding_pitch`` and ``sounding_end``,
    :func:`sounding_notes`, of which the heads after the step see what still sounds at the next
    onset. A row per window of ``[batch, time]`` notes, after its last note; with
    ``every_position``, a row after every position, flattened to ``batch * time`` rows.
    ``notes``: pitch, step and duration as :func:`heard` gives them (pitch -1 and times 0 where
    there is no note: a neutral prime, or a causal state's history before its first note);
    with the metre, ``quarter_seconds``, ``bar_position`` and ``bar_quarters`` of the last note
    (``[rows]``), which the metre's anchors and the later heads' next position read.
    """
    recent = {}
    if self.anchors:
      for part in timing_bins.TIMED_PARTS:
        padded = tf.pad(tf.cast(notes[part], tf.float32), [[0, 0], [self.anchors, 0]])
        if every_position:
          framed = tf.signal.frame(padded[:, 1:], self.anchors, 1, axis=1)
          recent[part] = tf.reshape(framed, [-1, self.anchors])
        else:
          recent[part] = padded[:, -self.anchors:]
    if self.onset_anchors:
      recent['onset_step'] = last_onset_steps(notes['step'], self.onset_anchors, every_position)
    if self.memory:
      recent['pitch_memory'] = pitch_memory(notes['pitch'], every_position, self.key_memory)
    if self.sounding:
      recent['sounding_pitch'], recent['sounding_end'] = sounding_notes(notes, every_position)
    if self.metre != 'none':
      for name in constants.METRE_FEATURES:
        values = tf.cast(notes[name], tf.float32)
        recent[name] = tf.reshape(values, [-1]) if every_position else values[:, -1]
    return recent

  # Generation walks a state from note to note: the encoder's (see its class), the label, and
  # the last notes as the heads' recent() reads them, padded to `history` notes (no note
  # before the prime's first).

  def start(self, window: dict[str, tf.Tensor]) -> dict:
    """The generation state after a prime window."""
    padding = tf.maximum(self.history - tf.shape(window['pitch'])[1], 0)
    history = {part: tf.pad(values, [[0, 0], [padding, 0]],
                            constant_values=-1 if part == 'pitch' else 0)[:, -self.history:]
               for part, values in heard(window).items()}
    return {'encoder': self.encoder.start(self.note_features(window)), 'history': history,
            'label': window[contract.LABEL_FEATURE][:, -1]}

  def state_vector(self, state: dict) -> tf.Tensor:
    """The ``[batch, units]`` vector the heads read in ``state``."""
    return self.with_label(self.encoder.vector(state['encoder']), state['label'])

  def state_recent(self, state: dict) -> dict[str, tf.Tensor]:
    """:meth:`recent` after the last note of ``state``."""
    return self.recent(state['history'])

  def state_last(self, state: dict, name: str) -> tf.Tensor:
    """The ``[batch]`` value of feature ``name`` at the last note of ``state``.

    ``name`` is one of ``constants.NOTE_FEATURES`` but the velocity.
    """
    return state['history'][name][:, -1]

  def state_pitches(self, state: dict) -> tf.Tensor:
    """The ``[batch, time]`` pitches before the next note of ``state``.

    As :func:`heard` gives them (-1: no note).
    """
    return state['history']['pitch']

  def advance(self, state: dict, note: dict[str, tf.Tensor]) -> dict:
    """The state after one more note (``[batch]`` values of every feature and the label)."""
    note = {name: values[:, None] for name, values in note.items()}  # a one-note sequence
    features = self.note_features(note)
    heard_note = heard(note)
    history = {part: tf.concat([values[:, 1:], tf.cast(heard_note[part], values.dtype)],
                               axis=1) for part, values in state['history'].items()}
    return {'encoder': self.encoder.advance(state['encoder'], features), 'history': history,
            'label': note[contract.LABEL_FEATURE][:, 0]}

  def part_features(self, part: str, value: tf.Tensor, recent: dict[str, tf.Tensor]) -> tf.Tensor:
    """What a later head sees of an earlier part's value (``[batch]`` -> ``[batch, n]``).

    With the metre, a step also says where in the beat the next onset falls (one-hot, of
    :data:`BEAT_POSITIONS`) and whether on a downbeat.
    """
    if part == 'pitch':
      return tf.cast(self.pitch_embedding(value), tf.float32)
    # Under a mixed-precision policy Keras hands the call's float inputs over in 16 bits.
    value = tf.cast(value, tf.float32)
    features = [log_time(value)[:, None]]
    if part == 'step':
      features.append(tf.cast(value < timing_bins.BIN_SECONDS / 2, tf.float32)[:, None])  # chord
      if self.metre != 'none':
        position = advance_position(recent['bar_position'], value, recent['quarter_seconds'],
                                    recent['bar_quarters'])
        _, beat_index = position_indices(position, recent['quarter_seconds'])
        downbeat = (recent['quarter_seconds'] > 0) & (position < 0.5 / GRID_POINTS_PER_QUARTER)
        features += [tf.one_hot(beat_index, BEAT_POSITIONS),
                     tf.cast(downbeat, tf.float32)[:, None]]
    return tf.concat(features, axis=-1)

  def head(self, part: str, hidden: tf.Tensor, note: dict[str, tf.Tensor],
           recent: dict[str, tf.Tensor], training: bool = False):
    """The distribution of ``part`` ('pitch', 'step', 'duration' or 'velocity').

    Given the encoder's ``hidden``, the values in ``note`` of the parts before it and
    :meth:`recent`.

    Returns pitch logits ``[batch, 128]``, a step or duration parameters dict
    (``trainer.timing_distribution``) or the velocity as a fraction of 127 ``[batch]``.
    """
    inputs = [hidden]
    if self.conditioned:
      earlier = self.parts if part == 'velocity' else self.parts[:self.parts.index(part)]
      inputs += [self.part_features(name, note[name], recent) for name in earlier]
    anchors = recent[part] if self.anchors and part in timing_bins.TIMED_PARTS else None
    if self.onset_anchors and part == 'step':
      anchors = tf.concat([anchors, recent['onset_step']], axis=-1)
    if self.metre_anchors.get(part):
      at_metre = metre_anchors(part, recent)
      anchors = at_metre if anchors is None else tf.concat([anchors, at_metre], axis=-1)
    if anchors is not None:
      inputs.append(log_time(anchors))  # so the head knows which anchor is which time
    held = None
    if self.sounding and part != 'step':
      # What still sounds at the next onset: at the step drawn before this part, else at the
      # last onset.
      step = (note['step'] if self.conditioned and 'step' in earlier
              else tf.zeros_like(recent['sounding_end'][:, 0]))
      held = still_sounding(recent['sounding_pitch'], recent['sounding_end'], step)
      inputs.append(tf.math.log1p(tf.reduce_sum(held, axis=-1))[:, None])
    inputs = tf.concat(inputs, axis=-1)
    outputs = self.heads[part](inputs, training=training)
    if part == 'pitch' and self.memory:
      # Each pitch's logit gains its memory features, weighed as this note's context says.
      memory = recent['pitch_memory']
      if held is not None:
        sounding = tf.reduce_max(tf.one_hot(tf.cast(recent['sounding_pitch'], tf.int32),
                                            constants.PITCHES) * held[..., None], axis=1)
        memory = tf.concat([memory, sounding[..., None]], axis=-1)
      weights = self.pitch_memory_weights(inputs)
      return outputs + tf.einsum('rpf,rf->rp', memory, weights)
    if part == 'pitch':
      return outputs
    if part == 'velocity':
      return tf.sigmoid(outputs[:, 0])
    return timing_distribution.from_dense(
        outputs, self.components, chord=part == 'step',
        location_offset=float(np.log(max(self.timing[part][0], timing_bins.BIN_SECONDS))),
        anchors=anchors)

  def call(self, window: dict[str, tf.Tensor], next_note: dict[str, tf.Tensor],
           training: bool = False, every_position: bool = False) -> dict:
    """Every part's distribution for the note after ``window``.

    Each head sees the values in ``next_note`` (``pitch``, ``step``, ``duration``: ``[batch]``) of
    the parts before it.

    ``every_position`` (causal encoder only): the distributions of the note after every
    position of the window instead, flattened to ``[batch * window]`` rows, with ``next_note``
    from :func:`every_position_targets`.
    """
    if every_position:
      hidden = self.encode_every_position(window, training)
      hidden = tf.reshape(hidden, [-1, hidden.shape[-1]])
    else:
      hidden = self.encode(window, training)
    recent = self.recent(heard(window), every_position)
    return {part: self.head(part, hidden, next_note, recent, training)
            for part in self.parts + ('velocity',)}


def heard(notes: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  """Pitch, step and duration of ``[batch, time]`` notes as the heads' memory and anchors read them.

  A position of velocity ``constants.NO_NOTE_VELOCITY`` holds no note, pitch -1 and times 0 (a
  neutral prime's, which the heads would otherwise copy). The metre features pass as they are: a
  neutral prime's carry the tempo and bar its continuation starts in.
  """
  sounding = notes['velocity'] != constants.NO_NOTE_VELOCITY
  return {'pitch': tf.where(sounding, notes['pitch'], tf.constant(-1, notes['pitch'].dtype)),
          **{part: tf.where(sounding, notes[part], tf.zeros_like(notes[part]))
             for part in timing_bins.TIMED_PARTS},
          **{name: notes[name] for name in constants.METRE_FEATURES}}


def position_indices(bar_position: tf.Tensor,
                     quarter_seconds: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """Each onset's position in its bar (of :data:`BAR_POSITIONS`) and in its beat.

  The beat position is of :data:`BEAT_POSITIONS`; both to the nearest 1/12 of a quarter note; 0
  without a grid.
  """
  gridded = tf.cast(quarter_seconds, tf.float32) > 0
  ticks = tf.cast(tf.round(tf.cast(bar_position, tf.float32) * metre.POSITIONS_PER_QUARTER),
                  tf.int32)
  in_bar = 1 + tf.clip_by_value(ticks, 0, BAR_POSITIONS - 2)
  in_beat = 1 + tf.math.floormod(ticks, metre.POSITIONS_PER_QUARTER)
  return tf.where(gridded, in_bar, 0), tf.where(gridded, in_beat, 0)


def advance_position(bar_position: tf.Tensor, step: tf.Tensor, quarter_seconds: tf.Tensor,
                     bar_quarters: tf.Tensor) -> tf.Tensor:
  """The bar position of an onset ``step`` seconds after one at ``bar_position``.

  At a constant tempo (0 without a grid), kept on the 1/24-quarter grid within
  :data:`POSITION_SNAP`.
  """
  gridded = quarter_seconds > 0
  quarters = step / tf.where(gridded, quarter_seconds, 1.0)
  position = tf.math.floormod(bar_position + quarters, tf.where(gridded, bar_quarters, 1.0))
  nearest = tf.round(position * GRID_POINTS_PER_QUARTER) / GRID_POINTS_PER_QUARTER
  position = tf.where(tf.abs(position - nearest) < POSITION_SNAP, nearest, position)
  position = tf.where(position >= bar_quarters - POSITION_SNAP, 0.0, position)
  return tf.where(gridded, position, 0.0)


def step_onto_grid(step: tf.Tensor, bar_position: tf.Tensor,
                   quarter_seconds: tf.Tensor) -> tf.Tensor:
  """A sampled step (seconds) moved so that the onset lands on the 1/24-quarter grid.

  On the nearest point of the grid (on which 32nd notes and sixteenth triplets fall) after an
  onset at ``bar_position``, at least one point later; a chord's 0 and a row without a grid
  (``quarter_seconds`` 0) keep theirs. The grid of a score is what its onsets sit on; a sampled
  time that misses it by a few milliseconds would take every later onset off it.
  """
  gridded = (quarter_seconds > 0) & (step >= timing_bins.BIN_SECONDS / 2)
  quarters = step / tf.where(gridded, quarter_seconds, 1.0)
  target = tf.round((bar_position + quarters) * GRID_POINTS_PER_QUARTER)
  start = tf.round(bar_position * GRID_POINTS_PER_QUARTER)
  # From the grid point nearest the last onset, which is itself on the grid but for a prime's.
  points = tf.maximum(target - start, 1.0)
  on_grid = (start + points) / GRID_POINTS_PER_QUARTER - bar_position
  return tf.where(gridded, on_grid * quarter_seconds, step)


def metre_anchor_count(part: str) -> int:
  """How many components of ``part``'s mixture :func:`metre_anchors` places."""
  count = len(metre.NOTE_VALUES)
  return count + len(metre.SUBDIVISIONS) + 1 if part == 'step' else count


def metre_anchors(part: str, recent: dict[str, tf.Tensor]) -> tf.Tensor:
  """The times (seconds) at which ``part``'s mixture gets a component of its own.

  ``[rows, metre_anchor_count(part)]`` times, at the tempo of the last note (``recent``): each of
  ``partita.metre.NOTE_VALUES``, and for the step the time to the next point of each of
  ``metre.SUBDIVISIONS`` and to the next downbeat, from the last onset's place in its bar. All 0
  (absent components) without a grid. The recent steps anchor repetition; these anchor the
  pulse, whatever was played last.
  """
  quarter_seconds = recent['quarter_seconds'][:, None]
  quarters = tf.tile(tf.constant([metre.NOTE_VALUES], tf.float32),
                     [tf.shape(quarter_seconds)[0], 1])
  if part == 'step':
    position = recent['bar_position'][:, None]
    subdivisions = tf.constant([metre.SUBDIVISIONS], tf.float32)
    # The next grid point strictly after the position, whatever float rounding left there.
    next_point = (tf.floor(position / subdivisions + POSITION_SNAP) + 1) * subdivisions
    quarters = tf.concat([quarters, next_point - position,
                          recent['bar_quarters'][:, None] - position], axis=-1)
  return quarters * quarter_seconds


def pitch_memory(pitches: tf.Tensor, every_position: bool = False,
                 key: bool = False) -> tf.Tensor:
  """For every pitch, how often it sounded lately.

  ``[batch, time]`` pitches (-1: no note) -> ``[rows, 128, features]``, per row (after the last
  note, or with ``every_position`` after every position, flattened) the share of the last ``n``
  notes with that pitch for each ``n`` of :data:`MEMORY_SPANS`; with ``key``, then the
  :data:`KEY_FEATURES` of its pitch class over the longest span: its share, 1 where the class
  is absent (else 0), and ``log((count + 0.5) / (span + 0.5))``.

  Music repeats its pitches; the encoder could carry which ones through its LSTMs into the
  softmax, but learns that slowly, while these counts hand it over exactly (a cache model, as
  the n-gram literature has it, weighed by the network).
  """
  onehot = tf.one_hot(tf.cast(pitches, tf.int32), constants.PITCHES)  # -1: all zeros
  if every_position:
    total = tf.cumsum(onehot, axis=1)
    counts = [tf.reshape(total - tf.pad(total, [[0, 0], [n, 0], [0, 0]])[:, :-n],
                         [-1, constants.PITCHES]) for n in MEMORY_SPANS]
  else:
    counts = [tf.reduce_sum(onehot[:, -n:], axis=1) for n in MEMORY_SPANS]
  features = [count / n for count, n in zip(counts, MEMORY_SPANS)]
  if key:
    # Each pitch's class's count over the longest span: [rows, 128] -> [rows, 12] -> [rows, 128].
    classes = tf.one_hot(tf.range(constants.PITCHES) % 12, 12)
    class_counts = tf.matmul(counts[-1], classes) @ tf.transpose(classes)
    span = MEMORY_SPANS[-1]
    # The share alone is linear: a class heard once weighs almost as little as one never heard,
    # so the head could not tell an out-of-key pitch from a rare one. Its absence and its log
    # (counts smoothed by half a note) can (docs/experiments.md, "The key in three features, and
    # the notes still sounding").
    features += [class_counts / span, tf.cast(class_counts == 0, tf.float32),
                 tf.math.log((class_counts + 0.5) / (span + 0.5))]
  return tf.stack(features, axis=-1)


def sounding_notes(notes: dict[str, tf.Tensor], every_position: bool = False
                   ) -> tuple[tf.Tensor, tf.Tensor]:
  """The last :data:`SOUNDING_NOTES` notes' pitches and ends, in seconds after the last onset.

  ``notes`` as :func:`heard` gives them; ``[rows, SOUNDING_NOTES]`` each (oldest first; pitch -1
  and end 0 where the notes do not reach back that far), a row after the last note or, with
  ``every_position``, after every position.
  """
  count = SOUNDING_NOTES
  framed = {}
  for part, fill in (('pitch', -1), ('step', 0), ('duration', 0)):
    values = tf.cast(notes[part], tf.float32)
    padded = tf.pad(values, [[0, 0], [count - 1, 0]], constant_values=fill)
    framed[part] = (tf.reshape(tf.signal.frame(padded, count, 1, axis=1), [-1, count])
                    if every_position else padded[:, -count:])
  # A note's onset is the later notes' steps before the last onset.
  onset = -tf.cumsum(framed['step'], axis=1, exclusive=True, reverse=True)
  return framed['pitch'], onset + framed['duration']


def last_onset_steps(steps: tf.Tensor, count: int, every_position: bool = False) -> tf.Tensor:
  """The last ``count`` onset steps of ``[batch, time]`` steps: those of half a timing bin or more.

  ``[rows, count]``, oldest first, 0 where the onsets do not reach back that far; a row after
  the last note or, with ``every_position``, after every position. A chord's notes after its
  first have step 0, so in four voices the last 8 steps hold two onsets; the last 8 onsets
  hold the piece's rate.
  """
  steps = tf.cast(steps, tf.float32)
  onset = steps >= timing_bins.BIN_SECONDS / 2
  onsets_so_far = tf.cumsum(tf.cast(onset, tf.int32), axis=1)
  ends = onsets_so_far if every_position else onsets_so_far[:, -1:]
  # Each onset's slot after each row's end: count - 1 for the last onset, count - 2 for the one
  # before it; slots out of 0..count-1 (older onsets, later positions) one_hot leaves at zero.
  slot = count - 1 - (ends[:, :, None] - onsets_so_far[:, None, :])
  weights = tf.one_hot(slot, count) * tf.cast(onset, tf.float32)[:, None, :, None]
  return tf.reshape(tf.einsum('brtc,bt->brc', weights, steps), [-1, count])


def still_sounding(pitch: tf.Tensor, end: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
  """1.0 for each of :func:`sounding_notes` still sounding ``step`` seconds after the last onset.

  That is, ending more than half a timing bin after it; else 0.0 (``[rows, SOUNDING_NOTES]``).
  """
  later = end > tf.cast(step, tf.float32)[:, None] + timing_bins.BIN_SECONDS / 2
  return tf.cast((pitch >= 0) & later, tf.float32)


def every_position_targets(window: dict[str, tf.Tensor],
                           targets: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  """A causal encoder's training targets: the note after each position of the windows.

  The windows are ``[batch, window]``; their next notes are ``targets`` (as
  ``partita.dataset.to_features_and_targets`` makes them, the velocity a fraction of 127); the
  result is flattened to ``[batch * window]``.
  """
  following = {}
  for name, values in targets.items():
    later = window[name][:, 1:]
    if name == 'velocity':
      later = later / constants.MAX_VELOCITY
    following[name] = tf.reshape(tf.concat([later, values[:, None]], axis=1), [-1])
  return following


def build_model(config: ModelConfig, window_length: int, timing: dict,
                num_labels: int) -> NoteModel:
  """A :class:`NoteModel` with its variables created (call it in the strategy's scope).

  Args:
    config: sizes, dropout, note order, mixture components, label conditioning.
    window_length: input notes per window.
    timing: ``info['timing']``: mean and std of step and duration on the training split.
    num_labels: the size of ``info['labels']['vocabulary']``.
  """
  model = NoteModel(config, timing, num_labels)
  window = {'pitch': tf.zeros([1, window_length], tf.int32),
            contract.LABEL_FEATURE: tf.zeros([1, window_length], tf.int32),
            **{name: tf.zeros([1, window_length]) for name in constants.NOTE_FEATURES[1:]}}
  model(window, {'pitch': tf.zeros([1], tf.int32), 'step': tf.zeros([1]),
                 'duration': tf.zeros([1])})
  return model
