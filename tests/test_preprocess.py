"""Tests for beam_pipelines.preprocess: the Beam transforms, and end-to-end runs on generated
MIDI."""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import shutil

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_pipelines import preprocess
from midi_builders import expected_notes, midi_bytes, random_melody, write_file, write_midi
from partita import contract
from partita import notes as notes_lib

WINDOW_LENGTH = 8
STRIDE = 5
# Even-ish ratios so that six pieces land in all three splits (checked below).
SPLIT_RATIOS = (('train', 0.5), ('validation', 0.25), ('test', 0.25))
# Good pieces: (seed, number of notes).
GOOD = [(seed, 30 + 5 * seed) for seed in range(6)]


# --- transforms ------------------------------------------------------------------------------


def test_parse_midi_fn_routes_pieces_and_dead_letters():
  melody = [(60, 0.0, 0.5, 80), (64, 0.5, 1.0, 90), (67, 1.0, 2.0, 100)]
  with BeamTestPipeline() as pipeline:
    parsed = (
        pipeline
        | beam.Create([('a/good.mid', midi_bytes(melody)), ('b/bad.mid', b'not midi at all'),
                       ('c/short.mid', midi_bytes(melody[:2]))])
        | beam.ParDo(preprocess.ParsePieceFn(
            notes_lib.parse_midi, notes_lib.ParseOptions(min_notes=3))).with_outputs(
                'dead_letter', main='pieces'))
    pieces = parsed.pieces | beam.MapTuple(
        lambda fingerprint, path_notes: (fingerprint, path_notes[0],
                                         path_notes[1]['pitch'].tolist(),
                                         path_notes[1]['velocity'].tolist()))
    assert_that(pieces, equal_to([(notes_lib.content_fingerprint(expected_notes(melody)),
                                   'a/good.mid', [60, 64, 67], [80, 90, 100])]),
                label='Pieces')
    assert_that(parsed.dead_letter, equal_to([
        {'path': 'b/bad.mid', 'reason': 'not_midi',
         'error': 'file does not start with a MIDI header (MThd)'},
        {'path': 'c/short.mid', 'reason': 'too_few_notes', 'error': '2 notes < minimum 3'},
    ]), label='DeadLetters')


def test_keep_first_path_fn_keeps_smallest_path_and_counts_copies():
  melody = [(60, 0.0, 0.5, 80), (62, 0.5, 1.0, 80)]
  same = midi_bytes(melody)
  renamed_tracks = midi_bytes(melody, name='another layout', program=5)
  other = midi_bytes([(61, 0.0, 0.5, 80), (62, 0.5, 1.0, 80)])
  with BeamTestPipeline() as pipeline:
    kept = (
        pipeline
        | beam.Create([('z/copy.mid', same), ('m/original.mid', same),
                       ('n/renamed.mid', renamed_tracks), ('y/other.mid', other)])
        | beam.ParDo(preprocess.ParsePieceFn(notes_lib.parse_midi, notes_lib.ParseOptions()))
        | beam.CombinePerKey(preprocess.KeepFirstPathFn())
        | beam.MapTuple(lambda fingerprint, kept_count: (
            fingerprint, kept_count[0][0], kept_count[0][1]['pitch'].tolist(), kept_count[1])))
    assert_that(kept, equal_to([
        (notes_lib.content_fingerprint(expected_notes(melody)), 'm/original.mid', [60, 62], 3),
        (notes_lib.content_fingerprint(expected_notes([(61, 0.0, 0.5, 80), (62, 0.5, 1.0, 80)])),
         'y/other.mid', [61, 62], 1),
    ]))


def test_keep_first_path_fn_merges_in_any_order():
  fn = preprocess.KeepFirstPathFn()
  accumulators = [fn.add_input(fn.create_accumulator(), ('b', 'B')),
                  fn.create_accumulator(),
                  fn.add_input(fn.add_input(fn.create_accumulator(), ('c', 'C')), ('a', 'A'))]
  assert fn.extract_output(fn.merge_accumulators(accumulators)) == (('a', 'A'), 3)
  assert fn.extract_output(fn.merge_accumulators(accumulators[::-1])) == (('a', 'A'), 3)
  assert fn.extract_output(fn.create_accumulator()) == (None, 0)


# --- end to end ------------------------------------------------------------------------------


def make_corpus(folder: str) -> None:
  for seed, num_notes in GOOD:
    write_midi(os.path.join(folder, f'piece{seed}.mid'), random_melody(seed, num_notes))
  # An exact copy of piece0 under a name sorting after it, in a subfolder, upper-case suffix.
  with open(os.path.join(folder, 'piece0.mid'), 'rb') as f:
    write_file(os.path.join(folder, 'sub', 'dir', 'COPY.MID'), f.read())
  write_file(os.path.join(folder, 'bad.mid'), b'this is not a MIDI file')
  write_midi(os.path.join(folder, 'short.mid'), random_melody(99, WINDOW_LENGTH))
  write_file(os.path.join(folder, 'readme.txt'), midi_bytes(random_melody(7, 40)))


def read_chunks(dataset: str, files: list[str]) -> list[dict[str, np.ndarray]]:
  import tensorflow as tf
  chunks = []
  paths = [os.path.join(dataset, f) for f in files]
  for record in tf.data.TFRecordDataset(paths, compression_type='GZIP'):
    feature = tf.train.Example.FromString(record.numpy()).features.feature
    assert set(feature) == set(notes_lib.FEATURES)
    chunks.append({
        'pitch': np.array(feature['pitch'].int64_list.value, dtype=np.int64),
        'step': np.array(feature['step'].float_list.value, dtype=np.float32),
        'duration': np.array(feature['duration'].float_list.value, dtype=np.float32),
        'velocity': np.array(feature['velocity'].int64_list.value, dtype=np.int64),
    })
  return chunks


def note_rows(notes: dict[str, np.ndarray]) -> list[tuple[int, int, int, int]]:
  """Notes as (pitch, step ms, duration ms, velocity) rows, for exact comparisons."""
  return list(zip(notes['pitch'].tolist(), np.round(notes['step'] * 1000).astype(int).tolist(),
                  np.round(notes['duration'] * 1000).astype(int).tolist(),
                  notes['velocity'].tolist()))


def reassemble(chunks: list[dict[str, np.ndarray]], window_length: int) -> list[list[tuple]]:
  """Rebuilds pieces from their overlapping chunks without knowing which chunk is whose.

  A piece's first chunk starts with step 0 (onsets of the test melodies strictly increase, so no
  other chunk does); chunk k+1 starts with the last ``window_length`` notes of chunk k.
  """
  rows = [note_rows(c) for c in chunks]
  unused = set(range(len(rows)))
  pieces = []
  for first in [i for i, r in enumerate(rows) if r[0][1] == 0]:
    unused.remove(first)
    piece, last = list(rows[first]), rows[first]
    while True:
      following = [i for i in unused if rows[i][:window_length] == last[-window_length:]]
      if not following:
        break
      assert len(following) == 1
      unused.remove(following[0])
      last = rows[following[0]]
      piece += last[window_length:]
    pieces.append(piece)
  assert not unused, 'chunks that belong to no piece'
  return pieces


@pytest.fixture(scope='module')
def first_run(tmp_path_factory):
  """Runs build_pipeline once in a TestPipeline; returns (config, metrics result)."""
  root = tmp_path_factory.mktemp('e2e')
  corpus = os.path.join(root, 'corpus')
  make_corpus(corpus)
  # An output folder below a folder named like a split must not confuse the file lists.
  config = preprocess.PreprocessConfig(
      input=corpus, output=os.path.join(root, 'train', 'dataset'), window_length=WINDOW_LENGTH,
      stride=STRIDE, split_ratios=SPLIT_RATIOS)
  pipeline = BeamTestPipeline()
  counts = preprocess.build_pipeline(pipeline, config)
  assert_that(counts, equal_to([{
      'files_in': 9, 'pieces_written': 6, 'duplicates': 1, 'dead_letters': 2,
      'dead_letter_reasons': {'not_midi': 1, 'too_few_notes': 1}}]))
  result = pipeline.run()
  result.wait_until_finish()
  return config, result


def expected_by_split() -> dict[str, list[dict[str, np.ndarray]]]:
  by_split = {split: [] for split in contract.SPLITS}
  for seed, num_notes in GOOD:
    piece = expected_notes(random_melody(seed, num_notes))
    by_split[notes_lib.split_for(notes_lib.content_fingerprint(piece), dict(SPLIT_RATIOS))].append(
        piece)
  return by_split


def test_end_to_end_counts_and_dead_letters(first_run):
  config, result = first_run
  with open(os.path.join(config.output, contract.INFO_FILE)) as f:
    info = json.load(f)
  assert info['counts'] == {'files_in': 9, 'pieces_written': 6, 'duplicates': 1,
                            'dead_letters': 2,
                            'dead_letter_reasons': {'not_midi': 1, 'too_few_notes': 1}}
  with open(os.path.join(config.output, contract.COMPLETED_MARKER)) as f:
    assert json.loads(f.read()) == info['counts']
  assert info['window_length'] == WINDOW_LENGTH and info['stride'] == STRIDE
  assert info['compression'] == 'GZIP'
  assert info['features'] == contract.FEATURE_DTYPES
  assert info['options'] == json.loads(json.dumps(dataclasses.asdict(config)))

  dead = []
  for path in glob.glob(os.path.join(config.output, contract.DEAD_LETTER_DIR, '*.jsonl')):
    with open(path) as f:
      dead += [json.loads(line) for line in f if line.strip()]
  [corpus] = config.input
  assert sorted((d['path'], d['reason']) for d in dead) == [
      (os.path.join(corpus, 'bad.mid'), 'not_midi'),
      (os.path.join(corpus, 'short.mid'), 'too_few_notes')]
  assert [d['error'] for d in sorted(dead, key=lambda d: d['path'])] == [
      'file does not start with a MIDI header (MThd)', '8 notes < minimum 9']

  def counter(name):
    [found] = result.metrics().query(MetricsFilter().with_name(name))['counters']
    return found.committed

  assert counter('files_read') == 9
  assert counter('pieces') == 7  # six pieces + the copy, before dedup
  assert counter('notes') == sum(n for _, n in GOOD) + GOOD[0][1]
  assert counter('duplicates') == 1
  assert counter('not_midi') == 1  # dead letters are counted per reason
  assert counter('too_few_notes') == 1


def test_end_to_end_splits_match_info_and_reproduce_pieces(first_run):
  config, _ = first_run
  with open(os.path.join(config.output, contract.INFO_FILE)) as f:
    info = json.load(f)
  expected = expected_by_split()
  assert all(expected.values()), 'test corpus should reach every split'
  for split in contract.SPLITS:
    summary, pieces = info['splits'][split], expected[split]
    on_disk = sorted(os.path.relpath(p, config.output)
                     for p in glob.glob(os.path.join(config.output, split, '*')))
    assert summary['files'] == on_disk and on_disk, split
    assert all(f.startswith(f'{split}/{split}-') and f.endswith('.tfrecord.gz')
               for f in on_disk)
    assert summary['pieces'] == len(pieces)
    assert summary['duplicates'] == (1 if any(
        len(p['pitch']) == GOOD[0][1] for p in pieces) else 0)
    assert summary['notes'] == sum(len(p['pitch']) for p in pieces)
    assert summary['windows'] == sum(len(p['pitch']) - WINDOW_LENGTH for p in pieces)
    # Melodies start at 0 s; a piece lasts until its last note end.
    assert summary['seconds'] == pytest.approx(
        sum(float(np.max(np.cumsum(p['step'], dtype=np.float64) + p['duration']))
            for p in pieces), abs=1e-3)
    all_steps = np.concatenate([p['step'] for p in pieces]).astype(np.float64)
    assert summary['step_mean'] == pytest.approx(all_steps.mean(), abs=1e-6)
    assert summary['step_std'] == pytest.approx(all_steps.std(), abs=1e-6)
    histogram = np.bincount(np.concatenate([p['pitch'] for p in pieces]), minlength=128)
    assert summary['pitch_histogram'] == histogram.tolist()

    chunks = read_chunks(config.output, summary['files'])
    assert len(chunks) == summary['chunks'] == sum(
        len(contract.chunk_bounds(len(p['pitch']), WINDOW_LENGTH, STRIDE)) for p in pieces)
    assert all(WINDOW_LENGTH < len(c['pitch']) <= WINDOW_LENGTH + STRIDE for c in chunks)
    assert sum(len(c['pitch']) - WINDOW_LENGTH for c in chunks) == summary['windows']
    assert sorted(reassemble(chunks, WINDOW_LENGTH)) == sorted(note_rows(p) for p in pieces)

  train = info['splits']['train']
  assert info['timing'] == {'step': {'mean': train['step_mean'], 'std': train['step_std']},
                            'duration': {'mean': train['duration_mean'],
                                         'std': train['duration_std']}}


def test_rerun_with_fewer_inputs_leaves_no_stale_files(first_run, tmp_path):
  first_config, _ = first_run
  output = os.path.join(tmp_path, 'dataset')
  shutil.copytree(first_config.output, output)
  # Shards a bigger earlier run could have left behind.
  stale = [os.path.join(output, 'train', 'train-00003-of-00004.tfrecord.gz'),
           os.path.join(output, 'test', 'test-00001-of-00002.tfrecord.gz'),
           os.path.join(output, 'dead_letter', 'dead_letter-00001-of-00002.jsonl')]
  for path in stale:
    write_file(path, b'stale')
  corpus = os.path.join(tmp_path, 'corpus')
  kept = GOOD[1:3]
  for seed, num_notes in kept:
    write_midi(os.path.join(corpus, f'piece{seed}.mid'), random_melody(seed, num_notes))
  config = dataclasses.replace(first_config, input=corpus, output=output)

  info = preprocess.run(config)

  assert info['counts'] == {'files_in': 2, 'pieces_written': 2, 'duplicates': 0,
                            'dead_letters': 0, 'dead_letter_reasons': {}}
  with open(os.path.join(output, contract.INFO_FILE)) as f:
    assert json.load(f) == info
  with open(os.path.join(output, contract.COMPLETED_MARKER)) as f:
    assert json.loads(f.read()) == info['counts']
  assert not any(os.path.exists(path) for path in stale)
  notes = windows = 0
  for split in contract.SPLITS:
    listed = info['splits'][split]['files']
    on_disk = sorted(os.path.relpath(p, output)
                     for p in glob.glob(os.path.join(output, split, '**'), recursive=True)
                     if os.path.isfile(p))
    assert on_disk == listed, split
    chunks = read_chunks(output, listed)
    split_windows = sum(len(c['pitch']) - WINDOW_LENGTH for c in chunks)
    assert split_windows == info['splits'][split]['windows']
    windows += split_windows
    notes += info['splits'][split]['notes']
  assert notes == sum(n for _, n in kept)
  assert windows == sum(n - WINDOW_LENGTH for _, n in kept)
  for path in glob.glob(os.path.join(output, contract.DEAD_LETTER_DIR, '*')):
    with open(path) as f:
      assert f.read() == ''


def test_input_without_midi_files_is_a_clear_error_and_writes_nothing(tmp_path):
  corpus = tmp_path / 'corpus'
  corpus.mkdir()
  (corpus / 'notes.txt').write_text('not music')
  output = tmp_path / 'out'
  config = preprocess.PreprocessConfig(input=str(corpus), output=str(output))
  with pytest.raises(FileNotFoundError, match='no .mid or .midi file matches'):
    preprocess.run(config)
  assert not output.exists()
