"""The training loop's steps, strategies, mixed precision, resume, outputs, presets and export.

Resume after SIGKILL, and export placement.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from trainer_fixtures import (
  REPO,
  WINDOW,
  free_ports,
  make_dataset,
  reshard,
  subprocess_env,
  task_command,
)
import yaml

from partita import constants, originality
from partita import dataset as dataset_lib
from trainer import config as config_lib
from trainer import data as data_lib
from trainer import distribute, task, train_loop
from trainer import export as export_lib
from trainer import metrics as metrics_lib
from trainer import model as model_lib

CHECKPOINT_STEP = 'step/.ATTRIBUTES/VARIABLE_VALUE'
OPTIMIZER_ITERATIONS = 'optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE'
LOSS_SCALE = 'optimizer/dynamic_scale/.ATTRIBUTES/VARIABLE_VALUE'
TIMING = {'step': {'mean': 0.25, 'std': 0.1}, 'duration': {'mean': 0.5, 'std': 0.2}}


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
  """12 random melodies preprocessed; one training shard (as the DirectRunner writes)."""
  return make_dataset(str(tmp_path_factory.mktemp('dataset')))


@pytest.fixture(scope='module')
def two_shard_dataset(dataset, tmp_path_factory):
  """The same dataset with its training split rewritten as two shards."""
  data_dir = str(tmp_path_factory.mktemp('two_shards') / 'data')
  shutil.copytree(dataset, data_dir)
  reshard(data_dir, 'train', 2)
  return data_dir


def tiny(*overrides):
  return config_lib.load(os.path.join(REPO, 'configs', 'tiny.yaml'), overrides)


def next_note_conditions(batch):
  """``predict_next``'s next_step, next_pitch, next_duration and label.

  A note 0.25 s after the window's last, pitch 60, held 0.5 s; and its label: the unconditional
  id.
  """
  return {'next_step': tf.fill([batch], 0.25), 'next_pitch': tf.fill([batch], 60),
          'next_duration': tf.fill([batch], 0.5), 'label': tf.zeros([batch], tf.int32)}


def read_scalars(log_dir):
  """{tag: [(step, value)...]} from every TensorBoard event file in ``log_dir``."""
  scalars = {}
  for path in sorted(tf.io.gfile.glob(os.path.join(log_dir, 'events.out.tfevents.*'))):
    for record in tf.data.TFRecordDataset(path):
      event = tf.compat.v1.Event.FromString(record.numpy())
      for value in event.summary.value:
        number = float(tf.make_ndarray(value.tensor))
        scalars.setdefault(value.tag, []).append((event.step, number))
  return scalars


# --- configuration ---


def test_presets_all_load_and_full_is_the_defaults():
  for name in ('tiny', 'small', 'small_causal', 'cpu_hour', 'full'):
    config = config_lib.load(os.path.join(REPO, 'configs', f'{name}.yaml'))
    assert config_lib.from_yaml(config.to_yaml()) == config
  assert config_lib.load(os.path.join(REPO, 'configs', 'full.yaml')) == config_lib.Config()
  assert config_lib.Config().runtime.mixed_precision == 'auto'
  # cpu_hour and small_causal are the runs recorded in BENCHMARKS.md: the small preset with
  # these overrides (small_causal also with the transpositions it was measured with).
  measured_small = ['data.tempo_stretch=0.1', 'model.step_loss_weight=1.0',
                    'model.duration_loss_weight=1.0']
  assert config_lib.load(os.path.join(REPO, 'configs', 'cpu_hour.yaml')) == config_lib.load(
      os.path.join(REPO, 'configs', 'small.yaml'),
      measured_small + ['model.lstm_units=128', 'model.embedding_dim=64', 'model.head_units=128',
                        'train.steps=18000', 'train.steps_per_epoch=1000'])
  assert config_lib.load(os.path.join(REPO, 'configs', 'small_causal.yaml')) == config_lib.load(
      os.path.join(REPO, 'configs', 'small.yaml'),
      measured_small + ['data.transpose_semitones=3', 'model.encoder=causal'])


def test_unknown_strategy_and_precision_are_clear_errors():
  with pytest.raises(ValueError, match='runtime.strategy must be one of default, one_device, '
                     'mirrored, multi_worker, tpu'):
    config_lib.load(None, ['runtime.strategy=horovod'])
  with pytest.raises(ValueError, match='runtime.mixed_precision must be one of auto, none, '
                     'float16, bfloat16'):
    config_lib.load(None, ['runtime.mixed_precision=float8'])
  with pytest.raises(ValueError, match="unknown runtime.strategy 'horovod'"):
    distribute.make_strategy(config_lib.RuntimeConfig(strategy='horovod'))


def test_auto_mixed_precision_is_float32_on_a_cpu():
  runtime = config_lib.RuntimeConfig(mixed_precision='auto')
  assert distribute.mixed_precision_policy(runtime, tf.distribute.get_strategy()) == 'float32'
  runtime.mixed_precision = 'bfloat16'
  policy = distribute.mixed_precision_policy(runtime, tf.distribute.get_strategy())
  assert policy == 'mixed_bfloat16'


@pytest.mark.parametrize('start,total,per_epoch,checkpoint_every,pauses', [
    (0, 10, 5, 5, [5, 10]),
    (0, 10, 4, 4, [4, 8, 10]),  # the last epoch is short
    (5, 10, 4, 4, [8, 10]),  # resumed mid-epoch: finish it first
    (0, 10, 4, 3, [3, 4, 6, 8, 9, 10]),  # checkpoints within epochs
    (6, 21, 3, 3, [9, 12, 15, 18, 21]),
    (10, 10, 4, 4, []),  # finished: nothing to train
    (0, 3, 100, 100, [3]),
])
def test_training_pauses_at_checkpoints_epoch_ends_and_exactly_the_total_steps(
    start, total, per_epoch, checkpoint_every, pauses):
  assert list(train_loop.pauses(start, total, per_epoch, checkpoint_every)) == pauses


# --- TPU ---


def test_tpu_strategy_without_a_tpu_is_a_clear_error(monkeypatch):
  monkeypatch.delenv('TPU_NAME', raising=False)
  monkeypatch.delenv('KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS', raising=False)
  with pytest.raises(distribute.StrategyError, match=r'no TPU reachable at runtime.tpu=\$TPU_NAME '
                     r'\(not set\) \(ValueError: Please provide a TPU Name to connect to.\)'):
    distribute.make_strategy(config_lib.RuntimeConfig(strategy='tpu'))


def test_tpu_strategy_command_fails_with_a_message_on_a_machine_without_a_tpu(
    dataset, tmp_path):
  model_dir = str(tmp_path / 'model')
  result = subprocess.run(
      task_command(dataset, model_dir, 'runtime.strategy=tpu', 'runtime.tpu=local'),
      capture_output=True, text=True, env=subprocess_env(), timeout=120, check=False)
  assert result.returncode == 1
  last_line = result.stderr.strip().splitlines()[-1]
  assert last_line.startswith("task.py: error: runtime.strategy=tpu: no TPU reachable at "
                              "runtime.tpu='local' (NotFoundError: "), last_line
  assert last_line.endswith('On a TPU VM set runtime.tpu=local; otherwise give the TPU\'s name '
                            'or grpc:// address.'), last_line
  assert not os.path.exists(os.path.join(model_dir, 'export'))


# --- mixed precision ---


@pytest.mark.parametrize('precision,policy,loss_scaled', [
    ('bfloat16', 'mixed_bfloat16', False),
    ('float16', 'mixed_float16', True),
])
def test_mixed_precision_trains_and_exports_float32(dataset, tmp_path, precision, policy,
                                                     loss_scaled):
  model_dir = str(tmp_path / 'model')
  model, metrics, _ = task.train(dataset, model_dir, tiny(f'runtime.mixed_precision={precision}'))
  assert tf.keras.mixed_precision.global_policy().name == 'float32'  # restored after training
  assert model.dtype_policy.name == policy
  assert model.encoder.lstm.compute_dtype == precision
  for head in ('pitch_head', 'step_head', 'duration_head', 'velocity_head'):
    for layer in model.get_layer(head).layers:  # the head's dense layers
      assert layer.compute_dtype == 'float32', (head, layer.name)
  # Float16 only trains with a dynamic loss scale, checkpointed with the optimizer so that a
  # resumed run carries on with it.
  checkpoint = tf.train.load_checkpoint(os.path.join(model_dir, 'checkpoints'))
  assert checkpoint.has_tensor(LOSS_SCALE) == loss_scaled
  assert metrics['steps'] == 4
  assert all(np.isfinite(value) for name, value in metrics.items() if name != 'pitch_ngram')
  assert np.isfinite(metrics['pitch_ngram']['validation_pitch_nll_network'])

  export = tf.saved_model.load(os.path.join(model_dir, 'export'))
  with open(os.path.join(model_dir, 'export', 'assets', 'primes.json')) as f:
    primes = json.load(f)
  windows = {name: tf.constant(primes[name], tf.int32 if name == 'pitch' else tf.float32)
             for name in constants.NOTE_FEATURES}
  out = export.generate(
      **windows, num_notes=tf.constant(12), temperature=tf.constant(1.0),
      top_k=tf.constant(128), top_p=tf.constant(1.0), label_guidance=tf.constant(1.0),
      tempo=tf.constant(0.0), seed=tf.constant(3, tf.int64),
      label=tf.zeros([len(primes['pitch'])], tf.int32))
  assert out['pitch'].dtype == tf.int32 and out['pitch'].shape == (4, 12)
  for name in ('step', 'duration', 'velocity'):
    assert out[name].dtype == tf.float32
    assert np.all(np.isfinite(out[name].numpy()))
  next_note = export.predict_next(**windows, **next_note_conditions(len(primes['pitch'])))
  for name, value in next_note.items():
    assert value.dtype == tf.float32, name
    assert np.all(np.isfinite(value.numpy())), name


# --- outputs: Vertex AI, TensorBoard, object stores ---


def test_vertex_ai_dirs_take_the_export_checkpoints_and_logs(dataset, tmp_path, monkeypatch):
  vertex = {name: str(tmp_path / name) for name in ('model', 'checkpoints', 'tensorboard')}
  monkeypatch.setenv('AIP_MODEL_DIR', vertex['model'] + '/')  # Vertex AI adds the slash
  monkeypatch.setenv('AIP_CHECKPOINT_DIR', vertex['checkpoints'])
  monkeypatch.setenv('AIP_TENSORBOARD_LOG_DIR', vertex['tensorboard'])
  model_dir = str(tmp_path / 'run')
  # The network alone: the n-grams mixed into the exported pitch come after training, which
  # TensorBoard's validation points do not see.
  task.train(dataset, model_dir, tiny('model.ngram_order=0'))

  assert sorted(os.listdir(model_dir)) == ['config.yaml', 'metrics.json']
  assert os.path.exists(os.path.join(vertex['model'], 'saved_model.pb'))
  assert not [name for name in os.listdir(tmp_path) if name.startswith('.export-')]
  reader = tf.train.load_checkpoint(vertex['checkpoints'])
  assert reader.get_tensor(CHECKPOINT_STEP) == 4
  train_scalars = read_scalars(os.path.join(vertex['tensorboard'], 'train'))
  validation_scalars = read_scalars(os.path.join(vertex['tensorboard'], 'validation'))
  # Per-head losses, pitch accuracy, learning rate and throughput, against the step.
  for tag in ('loss', 'pitch_nll', 'step_nll', 'duration_nll', 'velocity_loss',
              'pitch_accuracy', 'learning_rate', 'windows_per_second'):
    assert [step for step, _ in train_scalars[tag]] == [2, 4], tag
  assert train_scalars['learning_rate'][0][1] == pytest.approx(1e-3)
  assert all(value > 0 for _, value in train_scalars['windows_per_second'])
  assert sorted(validation_scalars) == sorted(metrics_lib.TRAINING_METRICS)
  for tag in metrics_lib.TRAINING_METRICS:
    assert [step for step, _ in validation_scalars[tag]] == [2, 4], tag
  # The last validation (distributed, in the loop) and metrics.json are means over the same
  # windows, under the same names.
  with open(os.path.join(model_dir, 'metrics.json')) as f:
    metrics = json.load(f)
  for name in metrics_lib.NOTE_METRICS:
    assert validation_scalars[name][-1][1] == pytest.approx(metrics[name], rel=1e-5), name


def test_export_to_an_object_store_url_writes_a_loadable_saved_model(dataset, tmp_path):
  """TensorFlow's in-memory ``ram://`` filesystem takes the object-store path that ``gs://`` takes.

  That path copies, with saved_model.pb last; gs:// itself has no emulator for TensorFlow.
  """
  model, _, _ = task.train(dataset, str(tmp_path / 'model'), tiny('train.steps=2'))
  info = dataset_lib.load_info(dataset)
  primes = {'pitch': np.full((2, 8), 60, np.int32), 'step': np.full((2, 8), 0.25, np.float32),
            'duration': np.full((2, 8), 0.5, np.float32),
            'velocity': np.full((2, 8), 80.0, np.float32),
            'quarter_seconds': np.full((2, 8), 0.5, np.float32),
            'bar_position': np.tile(np.arange(8, dtype=np.float32) % 4 / 2, (2, 1)),
            'bar_quarters': np.full((2, 8), 4.0, np.float32)}
  url = 'ram://exports/run1/export'
  tf.io.gfile.makedirs(url + '/stale')  # an earlier export's leftovers are replaced
  try:
    export_lib.export_model(model, url, 8, 'config: 1\n', info, primes,
                            originality.build_table(primes['pitch']))
    assert not tf.io.gfile.exists(url + '/stale')
    assert sorted(tf.io.gfile.listdir(url + '/assets')) == ['config.yaml', 'info.json',
                                                            'primes.json',
                                                            'training_runs.npz']
    loaded = tf.saved_model.load(url)
    conditions = next_note_conditions(2)
    out = loaded.predict_next(
        **{name: tf.constant(primes[name]) for name in constants.NOTE_FEATURES}, **conditions)
    expected = model({**primes, 'label': np.zeros((2, 8), np.int32)},
                     {part: conditions[f'next_{part}'] for part in ('step', 'pitch', 'duration')})
    np.testing.assert_allclose(out['pitch_logits'], expected['pitch'], atol=1e-5)
    np.testing.assert_allclose(out['step_locations'], expected['step']['locations'], atol=1e-5)
  finally:
    tf.io.gfile.rmtree('ram://exports')


# --- resume ---


# The trainer command, SIGKILLed right after its checkpoint of step 120 is saved: the kill lands
# at the same step on any machine, loaded or not.
KILLED_AFTER_CHECKPOINT_120 = """
import os, signal, sys
import tensorflow as tf
from trainer import task

save = tf.train.CheckpointManager.save

def save_then_die_at_120(manager, *args, **kwargs):
  path = save(manager, *args, **kwargs)
  if int(manager.checkpoint.step) == 120:
    os.kill(os.getpid(), signal.SIGKILL)
  return path

tf.train.CheckpointManager.save = save_then_die_at_120
task.main(sys.argv[1:])
"""


def test_killed_run_resumes_from_its_checkpoint_and_stops_at_the_planned_step(
    dataset, tmp_path):
  model_dir = str(tmp_path / 'model')
  total = 390  # 7 epochs of 50 steps and a short one of 40
  command = task_command(dataset, model_dir, f'train.steps={total}',
                         'train.steps_per_epoch=50', 'train.checkpoint_steps=10')
  first = subprocess.run([command[0], '-c', KILLED_AFTER_CHECKPOINT_120] + command[3:],
                         capture_output=True, text=True, env=subprocess_env(), timeout=600,
                         check=False)
  assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
  assert not os.path.exists(os.path.join(model_dir, 'metrics.json'))  # killed mid-run
  killed_at = int(tf.train.load_checkpoint(os.path.join(model_dir, 'checkpoints'))
                  .get_tensor(CHECKPOINT_STEP))
  assert killed_at == 120

  second = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(),
                          timeout=300, check=True)
  lines = second.stdout.splitlines()
  assert f'resuming from step {killed_at}' in lines[1]
  progress = [line for line in lines if line.startswith('step ')]
  for line in progress:
    assert re.fullmatch(rf'step \d+/{total} loss=\d+\.\d{{4}} pitch_nll=\d\.\d{{4}} '
                        r'val_pitch_accuracy=\d\.\d{4} val_pitch_nll=\d\.\d{4} '
                        r'val_note_nll=\d+\.\d{4} \(\d+ windows/s\)', line), line
  steps = [int(line.split()[1].split('/')[0]) for line in progress]
  # The resumed run finishes the interrupted epoch, then validates every 50 steps.
  assert steps == [step for step in range(50, total, 50) if step > killed_at] + [total]

  with open(os.path.join(model_dir, 'metrics.json')) as f:
    assert json.load(f)['steps'] == total
  reader = tf.train.load_checkpoint(os.path.join(model_dir, 'checkpoints'))
  assert reader.get_tensor(CHECKPOINT_STEP) == total
  assert reader.get_tensor(OPTIMIZER_ITERATIONS) == total
  logged = [step for step, _ in read_scalars(os.path.join(model_dir, 'logs', 'train'))['loss']]
  assert logged == sorted(set(logged)) and logged[-1] == total  # continuous, no step twice
  assert os.path.exists(os.path.join(model_dir, 'export', 'saved_model.pb'))


def test_a_model_dir_resumes_only_with_the_model_settings_that_trained_it(dataset, tmp_path,
                                                                          capsys):
  """Checkpoints of another model are refused, naming the settings, before config.yaml changes."""
  model_dir = tmp_path / 'model'
  checkpoints = str(model_dir / 'checkpoints')
  trained = yaml.safe_load(tiny().to_yaml())
  del trained['model']['onset_anchors']  # as a partita from before the onset anchors wrote it
  written = yaml.safe_dump(trained)
  model_dir.mkdir()
  (model_dir / 'config.yaml').write_text(written)
  task.check_resumable(str(model_dir), checkpoints, tiny().to_yaml())  # no checkpoint: a new run
  tf.train.Checkpoint(step=tf.Variable(1)).save(os.path.join(checkpoints, 'ckpt'))
  with pytest.raises(SystemExit) as exit_info:
    task.main(['--data', dataset, '--model-dir', str(model_dir),
               '--config', os.path.join(REPO, 'configs', 'tiny.yaml'),
               '--set', 'model.lstm_units=24'])
  assert exit_info.value.code == 1
  assert capsys.readouterr().err.endswith(
      f'error: {model_dir} holds checkpoints of a model with other settings (model.lstm_units '
      f'{trained["model"]["lstm_units"]} there, 24 now; model.onset_anchors unset there, True '
      'now): their weights do not fit this one. Resume with the model settings of its '
      'config.yaml (a setting unset there is newer than the partita that trained it), or train '
      'into a new --model-dir.\n')
  assert (model_dir / 'config.yaml').read_text() == written
  # The same weights resume, whatever else changes (here the steps and the weightless settings).
  (model_dir / 'config.yaml').write_text(tiny().to_yaml())
  task.check_resumable(str(model_dir), checkpoints,
                       tiny('train.steps=999', *WEIGHTLESS_CHANGES).to_yaml())


# A new value for each of config_lib.WEIGHTLESS_MODEL_SETTINGS.
WEIGHTLESS_CHANGES = ('model.ngram_order=2', 'model.pitch_loss_weight=0.5',
                      'model.step_loss_weight=0.5', 'model.duration_loss_weight=0.5',
                      'model.velocity_loss_weight=0.5')


def test_the_weightless_model_settings_shape_no_weight():
  """What a resumed run may change builds the very same variables; a weighty setting does not."""
  def variables(*overrides):
    model = model_lib.build_model(tiny(*overrides).model, WINDOW, TIMING, num_labels=3)
    return [tuple(variable.shape) for variable in model.variables]

  assert {change.split('=')[0] for change in WEIGHTLESS_CHANGES} == {
      f'model.{key}' for key in config_lib.WEIGHTLESS_MODEL_SETTINGS}
  assert variables(*WEIGHTLESS_CHANGES) == variables()
  assert variables('model.onset_anchors=false') != variables()
  assert variables('model.dropout=0.4') != variables()  # tiny's 0.0 keeps no seed generator


# --- mirrored and multi-worker ---


def test_each_input_pipeline_reads_its_own_files(two_shard_dataset):
  info = dataset_lib.load_info(two_shard_dataset)
  config = tiny()

  def windows(pipeline_id):
    context = tf.distribute.InputContext(num_input_pipelines=2,
                                         input_pipeline_id=pipeline_id, num_replicas_in_sync=2)
    dataset = data_lib.make_dataset(two_shard_dataset, info, 'train', config.data,
                                    training=True, batch_size=16, input_context=context)
    seen = set()
    for inputs, targets in dataset.take(60):  # several passes over each shard
      for row, target in zip(inputs['pitch'].numpy(), targets['pitch'].numpy()):
        seen.add(tuple(row) + (target,))
    return seen

  first, second = windows(0), windows(1)
  assert first and second and not first & second
  assert len(first) + len(second) == info['splits']['train']['windows']


def synthetic_batches(count: int, batch_size: int = 16) -> tf.data.Dataset:
  """``count`` batches of random windows and targets, each batch different."""
  def batch(index):
    def uniform(shape, salt, low, high):
      return tf.random.stateless_uniform(shape, tf.stack([index, salt]), low, high)

    inputs = {'pitch': tf.cast(uniform([batch_size, WINDOW], 0, 0, 128), tf.int32),
              'step': uniform([batch_size, WINDOW], 1, 0.0, 1.0),
              'duration': uniform([batch_size, WINDOW], 2, 0.0, 1.0),
              'velocity': tf.round(uniform([batch_size, WINDOW], 3, 1.0, 127.0)),
              'quarter_seconds': uniform([batch_size, WINDOW], 8, 0.3, 0.7),
              'bar_position': tf.floor(uniform([batch_size, WINDOW], 9, 0.0, 12.0)) / 4,
              'bar_quarters': tf.fill([batch_size, WINDOW], 3.0),
              'label': tf.zeros([batch_size, WINDOW], tf.int32)}
    targets = {'pitch': tf.cast(uniform([batch_size], 4, 0, 128), tf.int32),
               'step': uniform([batch_size], 5, 0.0, 1.0),
               'duration': uniform([batch_size], 6, 0.0, 1.0),
               'velocity': uniform([batch_size], 7, 0.0, 1.0)}
    return inputs, targets
  return tf.data.Dataset.range(count).map(batch)


def tiny_trainer(strategy, policy='float32', optimizer=None, overrides=()):
  """The tiny preset's model and optimizer, built in ``strategy``'s scope."""
  config = tiny(*overrides)
  with distribute.global_dtype_policy(policy), strategy.scope():
    model = model_lib.build_model(config.model, WINDOW, TIMING, num_labels=3)
    if optimizer is None:
      optimizer = train_loop.make_optimizer(config.train, policy, model.trainable_variables)
    else:
      optimizer.build(model.trainable_variables)
  return train_loop.Trainer(model, optimizer, strategy, config)


def test_each_training_step_trains_on_the_next_batch_and_reports_its_metrics():
  """Under a strategy, step k trains on the dataset's k-th batch and reports that batch's metrics.

  Keras 3.15's fit drew its first batch from an iterator it then discarded. The metrics it
  reports are the means over that batch before the step's update.
  """
  strategy = tf.distribute.MirroredStrategy(['/cpu:0'])
  trainer = tiny_trainer(strategy)
  dataset = synthetic_batches(3)
  batches = iter(strategy.experimental_distribute_dataset(dataset))
  for inputs, targets in dataset.take(2):
    values = metrics_lib.window_metrics(trainer.model(inputs, targets, training=False), targets,
                                        trainer.loss_weights)
    expected = [np.mean(values[name]) for name in metrics_lib.TRAINING_METRICS]
    before = trainer.model.get_weights()
    reported = trainer.train_steps(batches, tf.constant(1)).numpy()
    np.testing.assert_allclose(reported, expected, rtol=1e-6)
    assert any(np.any(a != b) for a, b in zip(before, trainer.model.get_weights()))


def test_float16_steps_with_overflowing_gradients_are_skipped_and_the_scale_halved():
  optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(),
                                                  initial_scale=2.0**100)
  trainer = tiny_trainer(tf.distribute.get_strategy(), 'mixed_float16', optimizer)
  assert trainer.model.encoder.lstm.compute_dtype == 'float16'
  before = trainer.model.get_weights()
  # 2^100 times the loss overflows float16 (largest finite value 65504) in the LSTMs'
  # gradients: the step must change no weight.
  trainer.train_steps(iter(synthetic_batches(1).repeat()), tf.constant(1))
  for old, new in zip(before, trainer.model.get_weights()):
    np.testing.assert_array_equal(old, new)
  assert float(optimizer.scale_loss(1.0)) == 2.0**99
  assert int(optimizer.iterations) == 0


def test_each_variables_gradient_is_clipped_to_the_clipnorm_in_true_units():
  trainer = tiny_trainer(tf.distribute.get_strategy(), overrides=['train.clipnorm=0.5'])
  clipped = trainer.clip([tf.constant([3.0, 4.0]), tf.constant([0.3, 0.4]), tf.zeros(2)])
  np.testing.assert_allclose(np.stack(clipped), [[0.3, 0.4], [0.3, 0.4], [0.0, 0.0]], rtol=1e-6)
  # A sum that is not finite makes NaN of that variable's part on every replica (not only on
  # those whose part overflowed), so that under float16 they all skip the step.
  assert np.isnan(trainer.clip([tf.constant([np.inf, 1.0]), tf.ones(2)])[0]).all()

  # Under float16 the gradients come multiplied by the loss scale; the norm is the unscaled one.
  optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(), initial_scale=4.0)
  trainer = tiny_trainer(tf.distribute.get_strategy(), 'mixed_float16', optimizer,
                         ['train.clipnorm=0.5'])
  clipped = trainer.clip([tf.constant([12.0, 16.0]), tf.constant([1.2, 1.6])])
  np.testing.assert_allclose(np.stack(clipped), [[1.2, 1.6], [1.2, 1.6]], rtol=1e-6)


MIRRORED_RUN = textwrap.dedent('''
    import sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    # The training input interleaves files with deterministic=False; fix its order.
    tf.config.experimental.enable_op_determinism()
    from trainer import task
    task.main(sys.argv[1:])
''')


def test_mirrored_on_two_cpu_devices_matches_one_device(dataset, tmp_path):
  """Two replicas of 8 windows each match one replica of 16, up to float32 rounding.

  Same seed, same global batch of 16, no dropout: the two replicas must see the same windows, log
  the same losses and apply the same updates as one replica of 16. A clipnorm of 0.01 makes both
  runs clip their gradients: the replicas must clip the sum of their parts, as one device does
  (clipping each replica's part, as Keras' optimizers do, left weights 2e-3 apart).

  The replicas sum their halves of the batch and all-reduce the sums, one device sums all
  16, so values differ only by float32 rounding in another summation order: relative 1e-6
  (measured: 1e-7 on the losses). The weights after 2 Adam steps of learning rate 1e-3 are
  compared to 1e-5 (measured: 1e-7): Adam divides each gradient by its own magnitude, so a
  rounding difference in a gradient near zero can move its weight by a fraction of the learning
  rate. (Keras 3.15's ``fit`` trained the mirrored run on other windows: 5e-3 apart.)
  """
  script = tmp_path / 'two_cpus.py'
  script.write_text(MIRRORED_RUN)
  results = {}
  for strategy in ('mirrored', 'default'):
    model_dir = str(tmp_path / strategy)
    command = task_command(dataset, model_dir, f'runtime.strategy={strategy}', 'train.steps=2',
                           'train.steps_per_epoch=2', 'train.clipnorm=0.01')
    command[1:3] = [str(script)]  # the script instead of -m trainer.task
    result = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(),
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f'with {2 if strategy == "mirrored" else 1} replica(s)' in result.stdout
    reader = tf.train.load_checkpoint(os.path.join(model_dir, 'checkpoints'))
    # The model's weights: the checkpoint keeps each under one path, the embedding's under
    # model/ and the others' under the optimizer's list of the variables it trains.
    weights = {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
               if name.startswith(('model/', 'optimizer/_trainable_variables/'))}
    losses = {tag: values for tag, values in
              read_scalars(os.path.join(model_dir, 'logs', 'train')).items()
              if tag.endswith(('loss', 'nll'))}
    with open(os.path.join(model_dir, 'metrics.json')) as f:
      results[strategy] = weights, losses, json.load(f)
  (weights, losses, metrics), (one_weights, one_losses, one_metrics) = (
      results['mirrored'], results['default'])
  # The pitch, label, bar-position and beat-position embeddings 4, BiLSTM 6, LSTM 3, the four
  # heads' two dense layers' kernels and biases 16, and the pitch memory's weights' kernel and
  # bias 2.
  assert len(weights) == len(one_weights) == 31
  for name, value in one_weights.items():
    np.testing.assert_allclose(weights[name], value, rtol=0, atol=1e-5, err_msg=name)
  assert sorted(losses) == sorted(one_losses) == [
      'duration_nll', 'loss', 'note_nll', 'pitch_nll', 'step_nll', 'velocity_loss']
  for tag, values in one_losses.items():
    assert [step for step, _ in losses[tag]] == [step for step, _ in values] == [2], tag
    np.testing.assert_allclose([v for _, v in losses[tag]], [v for _, v in values], rtol=1e-6,
                               err_msg=tag)
  assert metrics.keys() == one_metrics.keys()
  for name, value in one_metrics.items():
    assert metrics[name] == pytest.approx(value, rel=1e-6), name


def test_multi_worker_trains_on_two_processes_and_only_the_chief_exports(
    two_shard_dataset, tmp_path):
  ports = free_ports(2)
  cluster = {'worker': [f'127.0.0.1:{port}' for port in ports]}
  model_dir = str(tmp_path / 'model')
  command = task_command(two_shard_dataset, model_dir, 'runtime.strategy=multi_worker',
                         'train.steps=6', 'train.steps_per_epoch=3')
  workers = []
  for index in range(2):
    scratch = tmp_path / f'tmp{index}'
    scratch.mkdir()
    tf_config = json.dumps({'cluster': cluster, 'task': {'type': 'worker', 'index': index}})
    workers.append(subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=subprocess_env(TF_CONFIG=tf_config, TMPDIR=str(scratch))))
  outputs = [worker.communicate(timeout=300)[0] for worker in workers]
  for worker, output in zip(workers, outputs):
    assert worker.returncode == 0, output[-3000:]
    assert 'MultiWorkerMirroredStrategy with 2 replica(s)' in output
    assert 'step 6/6' in output

  assert sorted(os.listdir(model_dir)) == ['checkpoints', 'config.yaml', 'export', 'logs',
                                           'metrics.json']
  with open(os.path.join(model_dir, 'metrics.json')) as f:
    assert json.load(f)['steps'] == 6
  assert tf.train.load_checkpoint(os.path.join(model_dir, 'checkpoints')).get_tensor(
      CHECKPOINT_STEP) == 6
  tf.saved_model.load(os.path.join(model_dir, 'export'))
  # The non-chief worker wrote its checkpoints and export to temporary folders it removed.
  assert os.listdir(tmp_path / 'tmp1') == []
