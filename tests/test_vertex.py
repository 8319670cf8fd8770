"""trainer.vertex: the Vertex AI job for each topology is what trainer.task reads.

No network and no google-cloud-aiplatform: Vertex AI's documented conventions are applied here
by hand. baseOutputDirectory becomes AIP_MODEL_DIR = BASE/model/, AIP_CHECKPOINT_DIR =
BASE/checkpoints/ and AIP_TENSORBOARD_LOG_DIR = BASE/logs/; worker pool 0 becomes TF_CONFIG's
'chief' and pool 1 its 'worker's.
"""

from __future__ import annotations

import json
import pathlib
import types

import pytest
import tensorflow as tf

from trainer import config as config_lib
from trainer import distribute, task, vertex

REPO = pathlib.Path(__file__).resolve().parent.parent
BASE = 'gs://bucket/runs/r1'
PRESETS = sorted(str(path) for path in (REPO / 'configs').glob('*.yaml'))
TPU_IMAGE = 'us-docker.pkg.dev/my-project/images/tf-tpu:2.21'


def spec_for(topology: str, *extra: str) -> dict:
  argv = ['--project', 'p', '--region', 'us-central1', '--package-uri',
          'gs://bucket/partita-0.1.0.tar.gz', '--base-output-dir', BASE, '--data',
          'gs://bucket/data', '--topology', topology, *extra]
  if topology == 'tpu':
    argv += ['--executor-image', TPU_IMAGE]
  return vertex.job_spec(vertex.argument_parser().parse_args(argv))


def pools(spec: dict) -> list[dict]:
  return spec['jobSpec']['workerPoolSpecs']


def trainer_namespace(pool: dict):
  """The arguments the pool gives trainer.task, parsed by trainer.task's own parser."""
  package = pool['pythonPackageSpec']
  assert package['pythonModule'] == 'trainer.task'
  return task.argument_parser().parse_args(package['args'])


@pytest.mark.parametrize('topology, machines', [
    ('one-gpu', [('n1-standard-8', 'NVIDIA_TESLA_T4', 1, 1)]),
    ('gpus', [('n1-standard-16', 'NVIDIA_TESLA_T4', 4, 1)]),
    ('multi-worker', [('n1-standard-8', 'NVIDIA_TESLA_T4', 1, 1),
                      ('n1-standard-8', 'NVIDIA_TESLA_T4', 1, 2)]),
    ('tpu', [('cloud-tpu', 'TPU_V3', 8, 1)]),
])
def test_each_topology_has_its_worker_pools(topology, machines):
  spec = spec_for(topology, '--workers', '3')
  assert [(p['machineSpec']['machineType'], p['machineSpec']['acceleratorType'],
           p['machineSpec']['acceleratorCount'], p['replicaCount'])
          for p in pools(spec)] == machines
  image = TPU_IMAGE if topology == 'tpu' else vertex.GPU_IMAGE
  for pool in pools(spec):
    assert pool['pythonPackageSpec']['executorImageUri'] == image
    assert pool['pythonPackageSpec']['packageUris'] == ['gs://bucket/partita-0.1.0.tar.gz']


@pytest.mark.parametrize('topology, strategy, tpu', [
    ('one-gpu', 'default', ''), ('gpus', 'mirrored', ''),
    ('multi-worker', 'multi_worker', ''), ('tpu', 'tpu', 'local')])
def test_the_trainer_gets_the_strategy_of_its_topology(topology, strategy, tpu):
  for pool in pools(spec_for(topology)):
    args = trainer_namespace(pool)
    config = config_lib.load(args.config, args.set)
    assert (config.runtime.strategy, config.runtime.tpu) == (strategy, tpu)
    assert (args.data, args.model_dir) == ('gs://bucket/data', BASE)


@pytest.mark.parametrize('preset', PRESETS, ids=lambda path: pathlib.Path(path).name)
def test_a_preset_travels_as_set_values_that_resolve_to_the_same_config(preset):
  args = trainer_namespace(pools(spec_for('gpus', '--config', preset, '--set',
                                          'train.steps=7'))[0])
  assert args.config is None  # the preset is a file of this machine, not of the package
  expected = config_lib.load(preset, ['runtime.strategy=mirrored', 'train.steps=7'])
  assert config_lib.load(args.config, args.set) == expected


def test_the_trainer_writes_where_vertex_points_it(monkeypatch):
  spec = spec_for('one-gpu')
  base = spec['jobSpec']['baseOutputDirectory']['outputUriPrefix']
  assert base == BASE
  monkeypatch.setenv('AIP_MODEL_DIR', f'{base}/model/')
  monkeypatch.setenv('AIP_CHECKPOINT_DIR', f'{base}/checkpoints/')
  monkeypatch.setenv('AIP_TENSORBOARD_LOG_DIR', f'{base}/logs/')
  args = trainer_namespace(pools(spec)[0])
  dirs = task.OutputDirs.for_model_dir(args.model_dir)
  assert (dirs.export, dirs.checkpoints, dirs.logs) == (
      f'{BASE}/model/', f'{BASE}/checkpoints/', f'{BASE}/logs/')


def test_on_several_workers_exactly_the_chief_writes(monkeypatch):
  spec = spec_for('multi-worker', '--workers', '3')
  task_types = ['chief', 'worker']  # Vertex AI's names for worker pools 0 and 1
  cluster = {task_types[i]: [f'{task_types[i]}-{r}:2222' for r in range(pool['replicaCount'])]
             for i, pool in enumerate(pools(spec))}
  writers = []
  for task_type, addresses in cluster.items():
    for index in range(len(addresses)):
      monkeypatch.setenv('TF_CONFIG', json.dumps(
          {'cluster': cluster, 'task': {'type': task_type, 'index': index}}))
      strategy = types.SimpleNamespace(
          cluster_resolver=tf.distribute.cluster_resolver.TFConfigClusterResolver())
      writers += [(task_type, index)] if distribute.is_chief(strategy) else []
  assert sum(len(addresses) for addresses in cluster.values()) == 3
  assert writers == [('chief', 0)]


def test_dry_run_prints_the_spec_and_submits_nothing(capsys):
  argv = ['--project', 'p', '--region', 'us-central1', '--package-uri', 'gs://b/p.tar.gz',
          '--base-output-dir', BASE, '--data', 'gs://b/data', '--topology', 'gpus',
          '--accelerator-type', 'NVIDIA_L4', '--machine-type', 'g2-standard-24',
          '--accelerator-count', '2', '--dry-run']
  assert vertex.main(argv) == 0
  printed = json.loads(capsys.readouterr().out)
  assert printed == vertex.job_spec(vertex.argument_parser().parse_args(argv))
  assert printed['jobSpec']['workerPoolSpecs'][0]['machineSpec'] == {
      'machineType': 'g2-standard-24', 'acceleratorType': 'NVIDIA_L4', 'acceleratorCount': 2}


@pytest.mark.parametrize('extra, message', [
    (['--set', 'model.no_such_key=1'], 'unknown config key model.no_such_key'),
    (['--topology', 'tpu'], '--topology tpu needs --executor-image'),
    (['--topology', 'multi-worker', '--workers', '1'], '--workers must be at least 2'),
])
def test_a_job_that_could_not_run_is_refused_before_anything_is_sent(extra, message, capsys):
  argv = ['--project', 'p', '--region', 'r', '--package-uri', 'gs://b/p.tar.gz',
          '--base-output-dir', BASE, '--data', 'gs://b/data', '--dry-run', *extra]
  with pytest.raises(SystemExit) as exit_info:
    vertex.main(argv)
  assert exit_info.value.code == 2
  assert message in capsys.readouterr().err
