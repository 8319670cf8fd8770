"""SavedModel export with two signatures that need none of this project's code to serve.

``predict_next``: a batch of windows, and the next note's parts that later heads condition on
-> the distribution of every part of the next note.
``generate``: prime windows + sampling parameters -> ``num_notes`` new notes per prime, the whole
sampling loop running inside the graph (one call per batch, not one per note), every part of
every note sampled from its distribution in the model's note order. Each row has its own seed,
and its random numbers are stateless draws from that seed and the note index alone, so a row's
notes depend only on its own prime, parameters and seed, whatever else is in the batch. With a
``label_guidance`` other than 1, each piece is run twice, with its label and with the
unconditional id, and every part is drawn from the two distributions combined (:func:`guided`).

``export_model`` writes locally or to object stores (``gs://``) without ever leaving a
half-written export that looks complete (see its docstring).

The names of the functions and of their arguments (which readers pass by name), the assets and
the limits are the export contract, ``partita.export_contract``, which every reader of an export
shares.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from partita import constants, contract, export_contract, originality, timing_bins
from partita import labels as labels_lib
from trainer import model as model_lib
from trainer import pitch_ngram, timing_distribution


def _sample_pitch(logits, temperature, top_k, top_p, uniform):
  """Samples one pitch per row from logits filtered by temperature, top-k and top-p.

  ``uniform`` holds ``[batch, 128]`` numbers in (0, 1), the row's random draws.
  """
  logits = logits / temperature
  # top-k: drop everything below the k-th largest logit.
  kth_largest = tf.gather(tf.sort(logits, direction='DESCENDING'), top_k - 1, axis=-1)
  logits = tf.where(logits < kth_largest[:, None], -np.inf, logits)
  # top-p (nucleus): keep the smallest set of pitches whose probability reaches top_p.
  sorted_logits = tf.sort(logits, direction='DESCENDING')
  sorted_probs = tf.nn.softmax(sorted_logits)
  probability_before = tf.cumsum(sorted_probs, axis=-1, exclusive=True)
  kept = tf.where(probability_before < top_p, sorted_logits, np.inf)
  threshold = tf.reduce_min(kept, axis=-1, keepdims=True)
  logits = tf.where(logits < threshold, -np.inf, logits)
  # Gumbel-max: the argmax of logits plus Gumbel noise is a draw from softmax(logits). Unlike
  # stateless_categorical it compiles with XLA on CPU (see _Generator.sampling_loop).
  return tf.argmax(logits - tf.math.log(-tf.math.log(uniform)), axis=-1, output_type=tf.int32)


def row_uniforms(seeds: tf.Tensor, width: int) -> tf.Tensor:
  """``[batch, 2]`` stateless seeds -> ``[batch, width]`` uniform numbers in (0, 1).

  Row ``b`` is drawn from ``seeds[b]`` alone (so the same seed gives the same row in any batch).
  """
  return tf.vectorized_map(lambda seed: tf.random.stateless_uniform(
      [width], seed, minval=np.finfo(np.float32).tiny, maxval=1.0), seeds)


def row_seeds(seed: tf.Tensor, batch: tf.Tensor) -> tf.Tensor:
  """``generate``'s seed argument -> one int64 seed per row, so that the rows of one call differ.

  A ``[batch]`` vector as it is, a scalar ``s`` as ``s, s + 1, ..., s + batch - 1`` (modulo
  2**63, as ``partita.export_contract.row_seeds``).
  """
  seed = tf.convert_to_tensor(seed, tf.int64)
  return tf.cond(
      tf.equal(tf.rank(seed), 0),
      lambda: tf.bitwise.bitwise_and(tf.reshape(seed, []) + tf.range(batch, dtype=tf.int64),
                                     export_contract.MAX_SEED),
      lambda: tf.reshape(seed, [-1]))


class _Generator:
  """Builds the exported functions around a trained :class:`trainer.model.NoteModel`.

  And, if given, the :class:`trainer.pitch_ngram.PitchNGrams` mixed into its pitch distribution.
  """

  def __init__(self, model: model_lib.NoteModel, ngrams: pitch_ngram.PitchNGrams | None):
    self.model = model
    self.ngrams = ngrams

  def pitch_logits(self, logits, pitches, label):
    """The pitch head's logits, mixed with the n-grams (log-probabilities) if there are any.

    ``pitches``: the ``[batch, time]`` pitches before the note (-1: no note).
    """
    if self.ngrams is None:
      return logits
    return self.ngrams.mix(logits, pitches, label)

  def predict_next(self, pitch, step, duration, velocity, quarter_seconds, bar_position,
                   bar_quarters, next_step, next_pitch, next_duration, label):
    window = with_label(window_dict(pitch, step, duration, velocity, quarter_seconds,
                                    bar_position, bar_quarters), label)
    outputs = self.model(window, {'step': next_step, 'pitch': next_pitch,
                                  'duration': next_duration}, training=False)
    result = {'pitch_logits': self.pitch_logits(outputs['pitch'],
                                                model_lib.heard(window)['pitch'], label),
              'velocity': _velocity(outputs['velocity'])}
    for part in timing_bins.TIMED_PARTS:
      result.update({f'{part}_{name}': value for name, value in outputs[part].items()})
    return result

  def next_note(self, state, label, temperature, top_k, top_p, seeds, label_guidance=None):
    """Samples the note after generation ``state`` of pieces labelled ``label``, part by part.

    ``state`` is ``NoteModel.start``'s, ``label`` ``[rows]``. The parts are drawn in the model's
    note order, each part seen by the heads after it. ``seeds`` ``[batch, 2]``: each row's
    stateless seed for this note; one draw per row gives every part its random numbers.

    With ``label_guidance`` (a scalar), ``state`` holds ``2 * batch`` rows, the pieces with
    their labels and then the same pieces with the unconditional id, and each part is drawn
    from :func:`guided` distributions of the two halves.
    """
    hidden = self.model.state_vector(state)
    recent = self.model.state_recent(state)
    widths = [constants.PITCHES if part == 'pitch' else
              timing_distribution.uniforms_per_draw(self.model.mixture_size(part))
              for part in self.model.parts]
    rows = tf.shape(seeds)[0]
    uniforms = tf.split(row_uniforms(seeds, sum(widths)), widths, axis=-1)
    note = {}
    # What the heads see of the parts drawn so far: each drawn value once per half.
    seen = note if label_guidance is None else {}
    for part, uniform in zip(self.model.parts, uniforms, strict=True):
      distribution = self.model.head(part, hidden, seen, recent)
      if part == 'pitch':
        distribution = self.pitch_logits(distribution, self.model.state_pitches(state), label)
      if label_guidance is not None:
        distribution = guided(part, distribution, label_guidance)
      if part == 'pitch':
        note[part] = _sample_pitch(distribution, temperature, top_k, top_p, uniform)
      else:
        note[part] = timing_distribution.sample(distribution, temperature, uniform)
      if part == 'step' and self.model.metre != 'none':
        note[part] = model_lib.step_onto_grid(note[part], recent['bar_position'][:rows],
                                              recent['quarter_seconds'][:rows])
      if label_guidance is not None:
        seen[part] = tf.tile(note[part], [2])
    velocity = self.model.head('velocity', hidden, seen, recent)
    if label_guidance is not None:
      velocity = guided('velocity', velocity, label_guidance)
    note['velocity'] = _velocity(velocity)
    return note

  def next_metre(self, state, step):
    """The metre features of a note ``step`` seconds after the last of ``state``.

    The same tempo and bar length, the position advanced (``[batch]`` each; ``state`` may hold the
    pieces twice, for guidance).
    """
    rows = tf.shape(step)[0]
    last = {name: self.model.state_last(state, name)[:rows] for name in constants.METRE_FEATURES}
    return {**last, 'bar_position': model_lib.advance_position(
        last['bar_position'], step, last['quarter_seconds'], last['bar_quarters'])}

  def generate(self, pitch, step, duration, velocity, quarter_seconds, bar_position, bar_quarters,
               num_notes, temperature, top_k, top_p, label_guidance, tempo, seed, label):
    limits = export_contract
    within = {
        'temperature': temperature > 0.0,
        'top_k': (top_k >= 1) & (top_k <= constants.PITCHES),
        'top_p': (top_p > 0.0) & (top_p <= 1.0),
        'label_guidance': (label_guidance >= 0.0) & (label_guidance <= limits.MAX_LABEL_GUIDANCE),
        'tempo': (tempo == 0.0) | ((tempo >= limits.MIN_TEMPO) & (tempo <= limits.MAX_TEMPO)),
        'num_notes': (num_notes >= 1) & (num_notes <= limits.MAX_GENERATED_NOTES),
    }
    checks = [tf.debugging.assert_equal(ok, True, message=export_contract.refusal(parameter))
              for parameter, ok in within.items()]
    seeds = row_seeds(seed, tf.shape(pitch)[0])
    checks.append(tf.debugging.assert_equal(
        tf.size(seeds), tf.shape(pitch)[0], message='seed must be a scalar or one per row'))
    checks += label_checks(label, tf.shape(pitch)[0], self.model.label_embedding.input_dim)
    with tf.control_dependencies(checks):
      window = with_label(at_tempo(window_dict(tf.identity(pitch), step, duration, velocity,
                                               quarter_seconds, bar_position, bar_quarters),
                                   tempo), label)
      seeds = tf.identity(seeds)
    # Guidance 1 is the labelled distribution itself: the plain loop, at half the cost.
    return tf.cond(
        tf.equal(label_guidance, 1.0),
        lambda: self.sampling_loop(window, num_notes, temperature, top_k, top_p, seeds),
        lambda: self.guided_sampling_loop(window, num_notes, temperature, top_k, top_p, seeds,
                                          label_guidance))

  # XLA fuses the LSTMs' per-timestep ops, which dominate generation (docs/experiments.md,
  # "Generation"). The argument checks stay outside, in generate: XLA compiles assertions to
  # nothing.
  @tf.function(jit_compile=True)
  def sampling_loop(self, window, num_notes, temperature, top_k, top_p, seeds):
    return self._sample_notes(window, num_notes, temperature, top_k, top_p, seeds)

  @tf.function(jit_compile=True)
  def guided_sampling_loop(self, window, num_notes, temperature, top_k, top_p, seeds,
                           label_guidance):
    unconditional = {**window, contract.LABEL_FEATURE: tf.fill(
        tf.shape(window[contract.LABEL_FEATURE]), labels_lib.UNCONDITIONAL_ID)}
    both = {name: tf.concat([values, unconditional[name]], axis=0)
            for name, values in window.items()}
    return self._sample_notes(both, num_notes, temperature, top_k, top_p, seeds, label_guidance)

  def _sample_notes(self, window, num_notes, temperature, top_k, top_p, seeds,
                    label_guidance=None):
    """The loop of both sampling functions: ``num_notes`` notes after ``window``.

    With ``label_guidance``, ``window`` holds each piece twice, as :meth:`next_note` reads them.
    """
    generated = {name: tf.TensorArray(tf.int32 if name == 'pitch' else tf.float32,
                                      size=num_notes) for name in constants.NOTE_FEATURES}
    label = window[contract.LABEL_FEATURE][:, -1]

    def body(i, state, generated):
      note_seeds = tf.stack([seeds, tf.fill(tf.shape(seeds), tf.cast(i, tf.int64))], axis=1)
      next_note = self.next_note(state, label, temperature, top_k, top_p, note_seeds,
                                 label_guidance)
      next_note.update(self.next_metre(state, next_note['step']))
      generated = {name: generated[name].write(i, next_note[name]) for name in generated}
      if label_guidance is not None:  # both halves continue with the same note
        next_note = {name: tf.tile(values, [2]) for name, values in next_note.items()}
      next_note[contract.LABEL_FEATURE] = label  # the piece keeps its label
      return i + 1, self.model.advance(state, next_note), generated

    _, _, generated = tf.while_loop(lambda i, *_: i < num_notes, body,
                                    (0, self.model.start(window), generated))
    # TensorArrays stack to [notes, batch]; callers expect [batch, notes].
    return {name: tf.transpose(values.stack()) for name, values in generated.items()}


def guided(part: str, distribution, weight: tf.Tensor):
  """Classifier-free guidance (Ho & Salimans 2022) of one part's distribution.

  ``distribution`` holds ``2 * batch`` rows, the labelled ones and then the unconditional ones
  (the model learnt both through label dropout); returns ``batch`` rows whose every parameter
  ``p`` is ``unconditional + weight * (labelled - unconditional)``: at 1 the labelled
  distribution, at 0 the unconditional one, above 1 what the label changes, amplified. The pitch
  logits and the velocity (``_velocity`` clips it into 1..127) are moved so; of a timing mixture,
  the logits (the components' and the chord's) and the locations, and the scales in log space,
  so that they stay positive. An anchor the window lacks has the same
  :data:`timing_distribution.ABSENT_LOGIT` in both halves and keeps it.
  """
  def move(values, log_space=False):
    labelled, unconditional = tf.split(values, 2, axis=0)
    if log_space:
      return tf.exp(move(tf.math.log(values)))
    return unconditional + weight * (labelled - unconditional)

  if part in ('pitch', 'velocity'):
    return move(distribution)
  return {name: move(values, log_space=name == 'scales') for name, values in distribution.items()}


def window_dict(pitch, step, duration, velocity, quarter_seconds, bar_position,
                bar_quarters) -> dict[str, tf.Tensor]:
  """The exported functions' window arguments as the model's notes (velocity as float32)."""
  return {'pitch': pitch, 'step': step, 'duration': duration,
          'velocity': tf.cast(velocity, tf.float32), 'quarter_seconds': quarter_seconds,
          'bar_position': bar_position, 'bar_quarters': bar_quarters}


def at_tempo(window: dict[str, tf.Tensor], tempo: tf.Tensor) -> dict[str, tf.Tensor]:
  """The window as played at ``tempo`` quarter notes per minute.

  Every time and tempo of a row is scaled so that its last note's is ``60 / tempo`` seconds a
  quarter note. ``tempo`` 0, and a row without a grid (its last ``quarter_seconds`` 0), keep
  theirs.
  """
  last = window['quarter_seconds'][:, -1]
  scaled = (tempo > 0) & (last > 0)
  ratio = tf.where(scaled, 60.0 / tf.maximum(tempo, 1e-6) / tf.where(scaled, last, 1.0), 1.0)
  return {**window, **{name: window[name] * ratio[:, None]
                       for name in ('step', 'duration', 'quarter_seconds')}}


def with_label(window: dict[str, tf.Tensor], label: tf.Tensor) -> dict[str, tf.Tensor]:
  """``[batch, window]`` notes and ``[batch]`` label ids -> the model's window.

  The label is at every note.
  """
  label = tf.cast(label, tf.int32)
  return {**window, contract.LABEL_FEATURE: tf.tile(
      label[:, None], [1, tf.shape(window['pitch'])[1]])}


def label_checks(label: tf.Tensor, rows: tf.Tensor, num_labels: int) -> list:
  """Assertions that ``label`` holds one id per row, each one of the model's."""
  message = f'label must hold one id in 0..{num_labels - 1} per row'
  return [tf.debugging.assert_equal(tf.size(label), rows, message=message),
          tf.debugging.assert_non_negative(label, message=message),
          tf.debugging.assert_less(label, num_labels, message=message)]


def _velocity(fraction: tf.Tensor) -> tf.Tensor:
  """The velocity head's fraction of 127 -> a MIDI velocity in 1..127 (float32)."""
  return tf.clip_by_value(tf.round(fraction * constants.MAX_VELOCITY), 1.0,
                          constants.MAX_VELOCITY)


# The exported functions' integer arguments (the seed is int64, the others float32).
INT32_ARGUMENTS = ('pitch', 'next_pitch', 'num_notes', 'top_k', export_contract.LABEL_ARGUMENT)


def input_signature(function: str, window_length: int) -> list[tf.TensorSpec]:
  """The specs of exported ``function``'s arguments, named, in the order of ``ARGUMENTS``.

  That is ``export_contract.ARGUMENTS``, which the Python parameters of :class:`_Generator`'s
  methods follow (readers pass them by those names).
  """
  specs = []
  for name in export_contract.ARGUMENTS[function]:
    if name in constants.NOTE_FEATURES:
      shape = [None, window_length]
    elif name in export_contract.PREDICT_NEXT_CONDITIONS or name == export_contract.LABEL_ARGUMENT:
      shape = [None]
    elif name == 'seed':
      shape = None  # a scalar, or one per row (row_seeds checks it)
    else:
      shape = []
    dtype = tf.int64 if name == 'seed' else tf.int32 if name in INT32_ARGUMENTS else tf.float32
    specs.append(tf.TensorSpec(shape, dtype, name))
  return specs


def _asset_files(config_yaml: str, info: dict, primes: dict[str, np.ndarray],
                 training_runs: originality.RunTable) -> dict[str, bytes]:
  """The export's asset files (``export_contract.ASSET_FILES``) by name."""
  return {
      export_contract.ASSET_CONFIG: config_yaml.encode(),
      export_contract.ASSET_INFO: json.dumps(info, indent=1).encode(),
      export_contract.ASSET_PRIMES: json.dumps(
          {name: values.tolist() for name, values in primes.items()}).encode(),
      export_contract.ASSET_TRAINING_RUNS: originality.to_bytes(training_runs),
  }


def export_model(model: model_lib.NoteModel, export_dir: str, window_length: int, config_yaml: str,
                 info: dict, primes: dict[str, np.ndarray], training_runs: originality.RunTable,
                 ngrams: pitch_ngram.PitchNGrams | None = None) -> None:
  """Writes the SavedModel, with its assets, to ``export_dir``.

  ``export_dir`` is a local path or a URL such as ``gs://bucket/run/export``; a reader never
  finds a half-written export. With ``ngrams``, the exported pitch distributions are the
  network's mixed with them.

  The export is first written to a local staging folder, then put in place:

  * locally, the staging folder is a sibling of ``export_dir`` and is renamed onto it, an
    atomic operation on one filesystem;
  * on object stores (any ``scheme://``), where a folder rename is a copy of every object, the
    files are copied with ``saved_model.pb`` last: it is the completion marker, since every
    SavedModel reader (``tf.saved_model.load``, TF Serving, Vertex AI, ``serving.generate``)
    looks for it first. An earlier export at the same place loses its ``saved_model.pb`` before
    anything else is deleted or overwritten.
  """
  generator = _Generator(model, ngrams)
  archive = keras.export.ExportArchive()
  archive.track(model)
  if ngrams is not None:
    archive.track(ngrams)
  for function, method in ((export_contract.PREDICT_NEXT, generator.predict_next),
                           (export_contract.GENERATE, generator.generate)):
    archive.add_endpoint(function, method, input_signature(function, window_length))
  asset_files = _asset_files(config_yaml, info, primes, training_runs)

  export_dir = export_dir.rstrip('/')
  local = '://' not in export_dir
  if local:
    parent = os.path.dirname(os.path.abspath(export_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix='.export-', dir=parent)
  else:
    staging = tempfile.mkdtemp(prefix='partita-export-')
  try:
    saved = os.path.join(staging, 'saved_model')
    archive.write_out(saved, verbose=False)
    # Plain files in the SavedModel's own assets/ folder travel with the export wherever it is
    # copied; readers need only a file API, not this project.
    asset_dir = os.path.join(saved, export_contract.ASSETS_DIR)
    os.makedirs(asset_dir, exist_ok=True)
    for name, data in asset_files.items():
      with open(os.path.join(asset_dir, name), 'wb') as f:
        f.write(data)
    if local:
      if os.path.exists(export_dir):
        shutil.rmtree(export_dir)
      os.rename(saved, export_dir)
    else:
      _copy_to_object_store(saved, export_dir)
  finally:
    shutil.rmtree(staging, ignore_errors=True)


def _copy_to_object_store(local_dir: str, export_dir: str) -> None:
  """Replaces ``export_dir`` by a copy of the SavedModel in ``local_dir``.

  Writes ``saved_model.pb`` last and removes an earlier one first.
  """
  marker = os.path.join(export_dir, export_contract.SAVED_MODEL_FILE)
  if tf.io.gfile.exists(marker):
    tf.io.gfile.remove(marker)
  if tf.io.gfile.exists(export_dir):
    tf.io.gfile.rmtree(export_dir)
  files = []
  for folder, _, names in os.walk(local_dir):
    files += [os.path.relpath(os.path.join(folder, name), local_dir) for name in names]
  files.sort(key=lambda path: path == export_contract.SAVED_MODEL_FILE)  # the marker last
  for path in files:
    target = os.path.join(export_dir, path)
    tf.io.gfile.makedirs(os.path.dirname(target))
    tf.io.gfile.copy(os.path.join(local_dir, path), target, overwrite=True)
