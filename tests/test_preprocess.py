"""Tests for beam_pipelines.preprocess: each Beam transform alone, and end-to-end runs.

Each transform with the shared dead-letter writer and atomic writes; the end-to-end runs on
generated MIDI.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import hashlib
import itertools
import json
import os
import shutil

import apache_beam as beam
from apache_beam import coders
from apache_beam.io import filesystems
from apache_beam.metrics import metric
from apache_beam.testing import test_pipeline
from apache_beam.testing import util as beam_testing
import midi_builders
import numpy as np
import pytest

from beam_pipelines import elements, preprocess, runner
from beam_pipelines import info as info_lib
from beam_pipelines import inputs as inputs_lib
from beam_pipelines import outputs as beam_outputs
from partita import constants, contract, failures
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
  inputs = [elements.InputBytes('a/good.mid', midi_builders.midi_bytes(melody)),
            elements.InputBytes('b/bad.mid', b'not midi at all'),
            elements.InputBytes('c/short.mid', midi_builders.midi_bytes(melody[:2]))]
  parse_fn = preprocess.ParsePieceFn(notes_lib.parse_midi, notes_lib.ParseOptions(min_notes=3))
  with test_pipeline.TestPipeline(runner.LOCAL_RUNNER) as pipeline:
    parsed = (pipeline
              | beam.Create(inputs)
              | beam.ParDo(parse_fn).with_outputs(beam_outputs.TAG, main='pieces'))
    # Only the fingerprint's first bytes, the name and a digest of the bytes come out: no notes.
    digest = hashlib.blake2b(inputs[0].data, digest_size=8).digest()
    beam_testing.assert_that(parsed.pieces, beam_testing.equal_to([
        (key_of(melody), elements.Copy(elements.Input('a/good.mid', 'midi', digest), 'unknown'))
    ]), label='Pieces')
    beam_testing.assert_that(parsed[beam_outputs.TAG], beam_testing.equal_to([
        {'input': 'b/bad.mid', 'reason': 'not_midi',
         'detail': 'file does not start with a MIDI header (MThd)'},
        {'input': 'c/short.mid', 'reason': 'too_few_notes', 'detail': '2 notes < minimum 3'},
    ]), label='DeadLetters')


def test_keep_first_path_fn_keeps_smallest_path_and_counts_copies():
  melody = [(60, 0.0, 0.5, 80), (62, 0.5, 1.0, 80)]
  other_melody = [(61, 0.0, 0.5, 80), (62, 0.5, 1.0, 80)]
  same = midi_builders.midi_bytes(melody)
  renamed_tracks = midi_builders.midi_bytes(melody, name='another layout', program=5)
  other = midi_builders.midi_bytes(other_melody)
  with test_pipeline.TestPipeline(runner.LOCAL_RUNNER) as pipeline:
    kept = (
        pipeline
        | beam.Create([elements.InputBytes('z/copy.mid', same),
                       elements.InputBytes('m/original.mid', same),
                       elements.InputBytes('n/renamed.mid', renamed_tracks),
                       elements.InputBytes('y/other.mid', other)])
        | beam.ParDo(preprocess.ParsePieceFn(notes_lib.parse_midi, notes_lib.ParseOptions()))
        | beam.CombinePerKey(preprocess.KeepFirstPathFn()))
    beam_testing.assert_that(kept, beam_testing.equal_to([
        (key_of(melody), elements.Kept(
            elements.Input('m/original.mid', 'midi', preprocess.input_digest(same)), 3, 'unknown',
            False)),
        (key_of(other_melody), elements.Kept(
            elements.Input('y/other.mid', 'midi', preprocess.input_digest(other)), 1, 'unknown',
            False)),
    ]))


def fingerprint_of(melody) -> str:
  return notes_lib.content_fingerprint(midi_builders.expected_notes(melody))


def key_of(melody) -> bytes:
  """The dedup's key for a melody: its fingerprint's first bytes."""
  return bytes.fromhex(fingerprint_of(melody))[:preprocess.FINGERPRINT_BYTES]


def copy_of(name: str, label: str = 'unknown') -> elements.Copy:
  """The dedup's element for a MIDI input ``name``."""
  return elements.Copy(input_of(name), label)


def input_of(name: str) -> elements.Input:
  return elements.Input(name, 'midi', preprocess.input_digest(name.encode()))


def test_keep_first_path_fn_merges_in_any_order():
  fn = preprocess.KeepFirstPathFn()
  accumulators = [fn.add_input(fn.create_accumulator(), copy_of('b')),
                  fn.create_accumulator(),
                  fn.add_input(fn.add_input(fn.create_accumulator(), copy_of('c')),
                               copy_of('a'))]
  assert fn.extract_output(fn.merge_accumulators(accumulators)) == elements.Kept(
      input_of('a'), 3, 'unknown', False)
  assert fn.extract_output(fn.merge_accumulators(accumulators[::-1])) == elements.Kept(
      input_of('a'), 3, 'unknown', False)
  assert fn.extract_output(fn.create_accumulator()) == elements.Kept(None, 0, 'unknown', False)


def test_keep_first_path_fn_labels_with_the_first_known_label_and_flags_conflicts():
  fn = preprocess.KeepFirstPathFn()

  def kept(*inputs):
    accumulators = [fn.add_input(fn.create_accumulator(), element) for element in inputs]
    return fn.extract_output(fn.merge_accumulators(accumulators))

  # The smallest name is kept; an unknown copy does not hide its copy's known label.
  assert kept(copy_of('a'), copy_of('c', 'bach')) == elements.Kept(input_of('a'), 2, 'bach',
                                                                   False)
  # Two known labels: the smallest-named labelled copy's wins, and it is a conflict.
  assert kept(copy_of('d', 'handel'), copy_of('b', 'bach'), copy_of('a')) == elements.Kept(
      input_of('a'), 3, 'bach', True)
  assert kept(copy_of('b', 'bach'), copy_of('a', 'bach')) == elements.Kept(input_of('a'), 2,
                                                                           'bach', False)


def test_keep_first_path_fn_gives_one_answer_for_every_grouping_and_holds_each_name_once():
  fn = preprocess.KeepFirstPathFn()
  copies = [copy_of('e'), copy_of('d', 'handel'), copy_of('c', 'bach'), copy_of('b'),
            copy_of('f', 'bach')]
  single = [fn.add_input(fn.create_accumulator(), copy) for copy in copies]
  # What crosses the shuffle for one input: its name once, not again as the labelled copy.
  assert single[1] == elements.DedupAccumulator(copy_of('d', 'handel'), 1, None, False)
  expected = elements.Kept(input_of('b'), 5, 'bach', True)
  for order in itertools.permutations(range(len(copies))):
    accumulators = [single[i] for i in order]
    # Merged two by two from the left, then as one list: a runner may do either.
    pairwise = functools.reduce(lambda a, b: fn.merge_accumulators([a, b]), accumulators)
    assert fn.extract_output(pairwise) == expected
    assert fn.extract_output(fn.merge_accumulators(accumulators)) == expected
  assert fn.extract_output(fn.merge_accumulators(single[:2])) == elements.Kept(
      input_of('d'), 2, 'handel', False)
  assert fn.extract_output(fn.merge_accumulators([single[2], single[4]])) == elements.Kept(
      input_of('c'), 2, 'bach', False)


def as_plain_tuples(value):
  """``value`` with every NamedTuple in it a plain tuple, as the job's elements were before."""
  return tuple(as_plain_tuples(field) for field in value) if isinstance(value, tuple) else value


def test_every_element_is_coded_field_by_field_no_larger_than_a_plain_tuple():
  """A field Beam cannot type (a string annotation, ``X | None``) would be pickled instead.

  And the shuffle would grow by the pickle's class names.
  """
  survivor = elements.Survivor(b'f' * preprocess.FINGERPRINT_BYTES, input_of('corpus/a.mid'), 2,
                               'bach', True)
  samples = [elements.MatchedFile('corpus/a.mid', 3000),
             elements.InputBytes('corpus/a.mid', b'MThd'), copy_of('corpus/a.mid', 'bach'),
             elements.NameAndLabel('corpus/a.mid', 'bach'),
             elements.DedupAccumulator(copy_of('corpus/a.mid'), 2,
                                       elements.NameAndLabel('corpus/b.mid', 'bach'), False),
             preprocess.KeepFirstPathFn().create_accumulator(),
             elements.Kept(input_of('corpus/a.mid'), 2, 'bach', True), survivor,
             elements.SurvivorBytes(survivor, b'MThd'),
             elements.Lost(survivor, 'unreadable', 'FileNotFoundError: gone')]
  for sample in samples:
    coder = coders.registry.get_coder(type(sample))
    assert isinstance(coder, coders.RowCoder)
    encoded = coder.encode(sample)
    assert coder.decode(encoded) == sample
    assert type(coder.decode(encoded)) is type(sample)
    assert len(encoded) <= len(coders.FastPrimitivesCoder().encode(as_plain_tuples(sample))), (
        type(sample).__name__)


def test_write_splits_writes_each_piece_as_chunks_of_its_split_and_sums_its_statistics(tmp_path):
  config = preprocess.PreprocessConfig(output=str(tmp_path), window_length=WINDOW_LENGTH,
                                       stride=STRIDE, split_ratios=SPLIT_RATIOS,
                                       isolate_parser=False)
  melodies = {seed: midi_builders.random_melody(seed, num_notes) for seed, num_notes in GOOD}
  copies = {seed: 2 if seed == 0 else 1 for seed in melodies}
  read_again = []
  for seed, melody in melodies.items():
    data = midi_builders.midi_bytes(melody)
    survivor = elements.Survivor(
        key_of(melody), elements.Input(f'{seed}.mid', 'midi', preprocess.input_digest(data)),
        copies[seed], 'unknown', False)
    read_again.append(elements.SurvivorBytes(survivor, data))
  expected = expected_by_split()

  def shards_in_their_split_folders(paths):
    relative = [os.path.relpath(path, tmp_path) for path in paths]
    assert {name.split('/')[0] for name in relative} == set(contract.SPLITS)
    assert all(name.startswith(f'{name.split("/")[0]}/{name.split("/")[0]}-')
               and name.endswith('.tfrecord.gz') for name in relative)

  with test_pipeline.TestPipeline(runner.LOCAL_RUNNER) as pipeline:
    written = ({'pieces': pipeline | 'Pieces' >> beam.Create(read_again),
                'lost': pipeline | 'Lost' >> beam.Create([])}
               | preprocess.WriteSplits(config))
    beam_testing.assert_that(written['shards'], shards_in_their_split_folders, label='Shards')
    beam_testing.assert_that(written[beam_outputs.TAG], beam_testing.equal_to([]),
                             label='NoneLost')
    beam_testing.assert_that(
        written['stats'] | beam.MapTuple(lambda split, stats: (
            split, stats['pieces'], stats['duplicates'], stats['notes'], stats['windows'],
            stats['pitch_histogram'].tolist())),
        beam_testing.equal_to([
            (split, len(split_pieces), int(any(len(p['pitch']) == GOOD[0][1]
                                               for p in split_pieces)),
             sum(len(p['pitch']) for p in split_pieces),
             sum(len(p['pitch']) - WINDOW_LENGTH for p in split_pieces),
             np.bincount(np.concatenate([p['pitch'] for p in split_pieces]),
                         minlength=128).tolist())
            for split, split_pieces in expected.items()]), label='Stats')

  for split, split_pieces in expected.items():
    files = [os.path.relpath(path, tmp_path)
             for path in glob.glob(os.path.join(tmp_path, split, '*'))]
    chunks = read_chunks(str(tmp_path), files)
    assert sorted(reassemble(chunks, WINDOW_LENGTH)) == sorted(note_rows(p) for p in split_pieces)


def test_survivors_lost_after_the_dedup_are_dead_letters_and_their_copies_stay_duplicates(
    tmp_path):
  """An input that vanishes or whose notes change between its two reads: nothing of it is written.

  The run still accounts for each of its copies. New bytes with the same notes are still the
  same piece.
  """
  config = preprocess.PreprocessConfig(output=str(tmp_path / 'out'), window_length=WINDOW_LENGTH,
                                       stride=STRIDE, split_ratios=SPLIT_RATIOS)
  kept, changed, vanished, relaid = (midi_builders.random_melody(seed, 30) for seed in range(4))
  kept_path = midi_builders.write_midi(tmp_path / 'in' / 'kept.mid', kept)
  # The dedup saw `changed`'s notes; the file now holds other notes.
  changed_path = midi_builders.write_midi(tmp_path / 'in' / 'changed.mid',
                                          midi_builders.random_melody(9, 30))
  vanished_path = str(tmp_path / 'in' / 'vanished.mid')
  # The dedup saw `relaid` in one track layout; the file now holds the same notes in another.
  relaid_path = str(tmp_path / 'in' / 'relaid.mid')
  with open(relaid_path, 'wb') as f:
    f.write(midi_builders.midi_bytes(relaid, name='another layout', program=5))

  def digest_of(melody):
    return preprocess.input_digest(midi_builders.midi_bytes(melody))

  def survivor(melody, path, copies):
    return elements.Survivor(key_of(melody), elements.Input(path, 'midi', digest_of(melody)),
                             copies, 'unknown', False)

  survivors = [survivor(kept, kept_path, 1), survivor(changed, changed_path, 3),
               survivor(vanished, vanished_path, 2), survivor(relaid, relaid_path, 1)]
  split_of = {name: notes_lib.split_for(fingerprint_of(melody), dict(SPLIT_RATIOS))
              for name, melody in (('kept', kept), ('changed', changed), ('vanished', vanished),
                                   ('relaid', relaid))}
  expected_stats = {}
  for name, pieces, duplicates in (('kept', 1, 0), ('changed', 0, 2), ('vanished', 0, 1),
                                   ('relaid', 1, 0)):
    split_pieces, split_duplicates = expected_stats.get(split_of[name], (0, 0))
    expected_stats[split_of[name]] = (split_pieces + pieces, split_duplicates + duplicates)
  with test_pipeline.TestPipeline(runner.LOCAL_RUNNER) as pipeline:
    written = (pipeline
               | beam.Create(survivors)
               | inputs_lib.ReadAgain(note_sequences=False)
               | preprocess.WriteSplits(config))
    beam_testing.assert_that(
        written[beam_outputs.TAG] | beam.Map(lambda d: (d['input'], d['reason'])),
        beam_testing.equal_to([(changed_path, 'changed_during_run'),
                               (vanished_path, 'unreadable')]), label='DeadLetters')
    beam_testing.assert_that(
        written['stats'] | beam.MapTuple(lambda split, stats: (
            split, (stats['pieces'], stats['duplicates']))),
        beam_testing.equal_to(list(expected_stats.items())), label='Stats')
  chunks = read_chunks(config.output, [
      os.path.relpath(p, config.output)
      for p in glob.glob(os.path.join(config.output, '*', '*.tfrecord.gz'))])
  assert sorted(reassemble(chunks, WINDOW_LENGTH)) == sorted(
      note_rows(midi_builders.expected_notes(melody)) for melody in (kept, relaid))


def test_write_dead_letters_writes_json_lines_into_the_one_dead_letter_folder(tmp_path):
  records = [failures.dead_letter_record('a.mid', 'not_midi', 'no MThd'),
             failures.dead_letter_record('gs://b/c.mid#3', 'corrupt_tfrecord', 'DataLossError')]
  with test_pipeline.TestPipeline(runner.LOCAL_RUNNER) as pipeline:
    files = (pipeline
             | 'Records' >> beam.Create(records)
             | 'Write' >> beam_outputs.WriteDeadLetters(str(tmp_path / 'some')))
    beam_testing.assert_that(
        files | beam.Map(lambda path: os.path.relpath(path, tmp_path / 'some')),
        beam_testing.equal_to(['dead_letter/dead_letters-00000-of-00001.jsonl']), label='Files')
    none = (pipeline
            | 'NoRecords' >> beam.Create([])
            | 'WriteNone' >> beam_outputs.WriteDeadLetters(str(tmp_path / 'none')))
    beam_testing.assert_that(
        none | beam.Map(lambda path: os.path.relpath(path, tmp_path / 'none')),
        beam_testing.equal_to(['dead_letter/dead_letters-00000-of-00001.jsonl']), label='None')
  assert read_dead_letters(str(tmp_path / 'some')) == sorted(records, key=lambda d: d['input'])
  assert read_dead_letters(str(tmp_path / 'none')) == []


def read_dead_letters(output: str) -> list[dict]:
  """Every dead-letter record under ``output``, sorted by input."""
  records = []
  for path in glob.glob(os.path.join(output, failures.DEAD_LETTER_DIR, '*')):
    assert os.path.basename(path).startswith(failures.DEAD_LETTER_PREFIX + '-')
    with open(path) as f:
      records += [json.loads(line) for line in f if line.strip()]
  assert all(set(record) == {'input', 'reason', 'detail'} for record in records)
  return sorted(records, key=lambda d: d['input'])


def test_write_info_writes_info_json_and_then_the_marker_with_the_counts(tmp_path):
  output = str(tmp_path / 'data')
  config = preprocess.PreprocessConfig(input='corpus', output=output,
                                       window_length=WINDOW_LENGTH, stride=STRIDE)
  piece = midi_builders.expected_notes(midi_builders.random_melody(0, 30))
  stats = info_lib.piece_stats(piece, copies=2, num_chunks=5, window_length=WINDOW_LENGTH)
  shard = os.path.join(output, 'train', 'train-00000-of-00001.tfrecord.gz')
  letters = os.path.join(output, 'dead_letter', 'dead_letters-00000-of-00001.jsonl')
  counts = {'files_in': 4, 'pieces_written': 1, 'duplicates': 1, 'near_duplicates': 0,
            'dead_letters': 1,
            'dead_letter_reasons': {'not_midi': 1}, 'label_conflicts': 0}
  with test_pipeline.TestPipeline(runner.LOCAL_RUNNER) as pipeline:
    written = ({'split_stats': pipeline | 'Stats' >> beam.Create([('train', stats)]),
                'dead_letters': pipeline | 'DeadLetters' >> beam.Create([
                    failures.dead_letter_record('x.mid', 'not_midi', 'no MThd')]),
                'input_digests': pipeline | 'Digests' >> beam.Create(['d', 'c', 'b', 'a']),
                'written_files': pipeline | 'Files' >> beam.Create([shard, letters])}
               | info_lib.WriteInfo(config))
    beam_testing.assert_that(written, beam_testing.equal_to([counts]))

  with open(os.path.join(output, contract.INFO_FILE)) as f:
    info = json.load(f)
  with open(os.path.join(output, contract.COMPLETED_MARKER)) as f:
    assert json.load(f) == counts == info['counts']
  assert info['input_fingerprint'] == hashlib.sha256(b'abcd').hexdigest()
  assert info['splits']['train']['files'] == ['train/train-00000-of-00001.tfrecord.gz']
  assert (info['splits']['train']['pieces'], info['splits']['train']['windows']) == (1, 22)
  assert info['splits']['test'] == {'pieces': 0, 'duplicates': 0, 'near_duplicates': 0,
                                    'notes': 0, 'chunks': 0,
                                    'windows': 0, 'label_conflicts': 0, 'gridded_pieces': 0,
                                    'gridded_notes': 0, 'labels': {}, 'seconds': 0.0,
                                    'files': []}
  # The melody's onsets are on eighth notes at 120 quarter notes a minute, in 4/4.
  assert info['splits']['train']['bar_quarters'] == {'4': 30}
  assert info['metre'] == {'gridded_pieces': 1, 'gridded_notes': 30, 'quarter_seconds': 0.5,
                           'bar_quarters': 4.0}
  assert info['splits']['train']['labels'] == {'unknown': 1}
  assert info['labels'] == {'name': 'composer', 'min_pieces': 20,
                            'vocabulary': ['unknown', 'other'], 'ids': {'unknown': 0},
                            'pieces': {'unknown': {'train': 1}}}
  assert info['options'] == json.loads(json.dumps(dataclasses.asdict(config)))
  assert sorted(os.listdir(output)) == [contract.COMPLETED_MARKER, contract.INFO_FILE]


def test_atomic_write_leaves_the_old_file_and_no_temporary_when_the_rename_fails(tmp_path,
                                                                               monkeypatch):
  path = str(tmp_path / 'info.json')
  beam_outputs.write_atomically(path, b'old')
  assert os.listdir(tmp_path) == ['info.json']

  def rename_fails(sources, destinations):
    raise KeyboardInterrupt  # an interruption between writing and renaming

  monkeypatch.setattr(filesystems.FileSystems, 'rename', rename_fails)
  with pytest.raises(KeyboardInterrupt):
    beam_outputs.write_atomically(path, b'new')
  assert os.listdir(tmp_path) == ['info.json']
  with open(path, 'rb') as f:
    assert f.read() == b'old'


# --- end to end ------------------------------------------------------------------------------


def make_corpus(folder: str) -> None:
  for seed, num_notes in GOOD:
    midi_builders.write_midi(os.path.join(folder, f'piece{seed}.mid'),
                             midi_builders.random_melody(seed, num_notes))
  # An exact copy of piece0 under a name sorting after it, in a subfolder, upper-case suffix.
  with open(os.path.join(folder, 'piece0.mid'), 'rb') as f:
    midi_builders.write_file(os.path.join(folder, 'sub', 'dir', 'COPY.MID'), f.read())
  midi_builders.write_file(os.path.join(folder, 'bad.mid'), b'this is not a MIDI file')
  midi_builders.write_midi(os.path.join(folder, 'short.mid'),
                           midi_builders.random_melody(99, WINDOW_LENGTH))
  midi_builders.write_file(os.path.join(folder, 'readme.txt'),
                           midi_builders.midi_bytes(midi_builders.random_melody(7, 40)))


def read_chunks(dataset: str, files: list[str]) -> list[dict[str, np.ndarray]]:
  import tensorflow as tf
  chunks = []
  paths = [os.path.join(dataset, f) for f in files]
  for record in tf.data.TFRecordDataset(paths, compression_type='GZIP'):
    feature = tf.train.Example.FromString(record.numpy()).features.feature
    assert set(feature) == {*constants.NOTE_FEATURES, contract.LABEL_FEATURE}
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
                  notes['velocity'].tolist(), strict=True))


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
  pipeline = test_pipeline.TestPipeline(runner.LOCAL_RUNNER)
  counts = preprocess.build_pipeline(pipeline, config)
  beam_testing.assert_that(counts, beam_testing.equal_to([{
      'files_in': 9, 'pieces_written': 6, 'duplicates': 1, 'near_duplicates': 0,
      'dead_letters': 2, 'dead_letter_reasons': {'not_midi': 1, 'too_few_notes': 1},
      'label_conflicts': 0}]))
  result = pipeline.run()
  result.wait_until_finish()
  return config, result


def expected_by_split() -> dict[str, list[dict[str, np.ndarray]]]:
  by_split = {split: [] for split in contract.SPLITS}
  for seed, num_notes in GOOD:
    piece = midi_builders.expected_notes(midi_builders.random_melody(seed, num_notes))
    by_split[notes_lib.split_for(notes_lib.content_fingerprint(piece), dict(SPLIT_RATIOS))].append(
        piece)
  return by_split


def test_end_to_end_counts_and_dead_letters(first_run):
  config, result = first_run
  with open(os.path.join(config.output, contract.INFO_FILE)) as f:
    info = json.load(f)
  assert info['counts'] == {'files_in': 9, 'pieces_written': 6, 'duplicates': 1,
                            'near_duplicates': 0, 'dead_letters': 2,
                            'dead_letter_reasons': {'not_midi': 1, 'too_few_notes': 1},
                            'label_conflicts': 0}
  with open(os.path.join(config.output, contract.COMPLETED_MARKER)) as f:
    assert json.loads(f.read()) == info['counts']
  assert info['window_length'] == WINDOW_LENGTH and info['stride'] == STRIDE
  assert info['compression'] == 'GZIP'
  assert info['features'] == {**contract.FEATURE_DTYPES, contract.LABEL_FEATURE: 'bytes'}
  assert info['options'] == json.loads(json.dumps(dataclasses.asdict(config)))

  [corpus] = config.input
  assert read_dead_letters(config.output) == [
      {'input': os.path.join(corpus, 'bad.mid'), 'reason': 'not_midi',
       'detail': 'file does not start with a MIDI header (MThd)'},
      {'input': os.path.join(corpus, 'short.mid'), 'reason': 'too_few_notes',
       'detail': '8 notes < minimum 9'}]
  assert [os.path.basename(path) for path in glob.glob(os.path.join(
      config.output, failures.DEAD_LETTER_DIR, '*'))] == ['dead_letters-00000-of-00001.jsonl']
  # Nothing but the outputs: no temporary of an atomic write is left.
  assert sorted(os.listdir(config.output)) == sorted([
      contract.COMPLETED_MARKER, contract.INFO_FILE, failures.DEAD_LETTER_DIR, *contract.SPLITS])

  def counter(name):
    [found] = result.metrics().query(metric.MetricsFilter().with_name(name))['counters']
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
           os.path.join(output, 'dead_letter', 'dead_letters-00001-of-00002.jsonl')]
  for path in stale:
    midi_builders.write_file(path, b'stale')
  corpus = os.path.join(tmp_path, 'corpus')
  kept = GOOD[1:3]
  for seed, num_notes in kept:
    midi_builders.write_midi(os.path.join(corpus, f'piece{seed}.mid'),
                             midi_builders.random_melody(seed, num_notes))
  config = dataclasses.replace(first_config, input=corpus, output=output)

  info = preprocess.run(config)

  assert info['counts'] == {'files_in': 2, 'pieces_written': 2, 'duplicates': 0,
                            'near_duplicates': 0, 'dead_letters': 0, 'dead_letter_reasons': {},
                            'label_conflicts': 0}
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
  assert read_dead_letters(output) == []


def test_input_without_midi_files_is_a_clear_error_and_writes_nothing(tmp_path):
  corpus = tmp_path / 'corpus'
  corpus.mkdir()
  (corpus / 'notes.txt').write_text('not music')
  output = tmp_path / 'out'
  config = preprocess.PreprocessConfig(input=str(corpus), output=str(output))
  with pytest.raises(FileNotFoundError, match='no .mid or .midi file matches'):
    preprocess.run(config)
  assert not output.exists()


def test_metre_stats_count_bar_lengths_and_tempos_of_gridded_notes_only():
  piece = {'quarter_seconds': np.array([0.5, 0.5, 0.25, 0.25, 0.0, 0.5], np.float32),
           'bar_quarters': np.array([3.0, 1.5, 4.0, 4.0, 0.0, 4.0], np.float32)}
  stats = info_lib.metre_stats(piece)
  assert stats['bar_quarters'] == {'3': 1, '1.5': 1, '4': 3}
  assert (stats['gridded_pieces'], stats['gridded_notes']) == (1, 5)
  assert float(stats['log_quarter_seconds_sum']) == pytest.approx(3 * np.log(0.5)
                                                                  + 2 * np.log(0.25))
