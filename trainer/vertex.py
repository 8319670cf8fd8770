r"""Submit ``trainer.task`` to Vertex AI as a custom job (or print the job with ``--dry-run``).

    python -m trainer.vertex --project P --region us-central1 \
        --package-uri gs://B/partita-0.1.0.tar.gz --base-output-dir gs://B/runs/r1 \
        --data gs://B/data --topology gpus --config configs/cpu_hour.yaml [--dry-run]

The job is one Vertex AI ``CustomJob`` whose worker pools run this package (the source
distribution built from ``setup.py``, on ``gs://``) in a prebuilt TensorFlow training container,
as ``python -m trainer.task``. Vertex AI sets ``AIP_MODEL_DIR``, ``AIP_CHECKPOINT_DIR`` and
``AIP_TENSORBOARD_LOG_DIR`` below ``baseOutputDirectory`` (``model/``, ``checkpoints/``,
``logs/``), which ``trainer.task`` writes its export, checkpoints and TensorBoard logs to; its
``--model-dir`` is the base itself, so ``config.yaml`` and ``metrics.json`` sit beside them. On
several workers Vertex AI sets ``TF_CONFIG`` with the first pool as the chief and the second as
the workers, which ``runtime.strategy=multi_worker`` reads.

A preset is a file on this machine, not in the package, so its values travel as ``--set``
arguments; ``--set`` given here comes after them and wins. ``--dry-run`` prints the job as the
REST API's JSON, which is exactly what is submitted, and needs neither credentials nor network.
Submitting needs ``google-cloud-aiplatform`` (``pip install -e .[vertex]``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import yaml

from trainer import config as config_lib

# Vertex AI's prebuilt TensorFlow training container for GPUs (Python 3.10). Installing the
# package upgrades its TensorFlow to the version setup.py pins. No prebuilt container, and no
# TensorFlow on PyPI at that version, has TPU support, so a TPU job names its image.
GPU_IMAGE = 'us-docker.pkg.dev/vertex-ai/training/tf-gpu.2-17.py310:latest'
TRAINER_MODULE = 'trainer.task'


@dataclasses.dataclass(frozen=True)
class Topology:
  """Where the job trains: the machines of its pools and the strategy that spans them."""
  machine_type: str
  accelerator_type: str
  accelerator_count: int  # per machine
  strategy: str  # runtime.strategy
  extra_sets: tuple[str, ...] = ()  # further runtime.* values this topology needs


TOPOLOGIES = {
    'one-gpu': Topology('n1-standard-8', 'NVIDIA_TESLA_T4', 1, 'default'),
    'gpus': Topology('n1-standard-16', 'NVIDIA_TESLA_T4', 4, 'mirrored'),
    # One GPU per worker; --workers machines in all: the chief pool and the worker pool.
    'multi-worker': Topology('n1-standard-8', 'NVIDIA_TESLA_T4', 1, 'multi_worker'),
    # A TPU VM: TensorFlow reaches its chips as the 'local' TPU.
    'tpu': Topology('cloud-tpu', 'TPU_V3', 8, 'tpu', ('runtime.tpu=local',)),
}


def preset_sets(preset_path: str) -> list[str]:
  """A preset file's values as ``--set KEY=VALUE`` texts (values in YAML flow style)."""
  with open(preset_path) as f:
    values = yaml.safe_load(f) or {}
  sets = []

  def walk(node: dict, prefix: str) -> None:
    for key, value in node.items():
      if isinstance(value, dict):
        walk(value, f'{prefix}{key}.')
      else:
        # A scalar's YAML document ends with '...'; the value is the first line.
        text = yaml.safe_dump(value, default_flow_style=True, width=float('inf'))
        sets.append(f'{prefix}{key}={text.splitlines()[0]}')

  walk(values, '')
  return sets


def trainer_args(data: str, model_dir: str, topology: Topology, preset_path: str | None,
                 sets: list[str]) -> list[str]:
  """``trainer.task``'s arguments: the preset's values, the topology's strategy, then ``sets``."""
  resolved = [*(preset_sets(preset_path) if preset_path else []),
              f'runtime.strategy={topology.strategy}', *topology.extra_sets, *sets]
  config_lib.load(None, resolved)  # a wrong key or value fails here, not an hour into the job
  args = ['--data', data, '--model-dir', model_dir]
  for value in resolved:
    args += ['--set', value]
  return args


def job_spec(args: argparse.Namespace) -> dict:
  """The ``CustomJob`` as the Vertex AI REST API's JSON (``projects.locations.customJobs``)."""
  topology = TOPOLOGIES[args.topology]
  machine_spec = {'machineType': args.machine_type or topology.machine_type,
                  'acceleratorType': args.accelerator_type or topology.accelerator_type,
                  'acceleratorCount': args.accelerator_count or topology.accelerator_count}
  package = {'executorImageUri': args.executor_image or GPU_IMAGE,
             'packageUris': [args.package_uri], 'pythonModule': TRAINER_MODULE,
             'args': trainer_args(args.data, args.base_output_dir, topology, args.config,
                                  args.set)}
  pool = {'machineSpec': machine_spec, 'replicaCount': 1, 'pythonPackageSpec': package}
  pools = [pool]
  if args.topology == 'multi-worker':
    pools.append({**pool, 'replicaCount': args.workers - 1})
  return {'displayName': args.display_name,
          'jobSpec': {'workerPoolSpecs': pools,
                      'baseOutputDirectory': {'outputUriPrefix': args.base_output_dir}}}


def submit(spec: dict, project: str, region: str) -> str:
  """Creates the job with google-cloud-aiplatform; its resource name."""
  try:
    from google.cloud import aiplatform_v1  # only submitting needs it: the [vertex] extra
  except ImportError:
    sys.exit('error: submitting needs google-cloud-aiplatform: pip install -e .[vertex] '
             '(or print the job with --dry-run)')
  client = aiplatform_v1.JobServiceClient(
      client_options={'api_endpoint': f'{region}-aiplatform.googleapis.com'})
  job = client.create_custom_job(parent=f'projects/{project}/locations/{region}',
                                 custom_job=aiplatform_v1.CustomJob.from_json(json.dumps(spec)))
  return job.name


def argument_parser() -> argparse.ArgumentParser:
  """The command's flags."""
  parser = argparse.ArgumentParser(
      description='Submit trainer.task to Vertex AI as a custom job running this package in a '
      'prebuilt TensorFlow container, on one GPU, several GPUs, several workers or a TPU VM. '
      '--dry-run prints the job spec (REST JSON) without credentials or network.')
  parser.add_argument('--project', required=True, help='Google Cloud project id')
  parser.add_argument('--region', required=True, help='Vertex AI region, e.g. us-central1')
  parser.add_argument('--package-uri', required=True,
                      help='gs:// path of the source distribution built from setup.py')
  parser.add_argument('--base-output-dir', required=True,
                      help="gs:// folder of the run: the trainer's --model-dir, with the export "
                      'in model/, checkpoints in checkpoints/ and TensorBoard logs in logs/')
  parser.add_argument('--data', required=True, help='gs:// dataset folder (preprocessing output)')
  parser.add_argument('--topology', choices=sorted(TOPOLOGIES), default='one-gpu',
                      help='one-gpu, gpus (one machine, mirrored), multi-worker '
                      '(MultiWorkerMirroredStrategy) or tpu (a TPU VM); default %(default)s')
  parser.add_argument('--workers', type=int, default=2,
                      help='machines of a multi-worker job, the chief included (default '
                      '%(default)s)')
  parser.add_argument('--config', help='training preset on this machine, e.g. configs/full.yaml')
  parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                      help="override one training config value (repeatable; after the preset's)")
  parser.add_argument('--machine-type', help="override the topology's machine type")
  parser.add_argument('--accelerator-type', help="override the topology's accelerator, e.g. "
                      'NVIDIA_L4 (with a g2 machine type) or TPU_V2')
  parser.add_argument('--accelerator-count', type=int,
                      help="override the topology's accelerators per machine")
  parser.add_argument('--executor-image',
                      help=f'training container (default for GPUs: {GPU_IMAGE}; required '
                      'for --topology tpu: an image whose TensorFlow supports TPUs)')
  parser.add_argument('--display-name', default='partita-train', help='the job\'s name in the '
                      'console (default %(default)s)')
  parser.add_argument('--dry-run', action='store_true',
                      help='print the job spec as JSON and submit nothing')
  return parser


def main(argv: list[str] | None = None) -> int:
  """The ``python -m trainer.vertex`` command; returns its exit status."""
  parser = argument_parser()
  args = parser.parse_args(argv)
  if args.workers < 2:
    parser.error('--workers must be at least 2 (the chief and one worker)')
  if args.topology == 'tpu' and not args.executor_image:
    parser.error('--topology tpu needs --executor-image: an image with a TPU build of the '
                 "TensorFlow that setup.py pins (the GPU container's cannot reach a TPU)")
  try:
    spec = job_spec(args)
  except (ValueError, OSError) as e:
    parser.error(str(e))
  if args.dry_run:
    print(json.dumps(spec, indent=2))
    return 0
  print(f'submitted {submit(spec, args.project, args.region)}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
