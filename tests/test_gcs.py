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

from gcp_storage_emulator import server
from google.cloud import storage
import midi_builders
import pytest

from beam_pipelines import preprocess
from partita import contract, failures
from partita import labels as labels_lib

BUCKET = 'partita-test'


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.fixture(scope='module')
def bucket(tmp_path_factory):
  # Every response it serves is logged as a warning otherwise.
  logging.getLogger('gcp_storage_emulator').setLevel(logging.ERROR)
  port = free_port()
  emulator = server.create_server('127.0.0.1', port, in_memory=True, default_bucket=BUCKET)
  emulator.start()
  # Without Application Default Credentials, Beam retries finding them four times (about 23 s)
  # before it connects anonymously. These hold a token that never expires, so nothing is looked
  # up or refreshed; the emulator ignores it.
  credentials = tmp_path_factory.mktemp('credentials') / 'emulator.json'
  credentials.write_text(json.dumps({
      'type': 'authorized_user', 'client_id': 'emulator', 'client_secret': 'emulator',
      'refresh_token': 'emulator', 'token': 'emulator', 'expiry': '2999-01-01T00:00:00Z'}))
  environment = {'STORAGE_EMULATOR_HOST': f'http://127.0.0.1:{port}',
                 'GOOGLE_APPLICATION_CREDENTIALS': str(credentials)}
  previous = {name: os.environ.get(name) for name in environment}
  os.environ.update(environment)
  try:
    yield storage.Client.create_anonymous_client().bucket(BUCKET)
  finally:
    emulator.stop()
    for name, value in previous.items():
      if value is None:
        del os.environ[name]
      else:
        os.environ[name] = value


def object_names(bucket, prefix: str) -> list[str]:
  return sorted(blob.name[len(prefix):] for blob in bucket.client.list_blobs(bucket, prefix=prefix))


def test_preprocess_from_and_to_gcs(bucket):
  for seed in range(4):
    bucket.blob(f'corpus/piece{seed}.mid').upload_from_string(
        midi_builders.midi_bytes(midi_builders.random_melody(seed, 20 + seed)))
  bucket.blob('corpus/nested/Copy Of piece0.MIDI').upload_from_string(
      midi_builders.midi_bytes(midi_builders.random_melody(0, 20)))
  bucket.blob('corpus/broken.mid').upload_from_string(b'MThd broken')
  config = preprocess.PreprocessConfig(
      input=f'gs://{BUCKET}/corpus', output=f'gs://{BUCKET}/data', window_length=8, stride=4,
      split_ratios=(('train', 1.0), ('validation', 0.0), ('test', 0.0)))

  info = preprocess.run(config)

  assert info['counts'] == {'files_in': 6, 'pieces_written': 4, 'duplicates': 1,
                            'dead_letters': 1, 'dead_letter_reasons': {'parse_error': 1},
                            'label_conflicts': 0}
  written = object_names(bucket, 'data/')
  shards = [f for split in contract.SPLITS for f in info['splits'][split]['files']]
  dead_letter_files = [f for f in written if f.startswith(f'{failures.DEAD_LETTER_DIR}/')]
  # Nothing else: info.json and COMPLETED were renamed into place, no temporary is left.
  assert written == sorted([contract.COMPLETED_MARKER, contract.INFO_FILE, *shards,
                            *dead_letter_files])
  assert dead_letter_files == ['dead_letter/dead_letters-00000-of-00001.jsonl']
  assert info['splits']['train']['files'] and info['splits']['train']['pieces'] == 4
  assert json.loads(bucket.blob('data/info.json').download_as_bytes()) == info
  assert json.loads(bucket.blob('data/COMPLETED').download_as_bytes()) == info['counts']
  dead = [json.loads(line) for line in
          bucket.blob(f'data/{dead_letter_files[0]}').download_as_text().splitlines()]
  assert dead == [{'input': f'gs://{BUCKET}/corpus/broken.mid', 'reason': 'parse_error',
                   'detail': dead[0]['detail']}]

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
      *[f for f in written if f.startswith(f'{failures.DEAD_LETTER_DIR}/')]])
  assert 'train/train-00007-of-00008.tfrecord.gz' not in written


def test_generation_job_reads_primes_and_writes_pieces_on_gcs(bucket, tmp_path):
  """The Beam generation job with its manifest, primes and outputs on gs:// (the export stays
  local: TensorFlow's own gs:// client cannot be pointed at an emulator)."""
  import numpy as np  # pylint: disable=import-outside-toplevel

  from serving import beam_generate, generation_request  # pylint: disable=import-outside-toplevel
  from serving import sampling as sampling_lib  # pylint: disable=import-outside-toplevel
  from trainer import config as config_lib  # pylint: disable=import-outside-toplevel
  from trainer import export as export_lib  # pylint: disable=import-outside-toplevel
  from trainer import model as model_lib  # pylint: disable=import-outside-toplevel

  window = 8
  config = config_lib.load(os.path.join(os.path.dirname(__file__), '..', 'configs', 'tiny.yaml'))
  timing = {'step': {'mean': 0.2, 'std': 0.1}, 'duration': {'mean': 0.4, 'std': 0.3}}
  info = {'window_length': window, 'timing': timing,
          'splits': {'train': {'pitch_histogram': [1] * 128}},
          'labels': labels_lib.vocabulary({}, 1, 'composer')}
  primes = {'pitch': np.full((1, window), 60), 'step': np.full((1, window), 0.25),
            'duration': np.full((1, window), 0.5), 'velocity': np.full((1, window), 80)}
  export_dir = str(tmp_path / 'export')
  export_lib.export_model(model_lib.build_model(config.model, window, timing, num_labels=2),
                          export_dir, window, config.to_yaml(), info, primes)
  bucket.blob('requests/primes/a.mid').upload_from_string(
      midi_builders.midi_bytes(midi_builders.random_melody(1, 20)))
  bucket.blob('requests/manifest.jsonl').upload_from_string('\n'.join(json.dumps(r) for r in [
      {'name': 'first', 'prime': 'primes/a.mid', 'num_notes': 5},
      {'name': 'second', 'prime': 'primes/a.mid', 'num_notes': 5, 'seed': 1},
      {'name': 'gone', 'prime': 'primes/missing.mid'},
  ]))

  summary = beam_generate.run(
      export_dir, f'gs://{BUCKET}/generated', generation_request.Request(
          sampling=sampling_lib.Sampling(num_notes=5)),
      manifest=f'gs://{BUCKET}/requests/manifest.jsonl')

  assert (summary['requests_in'], summary['written'], summary['dead_letters']) == (3, 2, 1)
  written = object_names(bucket, 'generated/')
  # Nothing else: every file was renamed into place, no temporary is left. WAV files where
  # FluidSynth is installed (CI installs it), written through Beam's FileSystems too.
  from partita import audio  # pylint: disable=import-outside-toplevel
  with_audio = audio.unavailable_reason(audio.default_soundfont()) is None
  assert written == sorted(
      ['dead_letter/dead_letters-00000-of-00001.jsonl', 'generation.yaml', 'index.html',
       'summary.json']
      + [f'{name}.{ext}' for name in ('first', 'second')
         for ext in ('mid', 'png', *(['wav'] if with_audio else []))])
  page = bucket.blob('generated/index.html').download_as_text()
  assert 'href="first.mid"' in page and ('src="second.wav"' in page) == with_audio
  dead = json.loads(bucket.blob(f'generated/{written[0]}').download_as_text())
  assert dead == {'input': 'gone', 'reason': 'prime_not_found',
                  'detail': f'gs://{BUCKET}/requests/primes/missing.mid does not exist'}
  assert bucket.blob('generated/first.mid').download_as_bytes().startswith(b'MThd')
