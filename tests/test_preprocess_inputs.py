"""Preprocessing on every kind of input: MIDI folders, a path list, NoteSequence TFRecords, and
each kind of bad file, in one run whose every input is accounted for."""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from apache_beam.io.filesystem import FileMetadata

from beam_pipelines import inputs, preprocess
from midi_builders import (DIVISION_ZERO, HUGE_DELTA_TIMES, TEMPO_1US, ZERO_TRACKS,
                           expected_notes, midi_bytes, random_melody, write_file, write_midi)
from partita import contract
from partita import notes as notes_lib
from test_preprocess import read_chunks, reassemble, note_rows

WINDOW_LENGTH = 8
STRIDE = 5
MAX_FILE_BYTES = 12_000
MAX_NOTES = 1200
ODD_NAMES = ['Sonata [No. 1] — é #2.MIDI', '-leading dash.mid', '100% fine.mid']


def note_sequence(notes) -> bytes:
  """A serialized NoteSequence of (pitch, start, end, velocity) notes on instrument 0."""
  sequence = notes_lib.note_seq_protos().NoteSequence()
  for pitch, start, end, velocity in notes:
    sequence.notes.add(pitch=pitch, start_time=start, end_time=end, velocity=velocity)
  return sequence.SerializeToString()


def write_tfrecord(path: str, records: list[bytes]) -> str:
  with tf.io.TFRecordWriter(path) as writer:
    for record in records:
      writer.write(record)
  return path


@pytest.fixture(scope='module')
def mixed_run(tmp_path_factory):
  """One run over MIDI files good and bad, a path list and NoteSequence TFRecords."""
  root = str(tmp_path_factory.mktemp('inputs'))
  corpus = os.path.join(root, 'corpus')
  for seed in range(3):
    write_midi(os.path.join(corpus, f'good{seed}.mid'), random_melody(seed, 30 + seed))
  for seed, name in enumerate(ODD_NAMES, start=3):
    write_midi(os.path.join(corpus, 'odd', name), random_melody(seed, 30 + seed))
  write_midi(os.path.join(corpus, 'sub', 'COPY.MID'), random_melody(0, 30))
  good_bytes = midi_bytes(random_melody(0, 30))
  bad = {
      'empty.mid': b'',
      'text.mid': b'not a MIDI file',
      'truncated.mid': good_bytes[:len(good_bytes) // 2],
      'zero_tracks.mid': ZERO_TRACKS,
      'drums.mid': midi_bytes(random_melody(20, 30), drum=True),
      'short.mid': midi_bytes(random_melody(21, WINDOW_LENGTH)),
      'big.mid': midi_bytes(random_melody(22, 2500)),
      'many.mid': midi_bytes(random_melody(23, MAX_NOTES + 50)),
      'huge_delta.mid': HUGE_DELTA_TIMES,
      'tempo_1us.mid': TEMPO_1US,
      'division_zero.mid': DIVISION_ZERO,
  }
  for name, data in bad.items():
    write_file(os.path.join(corpus, 'bad', name), data)
  write_file(os.path.join(corpus, 'notes.txt'), b'not an input: wrong suffix')

  listed = os.path.join(root, 'listed')
  write_midi(os.path.join(listed, 'rel', 'good6.mid'), random_melody(6, 36))
  odd_listed = write_midi(os.path.join(listed, 'x [y] *.mid'), random_melody(7, 37))
  list_file = write_file(os.path.join(listed, 'paths.txt'), '\n'.join([
      '# one path per line', '', 'rel/good6.mid', f'  {odd_listed}  ',
      os.path.join(root, 'missing.mid')]).encode())

  sequences = os.path.join(root, 'sequences')
  os.makedirs(sequences)
  write_tfrecord(os.path.join(sequences, 'seqs.tfrecord'), [
      note_sequence(random_melody(8, 38)),
      note_sequence(random_melody(0, 30)),  # the same notes as good0.mid
      b'\x08\x96\x01 not a NoteSequence',
      note_sequence(random_melody(24, 3)),
  ])
  truncated = write_tfrecord(os.path.join(sequences, 'broken.tfrecord'), [
      note_sequence(random_melody(9, 39)), note_sequence(random_melody(25, 40))])
  with open(truncated, 'r+b') as f:
    f.truncate(os.path.getsize(truncated) - 20)

  config = preprocess.PreprocessConfig(
      input=(corpus,), output=os.path.join(root, 'out'), input_list=list_file,
      note_sequences=(os.path.join(sequences, '*.tfrecord'),), window_length=WINDOW_LENGTH,
      stride=STRIDE, max_file_bytes=MAX_FILE_BYTES, max_notes=MAX_NOTES)
  info = preprocess.run(config)
  expected_pieces = [random_melody(seed, 30 + seed) for seed in range(6)] + [
      random_melody(6, 36), random_melody(7, 37), random_melody(8, 38), random_melody(9, 39)]
  return config, info, root, expected_pieces


def dead_letters(output: str) -> list[dict]:
  records = []
  for path in glob.glob(os.path.join(output, contract.DEAD_LETTER_DIR, '*.jsonl')):
    with open(path) as f:
      records += [json.loads(line) for line in f if line.strip()]
  return sorted(records, key=lambda d: d['path'])


def test_every_input_is_accounted_for_with_its_reason(mixed_run):
  config, info, root, _ = mixed_run
  assert info['counts'] == {
      'files_in': 27, 'pieces_written': 10, 'duplicates': 2, 'dead_letters': 15,
      'dead_letter_reasons': {
          'bad_timing': 2, 'corrupt_tfrecord': 1, 'drums_only': 1, 'empty': 1, 'no_tracks': 1,
          'not_found': 1, 'not_midi': 1, 'not_note_sequence': 1, 'parse_error': 1,
          'too_few_notes': 2, 'too_large': 1, 'too_long': 1, 'too_many_notes': 1}}
  reasons = [(os.path.relpath(d['path'], root), d['reason']) for d in dead_letters(config.output)]
  assert reasons == sorted([
      ('corpus/bad/division_zero.mid', 'bad_timing'),
      ('corpus/bad/drums.mid', 'drums_only'),
      ('corpus/bad/empty.mid', 'empty'),
      ('corpus/bad/huge_delta.mid', 'too_long'),
      ('corpus/bad/many.mid', 'too_many_notes'),
      ('corpus/bad/big.mid', 'too_large'),
      ('corpus/bad/short.mid', 'too_few_notes'),
      ('corpus/bad/tempo_1us.mid', 'bad_timing'),
      ('corpus/bad/text.mid', 'not_midi'),
      ('corpus/bad/truncated.mid', 'parse_error'),
      ('corpus/bad/zero_tracks.mid', 'no_tracks'),
      ('missing.mid', 'not_found'),
      ('sequences/broken.tfrecord#1', 'corrupt_tfrecord'),
      ('sequences/seqs.tfrecord#2', 'not_note_sequence'),
      ('sequences/seqs.tfrecord#3', 'too_few_notes'),
  ])
  assert all(d['error'] for d in dead_letters(config.output))


def test_pieces_from_every_source_are_written_once(mixed_run):
  config, info, _, expected_pieces = mixed_run
  files = [f for split in contract.SPLITS for f in info['splits'][split]['files']]
  pieces = reassemble(read_chunks(config.output, files), WINDOW_LENGTH)
  assert sorted(pieces) == sorted(note_rows(expected_notes(p)) for p in expected_pieces)


def test_outputs_hold_only_finite_non_negative_times_and_midi_pitches(mixed_run):
  config, info, _, _ = mixed_run
  files = [f for split in contract.SPLITS for f in info['splits'][split]['files']]
  chunks = read_chunks(config.output, files)
  assert chunks
  for chunk in chunks:
    for name in ('step', 'duration'):
      assert np.all(np.isfinite(chunk[name])) and np.all(chunk[name] >= 0)
    assert np.all((chunk['pitch'] >= 0) & (chunk['pitch'] <= 127))
    assert np.all((chunk['velocity'] >= 1) & (chunk['velocity'] <= 127))


def test_a_file_that_cannot_be_read_is_a_dead_letter(tmp_path):
  gone = str(tmp_path / 'vanished.mid')  # matched, then deleted before it was read
  [letter] = list(inputs.ReadFileFn(MAX_FILE_BYTES).process(FileMetadata(gone, 100)))
  assert letter.tag == 'dead_letter'
  assert letter.value['path'] == gone and letter.value['reason'] == 'unreadable'
  assert 'FileNotFoundError' in letter.value['error'] or 'No such file' in letter.value['error']


def test_a_folder_of_only_bad_files_succeeds_and_says_so(tmp_path, capsys):
  write_file(tmp_path / 'in' / 'a.mid', b'')
  write_file(tmp_path / 'in' / 'b.mid', b'garbage')
  preprocess.main(['--input', str(tmp_path / 'in'), '--output', str(tmp_path / 'out')])
  out = capsys.readouterr().out
  assert 'inputs: 2 = pieces written 0 + duplicates 0 + dead letters 2' in out
  assert 'no piece was written' in out
  assert 'dead letter empty: 1' in out and 'dead letter not_midi: 1' in out
  assert os.path.exists(tmp_path / 'out' / contract.COMPLETED_MARKER)


@pytest.mark.parametrize('args, message', [
    (['--input', '{tmp}/nothing-here'], '--input {tmp}/nothing-here matches no file'),
    (['--input', '{tmp}/empty'], 'no .mid or .midi file matches --input {tmp}/empty'),
    (['--input-list', '{tmp}/no-list.txt'], '--input-list {tmp}/no-list.txt does not exist'),
    (['--note-sequences', '{tmp}/*.tfrecord'], '--note-sequences {tmp}/*.tfrecord matches no file'),
])
def test_inputs_that_name_nothing_are_clear_errors_and_write_nothing(tmp_path, capsys, args,
                                                                     message):
  write_file(tmp_path / 'empty' / 'readme.txt', b'no MIDI here')
  output = tmp_path / 'out'
  with pytest.raises(SystemExit) as exit_info:
    preprocess.main([a.format(tmp=tmp_path) for a in args] + ['--output', str(output)])
  assert exit_info.value.code == f'error: {message.format(tmp=tmp_path)}'
  assert not output.exists()


def test_command_line_needs_an_input_and_parses_selections(capsys):
  with pytest.raises(SystemExit):
    preprocess.parse_args(['--output', 'out'])
  assert 'give at least one of --input, --input-list, --note-sequences' in capsys.readouterr().err
  config, beam_args = preprocess.parse_args([
      '--input', 'a/', '--input', 'b/*.mid', '--note-sequences', 'n.tfrecord', '--output', 'o',
      '--programs', '0-3,40', '--tracks', '1', '--include-drums', '--max-notes', '500',
      '--runner', 'DirectRunner'])
  assert config.input == ('a/', 'b/*.mid') and config.note_sequences == ('n.tfrecord',)
  assert config.programs == (0, 1, 2, 3, 40) and config.tracks == (1,)
  assert config.include_drums and config.max_notes == 500
  assert config.parse_options().programs == (0, 1, 2, 3, 40)
  assert beam_args == ['--runner', 'DirectRunner']
  with pytest.raises(SystemExit):
    preprocess.parse_args(['--input', 'a', '--output', 'o', '--programs', '128'])


def test_default_chunks_stay_under_twice_the_raw_notes_on_disk(tmp_path):
  """Overlapping chunks, not one record per window: disk holds (192 + 64) / 192 copies."""
  num_notes = [700, 900, 1200]
  for seed, count in enumerate(num_notes):
    write_midi(tmp_path / 'in' / f'{seed}.mid', random_melody(seed, count))
  config = preprocess.PreprocessConfig(input=str(tmp_path / 'in'), output=str(tmp_path / 'out'),
                                       compress=False)
  info = preprocess.run(config)
  shard_bytes = sum(os.path.getsize(os.path.join(config.output, f))
                    for split in contract.SPLITS for f in info['splits'][split]['files'])
  # The raw arrays at their narrowest: uint8 pitch and velocity, float32 step and duration.
  raw_bytes = sum(num_notes) * (1 + 4 + 4 + 1)
  assert shard_bytes < 2 * raw_bytes
  assert sum(info['splits'][s]['windows'] for s in contract.SPLITS) == sum(
      n - config.window_length for n in num_notes)
