"""Preprocess -> train a tiny model -> export -> reload in a fresh process -> generate.

On the session's tiny model (conftest.tiny_model): what training wrote and returned, and what its
export does.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pretty_midi
import pytest
import tensorflow as tf
from trainer_fixtures import REPO, WINDOW

from partita import constants, timing_bins
from serving import generate as generate_lib
from serving import pieces
from trainer import config as config_lib
from trainer import data as data_lib
from trainer import pitch_ngram, task, timing_distribution


def test_config_presets_and_overrides(tmp_path):
  config = config_lib.load(os.path.join(REPO, 'configs', 'small.yaml'),
                           ['model.lstm_units=12', 'train.learning_rate=0.5'])
  assert config.model.lstm_units == 12
  assert config.train.learning_rate == 0.5
  assert config.model.embedding_dim == 32  # from the preset
  assert config.train.clipnorm == config_lib.TrainConfig.clipnorm  # a default
  assert config_lib.from_yaml(config.to_yaml()) == config
  with pytest.raises(ValueError, match='unknown config key model.units'):
    config_lib.load(None, ['model.units=3'])
  with pytest.raises(ValueError, match='must be int'):
    config_lib.load(None, ['model.lstm_units=big'])


def test_validation_windows_are_every_note_after_the_first_window(tiny_model):
  info = tiny_model.info
  dataset = data_lib.make_dataset(tiny_model.data_dir, info, 'validation', tiny_model.config.data,
                                  training=False, batch_size=5)
  targets = np.concatenate([t['pitch'].numpy() for _, t in dataset])
  split = info['splits']['validation']
  assert len(targets) == split['windows'] == split['notes'] - WINDOW * split['pieces']
  # Windows are consecutive notes: the target of window i is the last input of window i+1.
  inputs, window_targets = next(iter(dataset))
  np.testing.assert_array_equal(inputs['pitch'][1:, -1], window_targets['pitch'][:-1])


def test_training_writes_config_metrics_and_export(tiny_model):
  model_dir = tiny_model.model_dir
  with open(os.path.join(model_dir, 'config.yaml')) as f:
    assert config_lib.from_yaml(f.read()) == tiny_model.config
  with open(os.path.join(model_dir, 'metrics.json')) as f:
    metrics = json.load(f)
  assert metrics['steps'] == tiny_model.config.train.steps
  # An untrained 128-way softmax is near log(128) = 4.85 nats.
  assert 3.0 < metrics['pitch_nll'] < 6.0
  assert 0.0 <= metrics['pitch_accuracy'] <= metrics['pitch_top5_accuracy'] <= 1.0
  export = os.path.join(model_dir, 'export')
  assert sorted(os.listdir(os.path.join(export, 'assets'))) == [
      'config.yaml', 'info.json', 'primes.json', 'training_runs.npz']


@pytest.mark.parametrize('order', [-1, 8, WINDOW + 2])
def test_an_ngram_order_out_of_range_is_refused_before_training(tiny_model, tmp_path, order):
  config = config_lib.load(os.path.join(REPO, 'configs', 'tiny.yaml'),
                           [f'model.ngram_order={order}'])
  with pytest.raises(ValueError, match=f'model.ngram_order must be in 0..{min(7, WINDOW + 1)}'):
    task.train(tiny_model.data_dir, str(tmp_path / 'model'), config)
  assert not os.path.exists(tmp_path / 'model')


def test_metrics_json_records_the_pitch_ngrams_mixed_into_the_export(tiny_model):
  ngram = tiny_model.metrics['pitch_ngram']
  assert ngram['order'] == config_lib.ModelConfig.ngram_order
  tables = tiny_model.ngrams
  assert tables.order == ngram['order']
  for name in ('ngram', 'label', 'unconditional_ngram'):
    assert ngram[name] in pitch_ngram.WEIGHT_GRID or (name == 'label' and ngram[name] == 0.0)
  assert tables.ngram_weight.numpy()[0] == ngram['unconditional_ngram']
  # metrics.json's pitch metrics are the mixture's, which the export predicts (the test below
  # recomputes them from it); the network's own is kept beside the weights.
  assert ngram['validation_pitch_nll_network'] != tiny_model.metrics['pitch_nll']


def test_evaluation_metrics_are_means_over_all_windows(tiny_model):
  """The reported metrics are means over the evaluated windows, recomputed here from the export.

  Recomputed from the export's distributions of each true next note (each head given the true
  earlier parts).
  """
  model = tf.saved_model.load(tiny_model.export_dir)
  config = tiny_model.config
  dataset = data_lib.make_dataset(tiny_model.data_dir, tiny_model.info, 'validation', config.data,
                                  training=False, batch_size=7,
                                  max_windows=config.train.validation_windows)
  nll, correct, timing_nll = [], [], {'step': [], 'duration': []}
  for inputs, targets in dataset:
    out = model.predict_next(**{name: inputs[name] for name in constants.NOTE_FEATURES},
                             next_step=targets['step'], next_pitch=targets['pitch'],
                             next_duration=targets['duration'], label=inputs['label'][:, -1])
    log_probs = tf.nn.log_softmax(out['pitch_logits']).numpy()
    target = targets['pitch'].numpy()
    nll.append(-log_probs[np.arange(len(target)), target])
    correct.append(log_probs.argmax(-1) == target)
    for part, values in timing_nll.items():
      parameters = {name[len(part) + 1:]: value for name, value in out.items()
                    if name.startswith(part + '_')}
      bins = tf.constant(timing_bins.to_bins(targets[part].numpy()), tf.int32)
      values.append(-timing_distribution.log_bin_probability(parameters, bins).numpy())
  metrics = tiny_model.metrics
  assert len(np.concatenate(nll)) <= config.train.validation_windows
  assert np.concatenate(nll).mean() == pytest.approx(metrics['pitch_nll'], abs=1e-5)
  assert np.concatenate(correct).mean() == pytest.approx(metrics['pitch_accuracy'], abs=1e-6)
  for part, values in timing_nll.items():
    assert np.concatenate(values).mean() == pytest.approx(metrics[f'{part}_nll'], abs=1e-5), part
  note_nll = np.concatenate(nll) + sum(np.concatenate(values) for values in timing_nll.values())
  assert note_nll.mean() == pytest.approx(metrics['note_nll'], abs=1e-5)


FRESH_PROCESS = textwrap.dedent('''
    import json, sys
    import numpy as np
    import tensorflow as tf
    export = sys.argv[1]
    model = tf.saved_model.load(export)
    primes = json.load(open(export + '/assets/primes.json'))
    windows = {name: tf.constant(values, tf.int32 if name == 'pitch' else tf.float32)
               for name, values in primes.items()}
    def run(seed, num_notes=30):
      out = model.generate(
          **windows, num_notes=tf.constant(num_notes), temperature=tf.constant(1.0),
          top_k=tf.constant(128), top_p=tf.constant(1.0), label_guidance=tf.constant(1.0),
          tempo=tf.constant(0.0), seed=tf.constant(seed, tf.int64),
          label=tf.zeros([len(primes['pitch'])], tf.int32))
      return {k: v.numpy().tolist() for k, v in out.items()}
    project = [m for m in sys.modules if m.split('.')[0] in
               ('partita', 'trainer', 'serving', 'beam_pipelines', 'apache_beam')]
    batch = len(primes['pitch'])
    next_note = model.predict_next(
        **windows, next_step=tf.zeros([batch]), next_pitch=tf.fill([batch], 60),
        next_duration=tf.fill([batch], 0.5), label=tf.zeros([batch], tf.int32))
    print(json.dumps({'a': run(1), 'b': run(1), 'c': run(2), 'project_modules': project,
                      'next_note': {k: v.numpy().tolist() for k, v in next_note.items()}}))
''')


def test_export_generates_in_a_fresh_process_without_project_code(tiny_model, tmp_path):
  export = tiny_model.export_dir
  script = tmp_path / 'serve.py'
  script.write_text(FRESH_PROCESS)
  # Run from an empty folder with a clean path: the project's packages are not importable.
  result = subprocess.run([sys.executable, str(script), export], cwd=tmp_path,
                          capture_output=True, text=True, check=True,
                          env={k: v for k, v in os.environ.items() if k != 'PYTHONPATH'})
  out = json.loads(result.stdout.strip().splitlines()[-1])
  assert out['project_modules'] == []
  num_primes = tiny_model.config.export.num_primes
  for name in ('pitch', 'step', 'duration', 'velocity'):
    assert np.asarray(out['a'][name]).shape == (num_primes, 30)
  assert out['a'] == out['b']  # same seed, same notes
  assert out['a']['pitch'] != out['c']['pitch']
  pitch = np.asarray(out['a']['pitch'])
  assert pitch.min() >= 0 and pitch.max() <= 127
  assert np.all(np.asarray(out['a']['step']) >= 0)
  assert np.all(np.asarray(out['a']['duration']) > 0)
  velocity = np.asarray(out['a']['velocity'])
  assert velocity.min() >= 1 and velocity.max() <= 127

  # The reloaded export computes what the trained in-memory Keras model computes for the same
  # next note (a chord note, pitch 60, held 0.5 s).
  with open(os.path.join(export, 'assets', 'primes.json')) as f:
    primes = {name: np.asarray(values) for name, values in json.load(f).items()}
  primes['label'] = np.zeros_like(primes['pitch'])  # the unconditional id the process used
  expected = tiny_model.model(primes, {'step': np.zeros(num_primes, np.float32),
                                       'pitch': np.full(num_primes, 60),
                                       'duration': np.full(num_primes, 0.5, np.float32)},
                              training=False)
  # The pitch: the network's mixed with the pitch n-grams of the training pieces.
  expected_pitch = tiny_model.ngrams.mix(expected['pitch'], primes['pitch'],
                                         primes['label'][:, -1])
  np.testing.assert_allclose(out['next_note']['pitch_logits'], expected_pitch, atol=1e-4)
  for part in ('step', 'duration'):
    for name, value in expected[part].items():
      np.testing.assert_allclose(out['next_note'][f'{part}_{name}'], value, atol=1e-4)


def test_generate_command_writes_midi_with_the_requested_notes(tiny_model, tmp_path):
  export = tiny_model.export_dir
  out = tmp_path / 'generated'
  args = ['--model', export, '--out', str(out), '--num-samples', '3', '--num-notes', '25',
          '--seed', '5', '--temperature', '0.8', '--no-audio']  # WAVs: tests/test_serving.py
  assert generate_lib.main(args) == 0
  names = sorted(os.listdir(out))
  assert names == [pieces.GENERATION_FILE, 'index.html'] + [
      f'sample_00{i}.{ext}' for i in range(3) for ext in ('mid', 'png')] + [pieces.SUMMARY_FILE]
  summary = json.loads((out / pieces.SUMMARY_FILE).read_text())
  counted = ('requests_in', 'written', 'dead_letters', 'candidates')
  assert {key: summary[key] for key in counted} == {
      'requests_in': 3, 'written': 3, 'dead_letters': 0,
      'candidates': {'drawn': 3, 'rejected_as_copies': 0}}
  assert summary['pieces']['sample_001'] == {
      'kept': 0, 'candidates': [{'seed': 6, 'score': None, 'rejection': None}]}
  for i in range(3):
    midi = pretty_midi.PrettyMIDI(str(out / f'sample_00{i}.mid'))
    by_name = {instrument.name: instrument for instrument in midi.instruments}
    assert len(by_name['continuation'].notes) == 25
    assert len(by_name['prime'].notes) == WINDOW
    prime_end = max(n.start for n in by_name['prime'].notes)
    assert min(n.start for n in by_name['continuation'].notes) >= prime_end
  first = (out / 'sample_000.mid').read_bytes()
  again = tmp_path / 'again'
  assert generate_lib.main(args[:2] + ['--out', str(again)] + args[4:]) == 0
  assert (again / 'sample_000.mid').read_bytes() == first  # byte-identical for the same seed


@pytest.mark.parametrize('flag,value,message', [
    ('--temperature', '0', 'temperature'),
    ('--top-k', '129', 'top_k'),
    ('--top-p', '0', 'top_p'),
    ('--num-notes', '0', 'num_notes'),
])
def test_generate_command_rejects_bad_requests(tiny_model, tmp_path, capsys, flag, value, message):
  export = tiny_model.export_dir
  out = tmp_path / 'generated'
  args = ['--model', export, '--out', str(out), '--num-samples', '1', '--num-notes', '5',
          '--seed', '0', '--temperature', '1.0']
  index = args.index(flag) + 1 if flag in args else None
  if index:
    args[index] = value
  else:
    args += [flag, value]
  assert generate_lib.main(args) == 2
  assert message in capsys.readouterr().err
  assert not out.exists()


def test_generate_command_rejects_a_folder_that_is_not_an_export(tmp_path, capsys):
  args = ['--model', str(tmp_path), '--out', str(tmp_path / 'o'), '--num-samples', '1',
          '--num-notes', '5', '--seed', '0', '--temperature', '1.0']
  assert generate_lib.main(args) == 2
  assert 'not a SavedModel export' in capsys.readouterr().err
