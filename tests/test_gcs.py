"""Preprocessing from and to gs:// paths, on a gcp-storage-emulator server started on loopback.

Beam's gs:// filesystem talks to whatever ``STORAGE_EMULATOR_HOST`` names, so the job below runs
the same code paths as on Google Cloud Storage: matching a folder prefix, reading objects,
writing shards, renaming info.json into place and clearing a previous run's objects.
"""

from __future__ import annotations

import json
import logging
import os
import socket

import pytest
from apache_beam.internal.gcp import auth
from gcp_storage_emulator.server import create_server
from google.cloud import storage

from beam_pipelines import preprocess
from midi_builders import midi_bytes, random_melody
from partita import contract

BUCKET = 'partita-test'


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.fixture(scope='module')
def bucket():
  # Every response it serves is logged as a warning otherwise.
  logging.getLogger('gcp_storage_emulator').setLevel(logging.ERROR)
  port = free_port()
  server = create_server('127.0.0.1', port, in_memory=True, default_bucket=BUCKET)
  server.start()
  previous = os.environ.get('STORAGE_EMULATOR_HOST')
  os.environ['STORAGE_EMULATOR_HOST'] = f'http://127.0.0.1:{port}'
  # Beam looks for Application Default Credentials with four retries (about 23 s) before it
  # connects anonymously; record that outcome up front, as its own cache would.
  credentials_state = auth._Credentials._credentials_init, auth._Credentials._credentials  # pylint: disable=protected-access
  auth._Credentials._credentials_init, auth._Credentials._credentials = True, None  # pylint: disable=protected-access
  try:
    yield storage.Client.create_anonymous_client().bucket(BUCKET)
  finally:
    auth._Credentials._credentials_init, auth._Credentials._credentials = credentials_state  # pylint: disable=protected-access
    server.stop()
    if previous is None:
      del os.environ['STORAGE_EMULATOR_HOST']
    else:
      os.environ['STORAGE_EMULATOR_HOST'] = previous


def object_names(bucket, prefix: str) -> list[str]:
  return sorted(blob.name[len(prefix):] for blob in bucket.client.list_blobs(bucket, prefix=prefix))


def test_preprocess_from_and_to_gcs(bucket):
  for seed in range(4):
    bucket.blob(f'corpus/piece{seed}.mid').upload_from_string(
        midi_bytes(random_melody(seed, 20 + seed)))
  bucket.blob('corpus/nested/Copy Of piece0.MIDI').upload_from_string(
      midi_bytes(random_melody(0, 20)))
  bucket.blob('corpus/broken.mid').upload_from_string(b'MThd broken')
  config = preprocess.PreprocessConfig(
      input=f'gs://{BUCKET}/corpus', output=f'gs://{BUCKET}/data', window_length=8, stride=4,
      split_ratios=(('train', 1.0), ('validation', 0.0), ('test', 0.0)))

  info = preprocess.run(config)

  assert info['counts'] == {'files_in': 6, 'pieces_written': 4, 'duplicates': 1,
                            'dead_letters': 1, 'dead_letter_reasons': {'parse_error': 1}}
  written = object_names(bucket, 'data/')
  shards = [f for split in contract.SPLITS for f in info['splits'][split]['files']]
  dead_letter_files = [f for f in written if f.startswith(f'{contract.DEAD_LETTER_DIR}/')]
  assert written == sorted([contract.COMPLETED_MARKER, contract.INFO_FILE, *shards,
                            *dead_letter_files])
  assert len(dead_letter_files) == 1
  assert info['splits']['train']['files'] and info['splits']['train']['pieces'] == 4
  assert json.loads(bucket.blob('data/info.json').download_as_bytes()) == info
  assert json.loads(bucket.blob('data/COMPLETED').download_as_bytes()) == info['counts']
  dead = [json.loads(line) for line in
          bucket.blob(f'data/{dead_letter_files[0]}').download_as_text().splitlines()]
  assert dead == [{'path': f'gs://{BUCKET}/corpus/broken.mid', 'reason': 'parse_error',
                   'error': dead[0]['error']}]

  # A rerun on fewer inputs replaces every object of the first run.
  for seed in range(1, 4):
    bucket.blob(f'corpus/piece{seed}.mid').delete()
  bucket.blob('corpus/broken.mid').delete()
  # As if an earlier run had written more shards than this one will.
  bucket.blob('data/train/train-00007-of-00008.tfrecord.gz').upload_from_string(b'stale')
  info = preprocess.run(config)
  assert info['counts']['files_in'] == 2 and info['counts']['pieces_written'] == 1
  shards = [f for split in contract.SPLITS for f in info['splits'][split]['files']]
  written = object_names(bucket, 'data/')
  assert written == sorted([
      contract.COMPLETED_MARKER, contract.INFO_FILE, *shards,
      *[f for f in written if f.startswith(f'{contract.DEAD_LETTER_DIR}/')]])
  assert 'train/train-00007-of-00008.tfrecord.gz' not in written


def test_generation_job_reads_primes_and_writes_pieces_on_gcs(bucket, tmp_path):
  """The Beam generation job with its manifest, primes and outputs on gs:// (the export stays
  local: TensorFlow's own gs:// client cannot be pointed at an emulator)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  from serving import beam_generate  # pylint: disable=import-outside-toplevel
  from trainer import config as config_lib  # pylint: disable=import-outside-toplevel
  from trainer import export as export_lib  # pylint: disable=import-outside-toplevel
  from trainer import model as model_lib  # pylint: disable=import-outside-toplevel

  window = 8
  config = config_lib.load(os.path.join(os.path.dirname(__file__), '..', 'configs', 'tiny.yaml'))
  timing = {'step': {'mean': 0.2, 'std': 0.1}, 'duration': {'mean': 0.4, 'std': 0.3}}
  info = {'window_length': window, 'timing': timing,
          'splits': {'train': {'pitch_histogram': [1] * 128}}}
  primes = {'pitch': np.full((1, window), 60), 'step': np.full((1, window), 0.25),
            'duration': np.full((1, window), 0.5), 'velocity': np.full((1, window), 80)}
  export_dir = str(tmp_path / 'export')
  export_lib.export_model(model_lib.build_model(config.model, window, timing), export_dir,
                          window, config.to_yaml(), info, primes)
  bucket.blob('requests/primes/a.mid').upload_from_string(midi_bytes(random_melody(1, 20)))
  bucket.blob('requests/manifest.jsonl').upload_from_string('\n'.join(json.dumps(r) for r in [
      {'name': 'first', 'prime': 'primes/a.mid', 'num_notes': 5},
      {'name': 'second', 'prime': 'primes/a.mid', 'num_notes': 5, 'seed': 1},
      {'name': 'gone', 'prime': 'primes/missing.mid'},
  ]))

  summary = beam_generate.run(
      export_dir, f'gs://{BUCKET}/generated', beam_generate.Request(name='', num_notes=5),
      manifest=f'gs://{BUCKET}/requests/manifest.jsonl')

  assert (summary['requests_in'], summary['written'], summary['dead_letters']) == (3, 2, 1)
  written = object_names(bucket, 'generated/')
  assert {'first.mid', 'first.png', 'second.mid', 'second.png', 'summary.json'} <= set(written)
  assert not [name for name in written if 'tmp' in name.lower()]
  assert bucket.blob('generated/first.mid').download_as_bytes().startswith(b'MThd')
