"""Strategies, mixed precision, resume after SIGKILL, outputs, presets and export placement."""

import json
import os
import shutil
import signal
import subprocess
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from trainer import config as config_lib
from trainer import data as data_lib
from trainer import export as export_lib
from trainer import distribute
from trainer import task
from trainer_fixtures import REPO, free_ports, make_dataset, reshard, subprocess_env, task_command

CHECKPOINT_STEP = 'step/.ATTRIBUTES/VARIABLE_VALUE'
OPTIMIZER_ITERATIONS = 'optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE'


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
  for name in ('tiny', 'small', 'cpu_hour', 'full'):
    config = config_lib.load(os.path.join(REPO, 'configs', f'{name}.yaml'))
    assert config_lib.from_yaml(config.to_yaml()) == config
  assert config_lib.load(os.path.join(REPO, 'configs', 'full.yaml')) == config_lib.Config()
  assert config_lib.Config().runtime.mixed_precision == 'auto'
  # cpu_hour is the run recorded in BENCHMARKS.md: the small preset with these overrides.
  assert config_lib.load(os.path.join(REPO, 'configs', 'cpu_hour.yaml')) == config_lib.load(
      os.path.join(REPO, 'configs', 'small.yaml'),
      ['model.lstm_units=128', 'model.embedding_dim=64', 'train.steps=18000',
       'train.steps_per_epoch=1000'])


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


@pytest.mark.parametrize('start,total,per_epoch,calls', [
    (0, 10, 5, [(0, 2, 5)]),
    (0, 10, 4, [(0, 2, 4), (2, 3, 2)]),  # the last epoch is short
    (5, 10, 4, [(1, 2, 3), (2, 3, 2)]),  # resumed mid-epoch: finish it first
    (6, 21, 3, [(2, 7, 3)]),
    (10, 10, 4, []),  # finished: nothing to train
    (0, 3, 100, [(0, 1, 3)]),
])
def test_epoch_plan_stops_at_exactly_the_total_steps(start, total, per_epoch, calls):
  plan = task.epoch_plan(start, total, per_epoch)
  assert plan == calls
  assert start + sum((epochs - first) * steps for first, epochs, steps in plan) == total


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
      capture_output=True, text=True, env=subprocess_env(), timeout=120)
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
  model, metrics = task.train(dataset, model_dir, tiny(f'runtime.mixed_precision={precision}'))
  assert tf.keras.mixed_precision.global_policy().name == 'float32'  # restored after training
  assert model.dtype_policy.name == policy
  assert model.get_layer('lstm').compute_dtype == precision
  for head in ('next_pitch_logits', 'next_step', 'next_duration', 'next_velocity'):
    assert model.get_layer(head).compute_dtype == 'float32'
  # Keras' compile wraps the optimizer for float16 only.
  assert (type(model.optimizer).__name__ == 'LossScaleOptimizer') == loss_scaled
  assert metrics['steps'] == 4
  assert all(np.isfinite(value) for value in metrics.values())

  export = tf.saved_model.load(os.path.join(model_dir, 'export'))
  with open(os.path.join(model_dir, 'export', 'assets', 'primes.json')) as f:
    primes = json.load(f)
  out = export.generate(
      tf.constant(primes['pitch'], tf.int32), tf.constant(primes['step'], tf.float32),
      tf.constant(primes['duration'], tf.float32), tf.constant(primes['velocity'], tf.float32),
      tf.constant(12), tf.constant(1.0), tf.constant(128), tf.constant(1.0),
      tf.constant(3, tf.int64))
  assert out['pitch'].dtype == tf.int32 and out['pitch'].shape == (4, 12)
  for name in ('step', 'duration', 'velocity'):
    assert out[name].dtype == tf.float32
    assert np.all(np.isfinite(out[name].numpy()))
  logits = export.predict_next(*[tf.constant(primes[name], dtype) for name, dtype in (
      ('pitch', tf.int32), ('step', tf.float32), ('duration', tf.float32),
      ('velocity', tf.float32))])['pitch_logits']
  assert logits.dtype == tf.float32


# --- outputs: Vertex AI, TensorBoard, object stores ---


def test_vertex_ai_dirs_take_the_export_checkpoints_and_logs(dataset, tmp_path, monkeypatch):
  vertex = {name: str(tmp_path / name) for name in ('model', 'checkpoints', 'tensorboard')}
  monkeypatch.setenv('AIP_MODEL_DIR', vertex['model'] + '/')  # Vertex AI adds the slash
  monkeypatch.setenv('AIP_CHECKPOINT_DIR', vertex['checkpoints'])
  monkeypatch.setenv('AIP_TENSORBOARD_LOG_DIR', vertex['tensorboard'])
  model_dir = str(tmp_path / 'run')
  task.train(dataset, model_dir, tiny())

  assert sorted(os.listdir(model_dir)) == ['config.yaml', 'metrics.json']
  assert os.path.exists(os.path.join(vertex['model'], 'saved_model.pb'))
  assert not [name for name in os.listdir(tmp_path) if name.startswith('.export-')]
  reader = tf.train.load_checkpoint(vertex['checkpoints'])
  assert reader.get_tensor(CHECKPOINT_STEP) == 4
  train_scalars = read_scalars(os.path.join(vertex['tensorboard'], 'train'))
  validation_scalars = read_scalars(os.path.join(vertex['tensorboard'], 'validation'))
  # Per-head losses, pitch accuracy, learning rate and throughput, against the step.
  for tag in ('loss', 'pitch_loss', 'step_loss', 'duration_loss', 'velocity_loss',
              'pitch_accuracy', 'learning_rate', 'windows_per_second'):
    assert [step for step, _ in train_scalars[tag]] == [2, 4], tag
  assert train_scalars['learning_rate'][0][1] == pytest.approx(1e-3)
  assert all(value > 0 for _, value in train_scalars['windows_per_second'])
  assert [step for step, _ in validation_scalars['pitch_accuracy']] == [2, 4]


def test_export_to_an_object_store_url_writes_a_loadable_saved_model(dataset, tmp_path):
  """TensorFlow's in-memory ``ram://`` filesystem takes the object-store path (copy, with
  saved_model.pb last) that ``gs://`` takes; gs:// itself has no emulator for TensorFlow."""
  model, _ = task.train(dataset, str(tmp_path / 'model'), tiny('train.steps=2'))
  info = data_lib.load_info(dataset)
  primes = {'pitch': np.full((2, 8), 60, np.int32), 'step': np.full((2, 8), 0.25, np.float32),
            'duration': np.full((2, 8), 0.5, np.float32),
            'velocity': np.full((2, 8), 80.0, np.float32)}
  url = 'ram://exports/run1/export'
  tf.io.gfile.makedirs(url + '/stale')  # an earlier export's leftovers are replaced
  try:
    export_lib.export_model(model, url, 8, 'config: 1\n', info, primes)
    assert not tf.io.gfile.exists(url + '/stale')
    assert sorted(tf.io.gfile.listdir(url + '/assets')) == ['config.yaml', 'info.json',
                                                            'primes.json']
    loaded = tf.saved_model.load(url)
    logits = loaded.predict_next(*[tf.constant(primes[name]) for name in
                                   ('pitch', 'step', 'duration', 'velocity')])['pitch_logits']
    np.testing.assert_allclose(logits, model(primes)['pitch'], atol=1e-5)
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
                         capture_output=True, text=True, env=subprocess_env(), timeout=600)
  assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
  assert not os.path.exists(os.path.join(model_dir, 'metrics.json'))  # killed mid-run
  killed_at = int(tf.train.load_checkpoint(os.path.join(model_dir, 'checkpoints'))
                  .get_tensor(CHECKPOINT_STEP))
  assert killed_at == 120

  second = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(),
                          timeout=300, check=True)
  lines = second.stdout.splitlines()
  assert f'resuming from step {killed_at}' in lines[1]
  steps = [int(line.split()[1].split('/')[0]) for line in lines if line.startswith('step ')]
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


# --- mirrored and multi-worker ---


def test_each_input_pipeline_reads_its_own_files(two_shard_dataset):
  info = data_lib.load_info(two_shard_dataset)
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


def test_fit_trains_on_the_first_batch_under_a_strategy():
  """Keras 3.15's fit under a strategy draws one batch from an iterator it discards before
  training (see ``distribute.keras_distributed_fit``); within the block the first batch trained on
  is the dataset's first. Batches are [[k]] for k = 1, 2... counted across iterators; the loss
  (w k)^2 with w = 1 and SGD at learning rate 1 leaves w = 1 - 2 k^2: -1 after batch 1."""
  import keras

  counter = iter(range(1, 1_000_000))
  dataset = tf.data.Dataset.from_generator(
      lambda: ((np.full((1, 1), next(counter), np.float32), np.zeros((1, 1), np.float32))
               for _ in range(1_000)),
      output_signature=(tf.TensorSpec((None, 1), tf.float32),
                        tf.TensorSpec((None, 1), tf.float32)))
  strategy = tf.distribute.MirroredStrategy(['/cpu:0'])
  with strategy.scope():
    inputs = keras.Input((1,))
    model = keras.Model(inputs, keras.layers.Dense(1, use_bias=False,
                                                   kernel_initializer='ones')(inputs))
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss='mse')
    distribute.build_for_fit(model, dataset.element_spec)
  with distribute.keras_distributed_fit(model, strategy):
    assert '_maybe_symbolic_build' in vars(model)
    model.fit(dataset, steps_per_epoch=1, epochs=1, shuffle=False, verbose=0)
  assert '_maybe_symbolic_build' not in vars(model)  # the plain model again
  assert model.get_weights()[0].item() == -1.0


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
  """Same seed, same global batch of 16, no dropout: two replicas of 8 windows each must
  see the same windows, log the same losses and apply the same updates as one replica of 16,
  up to float32 rounding.

  The replicas sum their halves of the batch and all-reduce the sums, one device sums all
  16, so values differ only by float32 rounding in another summation order: relative 1e-6
  (measured: 1e-7 on the losses). The weights after 2 Adam steps of learning rate 1e-3 are
  compared to 1e-5 (measured: 3e-8): Adam divides each gradient by its own magnitude, so a
  rounding difference in a gradient near zero can move its weight by a fraction of the learning
  rate. Before Keras' first-batch build was skipped (see ``distribute.keras_distributed_fit``), the
  mirrored run trained on other windows and differed by 5e-3.
  """
  script = tmp_path / 'two_cpus.py'
  script.write_text(MIRRORED_RUN)
  results = {}
  for strategy in ('mirrored', 'default'):
    model_dir = str(tmp_path / strategy)
    command = task_command(dataset, model_dir, f'runtime.strategy={strategy}', 'train.steps=2',
                           'train.steps_per_epoch=2')
    command[1:3] = [str(script)]  # the script instead of -m trainer.task
    result = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(),
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f'with {2 if strategy == "mirrored" else 1} replica(s)' in result.stdout
    reader = tf.train.load_checkpoint(os.path.join(model_dir, 'checkpoints'))
    weights = {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
               if name.startswith('optimizer/_trainable_variables/')}
    losses = {tag: values for tag, values in
              read_scalars(os.path.join(model_dir, 'logs', 'train')).items()
              if tag.endswith('loss')}
    with open(os.path.join(model_dir, 'metrics.json')) as f:
      results[strategy] = weights, losses, json.load(f)
  (weights, losses, metrics), (one_weights, one_losses, one_metrics) = (
      results['mirrored'], results['default'])
  assert len(weights) == len(one_weights) == 18
  for name, value in one_weights.items():
    np.testing.assert_allclose(weights[name], value, rtol=0, atol=1e-5, err_msg=name)
  assert sorted(losses) == sorted(one_losses) == [
      'duration_loss', 'loss', 'pitch_loss', 'step_loss', 'velocity_loss']
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
