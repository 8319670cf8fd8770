"""Runs on gs:// paths, on a gcp-storage-emulator server started on loopback.

Preprocessing, the Beam generation job, the atomic writes outside Beam (partita.atomic) and the
evaluation report.

Beam's gs:// filesystem and partita.atomic talk to whatever ``STORAGE_EMULATOR_HOST`` names, so
the tests below run the same code paths as on Google Cloud Storage: matching a folder prefix,
reading objects, writing shards, renaming info.json into place, clearing a previous run's
objects and uploading single files.
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
from partita import atomic, contract, failures, originality
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
                            'near_duplicates': 0, 'dead_letters': 1,
                            'dead_letter_reasons': {'parse_error': 1}, 'label_conflicts': 0}
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
  """The Beam generation job with its manifest, primes and outputs on gs://.

  The export stays local: TensorFlow's own gs:// client cannot be pointed at an emulator.
  """
  import numpy as np

  from serving import beam_generate, generation_request
  from serving import sampling as sampling_lib
  from trainer import config as config_lib
  from trainer import export as export_lib
  from trainer import model as model_lib

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
                          export_dir, window, config.to_yaml(), info, primes,
                          originality.build_table(primes['pitch']))
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
  from partita import audio
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


def test_atomic_writes_replace_an_object_whole_and_an_interrupted_one_leaves_it(bucket):
  """partita.atomic, the writer of every file outside the Beam jobs, on gs://."""
  url = f'gs://{BUCKET}/atomic/index.html'
  atomic.write_bytes(url, b'old')
  atomic.write_bytes(url, b'<p>new</p>')
  blob = bucket.get_blob('atomic/index.html')
  assert blob.download_as_bytes() == b'<p>new</p>'
  assert blob.content_type == 'text/html'  # a browser shows a report's page as a page

  with pytest.raises(KeyboardInterrupt):
    with atomic.replacing(url) as temporary:
      with open(temporary, 'wb') as f:
        f.write(b'half')
      raise KeyboardInterrupt
  assert bucket.blob('atomic/index.html').download_as_bytes() == b'<p>new</p>'
  assert object_names(bucket, 'atomic/') == ['index.html']
  assert not os.path.exists(temporary)  # the local temporary is gone too


def test_evaluation_report_is_written_to_gcs(bucket):
  from evaluation import report  # noqa: PLC0415 (only these tests write a report to gs://)

  rows = {'model': {'pitch_nll': 2.0, 'pitch_accuracy': 0.5, 'pitch_top5_accuracy': 0.75,
                    'step_nll': 1.0, 'duration_nll': 1.5, 'note_nll': 4.5},
          '3-gram': {'pitch_nll': 2.5, 'pitch_accuracy': 0.25, 'pitch_top5_accuracy': 0.5},
          'timing histogram': {'step_nll': 1.25, 'duration_nll': 2.0}}
  results = {'data': 'data', 'export': 'export', 'test_windows': 10, 'seconds': 1.0,
             'note_order': 'step_pitch_duration', 'likelihood': rows, 'best_ngram': '3-gram',
             'best_timing': 'timing histogram', 'baseline_timing_nll': 3.25,
             'baseline_note_nll': 5.75, 'repeat_previous_eps': 0.5,
             'statistics': {'skipped': 'too few test pieces'}}
  curves = {run: {'pitch_nll': ([2, 4], [3.0, 2.5])} for run in ('train', 'validation')}

  report.write_report(f'gs://{BUCKET}/report', results, curves, comparisons={}, features={},
                      sets={}, primes={})

  assert object_names(bucket, 'report/') == sorted([
      report.RESULTS_FILE, report.REPORT_FILE, report.CURVES_PNG, 'index.html'])
  assert json.loads(bucket.blob(f'report/{report.RESULTS_FILE}').download_as_bytes()) == results
  assert bucket.blob(f'report/{report.CURVES_PNG}').download_as_bytes().startswith(b'\x89PNG')
  markdown = bucket.blob(f'report/{report.REPORT_FILE}').download_as_text()
  assert markdown.startswith(f'# {report.REPORT_TITLE}\n')
  assert not os.path.exists('gs:')  # no local folder named after the URL
