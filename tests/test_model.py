"""trainer.model's heads: what each one sees, the losses, and the export's sampling of each part.

Which parts of the next note each one sees, the losses against a float64 closed form, and the
export's in-graph sampling of every part.
"""

import os
import re

import keras
import numpy as np
import pytest
from scipy import special
import tensorflow as tf

from partita import constants, export_contract, failures, originality, timing_bins
from serving import sampling as sampling_lib
from trainer import config as config_lib
from trainer import distribute, timing_distribution
from trainer import export as export_lib
from trainer import metrics as metrics_lib
from trainer import model as model_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WINDOW = 8
BATCH = 6
TIMING = {'step': {'mean': 0.25, 'std': 0.1}, 'duration': {'mean': 0.5, 'std': 0.2}}
ORDERS = ('step_pitch_duration', 'pitch_step_duration', 'step_duration_pitch', 'independent')


NUM_LABELS = 3


def tiny_model(note_order='step_pitch_duration', label_conditioning='input'):
  config = config_lib.load(os.path.join(REPO, 'configs', 'tiny.yaml'),
                           [f'model.note_order={note_order}',
                            f'model.label_conditioning={label_conditioning}'])
  return model_lib.build_model(config.model, WINDOW, TIMING, NUM_LABELS), config


def windows(seed=0, batch=BATCH, label=None):
  """Random windows of notes, each with one label id (random, or ``label``) at every note."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, NUM_LABELS, batch) if label is None else np.full(batch, label)
  step = rng.choice([0.0, 0.125, 0.25, 0.5], (batch, WINDOW))
  # Every other row on a grid of 120 quarter notes a minute in 3/4, the others with none.
  gridded = (np.arange(batch) % 2 == 0)[:, None]
  return {'pitch': tf.constant(rng.integers(40, 90, (batch, WINDOW)), tf.int32),
          'step': tf.constant(step, tf.float32),
          'duration': tf.constant(rng.choice([0.125, 0.25, 1.0], (batch, WINDOW)), tf.float32),
          'velocity': tf.constant(rng.integers(40, 110, (batch, WINDOW)), tf.float32),
          'quarter_seconds': tf.constant(np.where(gridded, np.full(step.shape, 0.5), 0.0),
                                         tf.float32),
          'bar_position': tf.constant(np.where(gridded, np.mod(np.cumsum(step, axis=1) / 0.5, 3),
                                               0.0), tf.float32),
          'bar_quarters': tf.constant(np.where(gridded, np.full(step.shape, 3.0), 0.0),
                                      tf.float32),
          'label': tf.constant(np.repeat(labels[:, None], WINDOW, axis=1), tf.int32)}


def notes_of(window):
  """A window's notes without its label: what an export's primes are."""
  return {name: np.asarray(values) for name, values in window.items() if name != 'label'}


def next_note(step=0.25, pitch=60, duration=0.5, batch=BATCH):
  return {'step': tf.fill([batch], np.float32(step)), 'pitch': tf.fill([batch], pitch),
          'duration': tf.fill([batch], np.float32(duration))}


def flat(output) -> np.ndarray:
  """A head's output (logits, velocity or a parameters dict) as one array per row."""
  if isinstance(output, dict):
    return np.concatenate([np.reshape(output[name].numpy(), (BATCH, -1))
                           for name in sorted(output)], axis=1)
  return np.reshape(output.numpy(), (BATCH, -1))


# Another value of each part: the step 0.5 s instead of 0.25 s (0 would also flip the chord
# flag), the pitch 72 instead of 60, the duration 1 s instead of 0.5 s.
CHANGED = {'step': {'step': 0.5}, 'pitch': {'pitch': 72}, 'duration': {'duration': 1.0}}


@pytest.mark.parametrize('note_order', ORDERS)
def test_each_head_sees_exactly_the_parts_before_its_own(note_order):
  model, _ = tiny_model(note_order)
  window = windows()
  base = model(window, next_note())
  parts = model_lib.note_parts(note_order)
  for changed, values in CHANGED.items():
    other = model(window, next_note(**values))
    for head in parts + ('velocity',):
      if note_order == 'independent':
        sees = False
      elif head == 'velocity':
        sees = True
      else:
        sees = parts.index(changed) < parts.index(head)
      differs = np.abs(flat(other[head]) - flat(base[head])).max()
      if sees:
        assert differs > 1e-6, (changed, head)
      else:
        assert differs == 0.0, (changed, head)


def test_the_pitch_head_sees_whether_the_step_makes_a_chord():
  model, _ = tiny_model('step_pitch_duration')
  window = windows()
  chord, later = (model(window, next_note(step=step))['pitch'].numpy() for step in (0.0, 0.5))
  assert np.abs(chord - later).max() > 1e-6
  # The step's own distribution depends on neither the next step nor the next pitch.
  first = model(window, next_note(step=0.0, pitch=30))['step']
  second = model(window, next_note(step=0.5, pitch=90))['step']
  for name, value in first.items():
    np.testing.assert_array_equal(value.numpy(), second[name].numpy(), err_msg=name)
  independent, _ = tiny_model('independent')
  chord, later = (independent(window, next_note(step=step))['pitch'].numpy()
                  for step in (0.0, 0.5))
  np.testing.assert_array_equal(chord, later)


@pytest.mark.parametrize('policy', ['mixed_float16', 'mixed_bfloat16'])
def test_a_mixed_precision_model_reads_the_next_note_and_answers_in_float32(policy):
  # Keras casts every float input of the model, the next note's step and duration included,
  # to the policy's 16-bit compute dtype; the heads compute in float32.
  config = config_lib.load(os.path.join(REPO, 'configs', 'tiny.yaml'))
  with distribute.global_dtype_policy(policy):
    model = model_lib.build_model(config.model, WINDOW, TIMING, NUM_LABELS)
  assert model.encoder.lstm.compute_dtype == policy.split('_')[1]
  outputs = model(windows(), next_note(step=0.0))
  assert outputs['pitch'].dtype == outputs['velocity'].dtype == tf.float32
  for part in ('step', 'duration'):
    for name, value in outputs[part].items():
      assert value.dtype == tf.float32, (part, name)
      assert np.all(np.isfinite(value.numpy())), (part, name)


def reference_log_bin_probability(parameters: dict, seconds: np.ndarray) -> np.ndarray:
  """The natural-log probability of each time's 10 ms bin, float64, from the closed form.

  ``sigmoid(c) [bin 0] + sigmoid(-c) sum_k w_k (F_k(upper) - F_k(lower))``, ``F_k`` the
  logistic's cumulative distribution over log-seconds.
  """
  values = {name: value.numpy().astype(np.float64) for name, value in parameters.items()}
  bins = timing_bins.to_bins(seconds)
  upper = timing_bins.LOG_UPPER[bins][:, None]
  lower = timing_bins.LOG_LOWER[bins][:, None]
  weights = special.softmax(values['mixture_logits'], axis=-1)
  masses = special.expit((upper - values['locations']) / values['scales']) - special.expit(
      (lower - values['locations']) / values['scales'])
  probability = (weights * masses).sum(axis=-1)
  if 'chord_logit' in values:
    chord = special.expit(values['chord_logit'])
    probability = (1 - chord) * probability + chord * (bins == 0)
  return np.log(probability)


def test_per_window_losses_are_the_bin_nlls_the_pitch_cross_entropy_and_their_sum():
  model, config = tiny_model()
  # Targets: a chord note, steps and durations in the middle of bins and in the last bin.
  targets = {'pitch': tf.constant([60, 61, 62, 0, 127, 64], tf.int32),
             'step': tf.constant([0.0, 0.003, 0.25, 0.5, 1.2, 40.0], tf.float32),
             'duration': tf.constant([0.25, 0.02, 0.5, 3.0, 0.1, 0.75], tf.float32),
             'velocity': tf.constant([0.5, 0.25, 0.75, 1.0, 0.1, 0.6], tf.float32)}
  outputs = model(windows(), targets)
  losses = {name: value.numpy() for name, value in
            metrics_lib.per_window_losses(outputs, targets, config.model).items()}
  for part in ('step', 'duration'):
    expected = -reference_log_bin_probability(outputs[part], targets[part].numpy())
    np.testing.assert_allclose(losses[f'{part}_loss'], expected, rtol=1e-5, err_msg=part)
  logits = outputs['pitch'].numpy().astype(np.float64)
  pitch = targets['pitch'].numpy()
  expected_pitch = -special.log_softmax(logits, axis=-1)[np.arange(BATCH), pitch]
  np.testing.assert_allclose(losses['pitch_loss'], expected_pitch, rtol=1e-5)
  velocity = (outputs['velocity'].numpy() - targets['velocity'].numpy())**2
  np.testing.assert_allclose(losses['velocity_loss'], velocity, rtol=1e-6)
  weights = config.model
  np.testing.assert_allclose(
      losses['loss'], weights.pitch_loss_weight * losses['pitch_loss']
      + weights.step_loss_weight * losses['step_loss']
      + weights.duration_loss_weight * losses['duration_loss']
      + weights.velocity_loss_weight * losses['velocity_loss'], rtol=1e-6)


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
  """An untrained tiny model exported and loaded back, with its primes.

  Seeded: how far its untrained labels move the notes depends on the initial weights.
  """
  keras.utils.set_random_seed(0)
  model, config = tiny_model()
  primes = notes_of(windows(seed=3, batch=4))
  export_dir = str(tmp_path_factory.mktemp('model') / 'export')
  export_lib.export_model(model, export_dir, WINDOW, config.to_yaml(),
                          {'window_length': WINDOW, 'timing': TIMING}, primes,
                          originality.build_table(primes['pitch']))
  return model, tf.saved_model.load(export_dir), primes, export_dir


def prime_arguments(primes):
  """The window arguments of the exported functions, by name."""
  return {name: tf.constant(primes[name], tf.int32 if name == 'pitch' else tf.float32)
          for name in constants.NOTE_FEATURES}


def generate(export, primes, seed, num_notes=40, temperature=1.0, labels=None, label_guidance=1.0,
             tempo=0.0):
  labels = np.zeros(len(primes['pitch'])) if labels is None else labels
  out = export.generate(
      **prime_arguments(primes), num_notes=tf.constant(num_notes),
      temperature=tf.constant(temperature), top_k=tf.constant(128), top_p=tf.constant(1.0),
      label_guidance=tf.constant(label_guidance), tempo=tf.constant(tempo),
      seed=tf.constant(seed, tf.int64), label=tf.constant(labels, tf.int32))
  return {name: value.numpy() for name, value in out.items()}


def test_generate_samples_every_part_reproducibly(exported):
  _, export, primes, _ = exported
  first, again, other = (generate(export, primes, seed) for seed in (1, 1, 2))
  for name in ('pitch', 'step', 'duration', 'velocity'):
    assert first[name].shape == (4, 40), name
    np.testing.assert_array_equal(first[name], again[name], err_msg=name)
  for name in ('pitch', 'step', 'duration'):
    assert (first[name] != other[name]).mean() > 0.5, name
  # An untrained step head's chord logit is near 0: about half the steps are chords, exactly 0,
  # and the others are positive; every duration is positive.
  step = first['step']
  assert 0.1 < (step == 0).mean() < 0.9
  assert (step[step != 0] > 0).all()
  assert (first['duration'] > 0).all()
  assert np.isin(first['velocity'], np.arange(1, 128)).all()


def test_generated_onsets_stay_on_the_primes_grid_at_its_tempo_or_the_one_asked(exported):
  """Rows 0 and 2 of the primes are in 3/4 at 0.5 s a quarter; rows 1 and 3 have no grid."""
  _, export, primes, _ = exported
  out = generate(export, primes, 7)
  for row in (0, 2):
    assert out['quarter_seconds'][row].tolist() == [0.5] * 40
    assert out['bar_quarters'][row].tolist() == [3.0] * 40
    # Each onset, in quarter notes from the prime's last, is on the 1/24-quarter grid, and its
    # position in the bar is where its steps lead.
    onsets = primes['bar_position'][row, -1] + np.cumsum(out['step'][row]) / 0.5
    np.testing.assert_allclose(onsets * 24, np.round(onsets * 24), atol=1e-3)
    np.testing.assert_allclose(out['bar_position'][row], np.mod(onsets, 3.0), atol=1e-3)
  for row in (1, 3):
    for name in constants.METRE_FEATURES:
      assert out[name][row].tolist() == [0.0] * 40, name
  # At 90 quarter notes a minute the gridded rows play at 60 / 90 s a quarter; the others, which
  # have no tempo to change, draw exactly the notes they drew before.
  faster = generate(export, primes, 7, tempo=90.0)
  np.testing.assert_allclose(faster['quarter_seconds'][[0, 2]], 60 / 90, rtol=1e-6)
  for name in out:
    np.testing.assert_array_equal(faster[name][[1, 3]], out[name][[1, 3]], err_msg=name)
  for tempo in (5.0, 401.0, -1.0):
    with pytest.raises(tf.errors.InvalidArgumentError, match='tempo must be 0'):
      generate(export, primes, 7, tempo=tempo)


@pytest.mark.parametrize('parameter,value', [
    ('num_notes', 0), ('num_notes', 10_001), ('temperature', 0.0), ('temperature', float('nan')),
    ('top_k', 0), ('top_k', 129), ('top_p', 0.0), ('top_p', 1.5), ('label_guidance', -1.0),
    ('label_guidance', 10.5), ('tempo', 5.0), ('tempo', 401.0)])
def test_the_graph_and_the_python_checks_refuse_a_value_in_the_same_words(exported, parameter,
                                                                          value):
  _, export, primes, _ = exported
  words = export_contract.refusal(parameter)
  with pytest.raises(failures.RejectionError, match=re.escape(f'{words}, got {value!r}')):
    sampling_lib.Sampling(**{parameter: value}).check()
  arguments = {**prime_arguments(primes), 'num_notes': tf.constant(4),
               'temperature': tf.constant(1.0), 'top_k': tf.constant(128),
               'top_p': tf.constant(1.0), 'label_guidance': tf.constant(1.0),
               'tempo': tf.constant(0.0), 'seed': tf.constant(0, tf.int64),
               'label': tf.zeros([len(primes['pitch'])], tf.int32)}
  arguments[parameter] = tf.constant(value, arguments[parameter].dtype)
  with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(words)):
    export.generate(**arguments)


def test_a_rows_notes_depend_only_on_its_own_prime_parameters_and_seed(exported):
  """The same request alone or at any row of a batch among others: the same notes, bit for bit.

  Alone (padded with copies of itself to 64 rows, as serving pads), at row 0 of a batch of 64
  and at row 37 of another batch of 64, among other primes and seeds. A scalar seed s stands for
  the seeds s, s + 1, ...
  """
  _, export, primes, _ = exported
  rng = np.random.default_rng(0)
  request = {name: values[2:3] for name, values in primes.items()}
  others = {name: values[rng.integers(0, 4, 63)] for name, values in primes.items()}

  def batch_with_request_at(row):
    return {name: np.concatenate([others[name][:row], request[name], others[name][row:]])
            for name in primes}

  alone = generate(export, {name: np.repeat(values, 64, axis=0)
                            for name, values in request.items()}, np.full(64, 123))
  first = generate(export, batch_with_request_at(0),
                   np.concatenate([[123], rng.integers(0, 2**40, 63)]))
  middle = generate(export, batch_with_request_at(37),
                    np.concatenate([rng.integers(0, 2**40, 37), [123], rng.integers(0, 9, 26)]))
  for name in alone:
    np.testing.assert_array_equal(first[name][0], alone[name][0], err_msg=name)
    np.testing.assert_array_equal(middle[name][37], alone[name][0], err_msg=name)
  # Unpadded, a batch of one takes other matrix kernels: its times may differ in the last bits.
  single = generate(export, request, np.array([123]))
  np.testing.assert_array_equal(single['pitch'][0], alone['pitch'][0])
  np.testing.assert_allclose(single['step'][0], alone['step'][0], rtol=1e-4, atol=1e-6)
  scalar = generate(export, primes, 5)
  vector = generate(export, primes, np.array(export_contract.row_seeds(5, 4)))
  for name in scalar:
    np.testing.assert_array_equal(scalar[name], vector[name], err_msg=name)
  assert export_contract.row_seeds(export_contract.MAX_SEED, 2) == [export_contract.MAX_SEED, 0]
  with pytest.raises(tf.errors.InvalidArgumentError, match='seed must be a scalar or one per row'):
    generate(export, primes, np.array([1, 2]))


def test_predict_next_returns_the_models_distributions(exported):
  model, export, primes, export_dir = exported
  window = windows(seed=3, batch=4)  # the primes, with labels
  np.testing.assert_array_equal(window['pitch'], primes['pitch'])
  note = next_note(step=0.0, pitch=67, duration=0.3, batch=4)
  out = export.predict_next(**prime_arguments(window), next_step=note['step'],
                            next_pitch=note['pitch'], next_duration=note['duration'],
                            label=window['label'][:, -1])
  with open(os.path.join(export_dir, 'assets', 'config.yaml')) as f:
    model_config = config_lib.from_yaml(f.read()).model
  components = model_config.timing_components + model_config.timing_anchors
  onset_anchors = model_config.timing_anchors  # the step's, at its last onsets
  assert sorted(out) == sorted(
      ['pitch_logits', 'velocity', 'step_chord_logit']
      + [f'{part}_{name}' for part in ('step', 'duration')
         for name in ('mixture_logits', 'locations', 'scales')])
  # The metre's components: 16 note values, for the step also 4 subdivisions and the downbeat.
  assert out['step_locations'].shape == (4, components + onset_anchors + 21)
  assert out['duration_scales'].shape == (4, components + 16)
  expected = model(window, note)
  np.testing.assert_allclose(out['pitch_logits'], expected['pitch'], atol=1e-5)
  for part in ('step', 'duration'):
    for name, value in expected[part].items():
      np.testing.assert_allclose(out[f'{part}_{name}'], value, atol=1e-5, err_msg=name)


# --- the label ---


@pytest.mark.parametrize('label_conditioning', ['input', 'heads'])
def test_every_head_sees_the_label(label_conditioning):
  model, _ = tiny_model(label_conditioning=label_conditioning)
  outputs = [model(windows(seed=0, label=label), next_note()) for label in (0, 1, 2)]
  for head in ('pitch', 'step', 'duration', 'velocity'):
    for other in outputs[1:]:
      assert np.abs(flat(other[head]) - flat(outputs[0][head])).max() > 1e-6, head
  # The same label, the same answer: the label is all that changed.
  again = model(windows(seed=0, label=2), next_note())
  np.testing.assert_array_equal(flat(again['pitch']), flat(outputs[2]['pitch']))


def test_generate_conditions_each_row_on_its_own_label(exported):
  """A row's notes depend on its label, and only on its own.

  The same prime and seed with another label gives other notes, and the other rows' labels
  change nothing of it.
  """
  _, export, primes, _ = exported
  padded = {name: np.repeat(values[:1], 4, axis=0) for name, values in primes.items()}
  seeds = np.full(4, 9)
  by_label = generate(export, padded, seeds, labels=np.array([0, 1, 2, 1]))
  np.testing.assert_array_equal(by_label['pitch'][1], by_label['pitch'][3])
  # Same random numbers, other distributions: an untrained model's pitches rarely flip, but the
  # continuous durations all move.
  for row, other in ((0, 1), (1, 2)):
    assert (by_label['duration'][row] != by_label['duration'][other]).mean() > 0.9
  alone = generate(export, padded, seeds, labels=np.full(4, 2))
  for name in alone:
    np.testing.assert_array_equal(alone[name][0], by_label[name][2], err_msg=name)
  for labels, message in ((np.array([0, 1, 3, 0]), 'label must hold one id in 0..2 per row'),
                          (np.array([0, -1, 0, 0]), 'label must hold one id in 0..2 per row'),
                          (np.array([0, 1]), 'label must hold one id in 0..2 per row')):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
      generate(export, padded, seeds, labels=labels)


def test_guided_logits_are_the_unconditional_ones_moved_by_the_weight_times_the_labels_change():
  labelled = tf.constant([[1.0, 4.0, -2.0]])
  unconditional = tf.constant([[2.0, 1.0, -2.0]])
  both = tf.concat([labelled, unconditional], axis=0)
  for weight, expected in ((0.0, [2.0, 1.0, -2.0]), (1.0, [1.0, 4.0, -2.0]),
                           (3.0, [-1.0, 10.0, -2.0])):
    np.testing.assert_array_equal(export_lib.guided('pitch', both, tf.constant(weight)),
                                  [expected])
  step = {'mixture_logits': tf.constant([[0.5, timing_distribution.ABSENT_LOGIT],
                                         [1.5, timing_distribution.ABSENT_LOGIT]]),
          'locations': tf.constant([[-1.0, -2.0], [-3.0, -4.0]]),
          'scales': tf.constant([[0.1, 0.2], [0.3, 0.4]]),
          'chord_logit': tf.constant([2.0, -1.0])}
  guided = export_lib.guided('step', step, tf.constant(2.0))
  # An absent anchor stays absent; scales move in log space: 0.1 * (0.1 / 0.3), 0.2 * (0.2 / 0.4).
  for name, expected in (('mixture_logits', [[-0.5, timing_distribution.ABSENT_LOGIT]]),
                         ('chord_logit', [5.0]), ('locations', [[1.0, 0.0]]),
                         ('scales', [[0.1 / 3, 0.1]])):
    np.testing.assert_allclose(guided[name], np.float32(expected), rtol=1e-6, err_msg=name)
  unconditional = export_lib.guided('step', step, tf.constant(0.0))
  for name, values in step.items():
    np.testing.assert_allclose(unconditional[name], values[1:], rtol=1e-6, err_msg=name)


def test_label_guidance_weighs_each_rows_label_against_the_unconditional_id(exported):
  """Guidance 0 samples the unconditional distribution whatever the label; above 1 notes move away.

  Any guidance of the unconditional id is that distribution too; above 1 the notes move further
  from it; a row's notes still depend only on its own prime, parameters, label and seed.
  """
  _, export, primes, _ = exported
  seeds = np.arange(4) + 20
  unconditional = generate(export, primes, seeds, labels=np.zeros(4))
  labelled = generate(export, primes, seeds, labels=np.array([1, 2, 1, 2]))
  for guidance, labels in ((0.0, np.array([1, 2, 1, 2])), (3.0, np.zeros(4))):
    same = generate(export, primes, seeds, labels=labels, label_guidance=guidance)
    np.testing.assert_array_equal(same['pitch'], unconditional['pitch'])
    for name in ('step', 'duration', 'velocity'):  # a doubled batch may differ in the last bits
      np.testing.assert_allclose(same[name], unconditional[name], rtol=1e-4, err_msg=name)
  guided = generate(export, primes, seeds, labels=np.array([1, 2, 1, 2]), label_guidance=3.0)
  assert (guided['duration'] != labelled['duration']).mean() > 0.9
  again = generate(export, primes, seeds, labels=np.array([1, 2, 1, 2]), label_guidance=3.0)
  alone = generate(export, {name: values[1:2] for name, values in primes.items()}, seeds[1:2],
                   labels=np.array([2]), label_guidance=3.0)
  for name in guided:
    np.testing.assert_array_equal(again[name], guided[name], err_msg=name)
    np.testing.assert_allclose(alone[name][0], guided[name][1], rtol=1e-4, err_msg=name)
  for guidance in (-0.5, 10.5):
    with pytest.raises(tf.errors.InvalidArgumentError, match=r'label_guidance must be in 0\.\.10'):
      generate(export, primes, seeds, labels=np.zeros(4), label_guidance=guidance)


# --- the causal encoder ---


def causal_model():
  config = config_lib.load(os.path.join(REPO, 'configs', 'tiny.yaml'), ['model.encoder=causal'])
  return model_lib.build_model(config.model, WINDOW, TIMING, num_labels=3), config


def test_the_causal_state_carried_note_by_note_is_the_whole_sequence_read_at_once():
  model, _ = causal_model()
  notes = windows(seed=5)
  longer = {name: tf.concat([values, values[:, :3]], axis=1) for name, values in notes.items()}
  state = model.start(notes)
  np.testing.assert_allclose(model.state_vector(state), model.encode(notes), atol=1e-6)
  for position in range(WINDOW, WINDOW + 3):
    state = model.advance(state, {name: values[:, position] for name, values in longer.items()})
    np.testing.assert_allclose(model.state_vector(state),
                               model.encode_every_position(longer)[:, position], atol=1e-6)


def test_the_heads_read_the_last_times_and_pitch_counts_up_to_each_position():
  """recent(): the last timing_anchors steps and durations and the pitch memory.

  Steps and durations are 0 before the first note; all are taken after the window or after
  every position; a causal generation state carries the same note by note.
  """
  model, config = causal_model()
  anchors = config.model.timing_anchors
  notes = windows(seed=9)
  recent = model.recent(notes)
  for part in ('step', 'duration'):
    np.testing.assert_array_equal(recent[part], notes[part][:, -anchors:])
  np.testing.assert_array_equal(recent['onset_step'],
                                model_lib.last_onset_steps(notes['step'], anchors))
  np.testing.assert_array_equal(recent['pitch_memory'],
                                model_lib.pitch_memory(notes['pitch'], key=True))
  every = model.recent(notes, every_position=True)
  for part in ('step', 'duration'):
    values = notes[part].numpy()
    padded = np.concatenate([np.zeros((BATCH, anchors)), values], axis=1)
    expected = [padded[row, position + 1:position + 1 + anchors]
                for row in range(BATCH) for position in range(WINDOW)]
    np.testing.assert_array_equal(every[part], expected)
  np.testing.assert_array_equal(
      every['onset_step'], model_lib.last_onset_steps(notes['step'], anchors, every_position=True))
  np.testing.assert_array_equal(
      every['pitch_memory'], model_lib.pitch_memory(notes['pitch'], every_position=True, key=True))
  longer = {name: tf.concat([values, values[:, :3]], axis=1) for name, values in notes.items()}
  state = model.start(notes)
  for position in range(WINDOW, WINDOW + 3):
    state = model.advance(state, {name: values[:, position] for name, values in longer.items()})
  carried = model.state_recent(state)
  for name, values in model.recent(longer).items():
    np.testing.assert_array_equal(carried[name], values, err_msg=name)


def test_silent_positions_are_no_note_to_the_memory_and_the_anchors():
  """A neutral prime's positions (velocity 0) hold no note for the heads: pitch -1 and times 0.

  In the BiLSTM's window and in the causal state's history alike.
  """
  window = windows(seed=3)
  sounding = 2
  velocity = window['velocity'].numpy()
  velocity[:, :-sounding] = 0
  window = dict(window, velocity=tf.constant(velocity))
  heard = model_lib.heard(window)
  np.testing.assert_array_equal(heard['pitch'][:, :-sounding], -1)
  np.testing.assert_array_equal(heard['pitch'][:, -sounding:], window['pitch'][:, -sounding:])
  for part in ('step', 'duration'):
    np.testing.assert_array_equal(heard[part][:, :-sounding], 0.0)
    np.testing.assert_array_equal(heard[part][:, -sounding:], window[part][:, -sounding:])
  for model, config in (tiny_model(), causal_model()):
    anchors = config.model.timing_anchors
    recent = model.state_recent(model.start(window))
    for part in ('step', 'duration'):
      expected = np.concatenate([np.zeros((BATCH, anchors - sounding)),
                                 window[part][:, -sounding:]], axis=1)
      np.testing.assert_array_equal(recent[part], expected)
    np.testing.assert_array_equal(recent['pitch_memory'],
                                  model_lib.pitch_memory(window['pitch'][:, -sounding:], key=True))


def test_the_causal_encoder_never_sees_later_notes():
  model, _ = causal_model()
  notes = windows(seed=6)
  changed = dict(notes, pitch=tf.concat([notes['pitch'][:, :5], notes['pitch'][:, 5:] + 1], 1))
  before, after = (model.encode_every_position(n).numpy() for n in (notes, changed))
  np.testing.assert_array_equal(before[:, :5], after[:, :5])
  assert np.abs(before[:, 5:] - after[:, 5:]).min() > 0


def test_every_position_targets_are_the_window_shifted_by_one_then_the_target():
  window = {'pitch': tf.constant([[60, 62, 64]]), 'step': tf.constant([[0.0, 0.5, 0.25]]),
            'duration': tf.constant([[1.0, 0.5, 0.5]]), 'velocity': tf.constant([[64.0, 127.0,
                                                                                  0.0]])}
  targets = {'pitch': tf.constant([65]), 'step': tf.constant([0.0]),
             'duration': tf.constant([2.0]), 'velocity': tf.constant([0.5])}
  following = model_lib.every_position_targets(window, targets)
  np.testing.assert_array_equal(following['pitch'], [62, 64, 65])
  np.testing.assert_array_equal(following['step'], [0.5, 0.25, 0.0])
  np.testing.assert_array_equal(following['duration'], [0.5, 0.5, 2.0])
  np.testing.assert_array_equal(following['velocity'], [1.0, 0.0, 0.5])


def test_a_causal_model_is_trained_on_every_position_and_generates_from_its_state(tmp_path):
  """One training step's loss is the mean over every position's note; the export is reproducible.

  The export generates reproducibly, and over its many more notes than a window the carried state
  stays the whole sequence read at once.
  """
  from trainer import train_loop  # noqa: PLC0415 (only this test builds a Trainer)
  model, config = causal_model()
  optimizer = train_loop.make_optimizer(config.train, 'float32', model.trainable_variables)
  trainer = train_loop.Trainer(model, optimizer, tf.distribute.get_strategy(), config)
  batch = config.data.batch_size  # the global batch the step divides by
  window = windows(seed=7, batch=batch)
  targets = dict(next_note(batch=batch), velocity=tf.fill([batch], 0.5))
  following = model_lib.every_position_targets(window, targets)
  expected = metrics_lib.per_window_losses(model(window, following, every_position=True),
                                           following, config.model)['loss'].numpy().mean()
  sums = trainer.strategy.run(trainer.replica_step, args=(window, targets)).numpy()
  assert sums[metrics_lib.TRAINING_METRICS.index('loss')] == pytest.approx(expected, rel=1e-5)

  primes = notes_of(windows(seed=8, batch=4, label=0))
  export_dir = str(tmp_path / 'export')
  export_lib.export_model(model, export_dir, WINDOW, config.to_yaml(),
                          {'window_length': WINDOW, 'timing': TIMING}, primes,
                          originality.build_table(primes['pitch']))
  export = tf.saved_model.load(export_dir)
  first, again = (generate(export, primes, seed=4) for _ in range(2))
  for name in first:
    np.testing.assert_array_equal(first[name], again[name])
  # Guidance carries a state per half: with the unconditional id, both halves are this one.
  guided = generate(export, primes, seed=4, label_guidance=2.0)
  np.testing.assert_array_equal(guided['pitch'], first['pitch'])
  # The export's last generated note, scored from the whole generated sequence read at once.
  sequence = {name: np.concatenate([primes[name], first[name].astype(primes[name].dtype)],
                                   axis=1) for name in primes}
  sequence['label'] = np.zeros_like(sequence['pitch'])  # generate's labels
  state = model.start({name: tf.constant(values[:, :WINDOW]) for name, values in sequence.items()})
  for position in range(WINDOW, sequence['pitch'].shape[1] - 1):
    state = model.advance(state, {name: tf.constant(values[:, position])
                                  for name, values in sequence.items()})
  np.testing.assert_allclose(
      model.state_vector(state),
      model.encode_every_position({name: tf.constant(v[:, :-1]) for name, v in sequence.items()})[
          :, -1], atol=1e-5)


def test_a_checkpoint_holds_every_weight_of_either_encoder(tmp_path):
  """What a resumed run restores: every weight, the causal encoder's LSTMs and the heads included.

  A resumed run restores trainer.train_loop's tf.train.Checkpoint of the model.
  """
  for build in (tiny_model, causal_model):
    keras.utils.set_random_seed(0)
    model, _ = build()
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / build.__name__ / 'checkpoint'))
    keras.utils.set_random_seed(1)
    fresh, _ = build()
    tf.train.Checkpoint(model=fresh).restore(path).assert_existing_objects_matched()
    for saved, restored in zip(model.weights, fresh.weights, strict=True):
      np.testing.assert_array_equal(restored, saved, err_msg=saved.path)


# --- what the heads read of the last notes themselves ---


def test_pitch_memory_counts_each_pitch_over_the_last_notes():
  pitches = tf.constant([[-1, 60, 72, 60, 62]])  # -1: before the first note
  memory = model_lib.pitch_memory(pitches).numpy()[0]  # [128, features]
  assert memory.shape == (128, len(model_lib.MEMORY_SPANS))
  span_of = {n: i for i, n in enumerate(model_lib.MEMORY_SPANS)}
  assert memory[62, span_of[1]] == 1.0 and memory[60, span_of[1]] == 0.0
  assert memory[60, span_of[2]] == 0.5 and memory[62, span_of[2]] == 0.5
  assert memory[60, span_of[4]] == 0.5 and memory[72, span_of[4]] == 0.25
  assert memory[60, span_of[64]] == 2 / 64
  # An exact pitch, not its pitch class: 48 and 84 are Cs that never sounded.
  assert memory[48].sum() == memory[84].sum() == memory[61].sum() == 0.0
  # After every position, as after the last note of each prefix.
  every = model_lib.pitch_memory(pitches, every_position=True).numpy()
  for position in range(5):
    np.testing.assert_array_equal(
        every[position], model_lib.pitch_memory(pitches[:, :position + 1]).numpy()[0])


def test_key_memory_gives_every_pitch_its_classs_share_absence_and_log_share():
  pitches = tf.constant([[-1, 60, 72, 60, 62]])
  memory = model_lib.pitch_memory(pitches, key=True).numpy()[0]
  assert memory.shape == (128, len(model_lib.MEMORY_SPANS) + model_lib.KEY_FEATURES)
  share, absent, log_share = (memory[:, len(model_lib.MEMORY_SPANS) + i] for i in range(3))
  # Three Cs (60, 72, 60) and one D of 64: every C and every D of any octave, none of the rest.
  for pitch in (0, 48, 60, 84, 120):
    assert share[pitch] == 3 / 64 and absent[pitch] == 0.0, pitch
    assert log_share[pitch] == np.float32(np.log(3.5 / 64.5)), pitch
  assert share[50] == share[62] == 1 / 64
  assert absent[50] == absent[62] == 0.0
  for pitch in (61, 64, 65, 71):
    assert share[pitch] == 0.0 and absent[pitch] == 1.0, pitch
    assert log_share[pitch] == np.float32(np.log(0.5 / 64.5)), pitch
  np.testing.assert_array_equal(memory[:, :len(model_lib.MEMORY_SPANS)],
                                model_lib.pitch_memory(pitches).numpy()[0])
  every = model_lib.pitch_memory(pitches, every_position=True, key=True).numpy()
  np.testing.assert_allclose(every[4], memory, rtol=1e-6)


def test_sounding_notes_end_where_their_onset_plus_duration_lies_after_the_last_onset():
  # A C major chord (60 held 1 s, 64 0.5 s, 67 2 s), then 72 for 0.25 s half a second later.
  notes = {'pitch': tf.constant([[-1, 60, 64, 67, 72]]),
           'step': tf.constant([[0.0, 0.0, 0.0, 0.0, 0.5]]),
           'duration': tf.constant([[0.0, 1.0, 0.5, 2.0, 0.25]])}
  pitch, end = model_lib.sounding_notes(notes)
  assert pitch.shape == end.shape == (1, model_lib.SOUNDING_NOTES)
  np.testing.assert_array_equal(pitch[0, -5:], [-1, 60, 64, 67, 72])
  np.testing.assert_allclose(end[0, -5:], [-0.5, 0.5, 0.0, 1.5, 0.25])
  np.testing.assert_array_equal(pitch[0, :-5], -1)  # before the notes: no note
  # A quarter of a second later 60 and 67 still sound; 72 ends then, 64 has ended.
  np.testing.assert_array_equal(
      model_lib.still_sounding(pitch, end, tf.constant([0.25]))[0, -5:], [0, 1, 0, 1, 0])
  # After every position, as after the last note of each prefix.
  every_pitch, every_end = model_lib.sounding_notes(notes, every_position=True)
  for position in range(5):
    prefix = {name: values[:, :position + 1] for name, values in notes.items()}
    expected_pitch, expected_end = model_lib.sounding_notes(prefix)
    np.testing.assert_array_equal(every_pitch[position], expected_pitch[0])
    np.testing.assert_allclose(every_end[position], expected_end[0])


def test_the_last_onset_steps_skip_the_chords_zero_steps():
  # Two rows: a chord (0.5 s after the note before it), two notes, another chord; then a row
  # whose only onset is its last note (a step of 4 ms is a chord's, under half a 10 ms bin).
  steps = tf.constant([[0.25, 0.0, 0.0, 0.5, 0.0, 0.125, 0.75, 0.0, 0.004],
                       [0.0, 0.0, 0.004, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]])
  np.testing.assert_array_equal(model_lib.last_onset_steps(steps, 3),
                                [[0.5, 0.125, 0.75], [0.0, 0.0, 1.0]])
  np.testing.assert_array_equal(model_lib.last_onset_steps(steps, 5),
                                [[0.0, 0.25, 0.5, 0.125, 0.75], [0.0, 0.0, 0.0, 0.0, 1.0]])
  every = model_lib.last_onset_steps(steps, 3, every_position=True).numpy().reshape(2, 9, 3)
  np.testing.assert_array_equal(every[0, :4], [[0, 0, 0.25], [0, 0, 0.25], [0, 0, 0.25],
                                               [0, 0.25, 0.5]])
  for position in range(9):
    np.testing.assert_array_equal(every[:, position],
                                  model_lib.last_onset_steps(steps[:, :position + 1], 3))


def test_the_pitch_head_sees_the_notes_still_sounding_at_the_next_onset():
  """The window's notes move the pitch logits only at an onset where some of them still sound."""
  model = model_lib.build_model(config_lib.load(os.path.join(REPO, 'configs', 'tiny.yaml')).model,
                                WINDOW, TIMING, num_labels=3)
  # Weights away from zero, so that every memory feature moves the logits.
  for variable in model.pitch_memory_weights.trainable_variables:
    variable.assign(tf.ones_like(variable))
  window = windows(seed=4)
  window['duration'] = tf.fill(tf.shape(window['duration']), 5.0)  # every note rings for 5 s
  hidden = model.encode(window)
  recent = model.recent(model_lib.heard(window))
  silent = dict(recent, sounding_end=tf.zeros_like(recent['sounding_end']))

  def logits(recent, step):
    return model.head('pitch', hidden, {'step': tf.fill([BATCH], step)}, recent).numpy()

  assert np.abs(logits(recent, 0.0) - logits(silent, 0.0)).max() > 1e-3
  # A minute later nothing sounds, whatever the window's durations.
  np.testing.assert_array_equal(logits(recent, 60.0), logits(silent, 60.0))
  # The duration head reads how many notes still sound at the next onset.
  earlier = {'step': tf.zeros([BATCH]), 'pitch': tf.fill([BATCH], 60)}
  durations = [model.head('duration', hidden, earlier, state) for state in (recent, silent)]
  assert max(np.abs(durations[0][name] - durations[1][name]).max() for name in durations[0]) > 0
