"""Preprocessing on every kind of input, in one run whose every input is accounted for.

MIDI folders, a path list, NoteSequence TFRecords, and each kind of bad file.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys

import apache_beam as beam
from apache_beam.testing import test_pipeline
from apache_beam.testing import util as beam_testing
import midi_builders
import numpy as np
import pytest
import tensorflow as tf
import test_preprocess

from beam_pipelines import elements, inputs, preprocess, runner
from beam_pipelines import outputs as beam_outputs
from partita import config_tree, contract, failures
from partita import notes as notes_lib

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
    midi_builders.write_midi(os.path.join(corpus, f'good{seed}.mid'),
                             midi_builders.random_melody(seed, 30 + seed))
  for seed, name in enumerate(ODD_NAMES, start=3):
    midi_builders.write_midi(os.path.join(corpus, 'odd', name),
                             midi_builders.random_melody(seed, 30 + seed))
  midi_builders.write_midi(os.path.join(corpus, 'sub', 'COPY.MID'),
                           midi_builders.random_melody(0, 30))
  good_bytes = midi_builders.midi_bytes(midi_builders.random_melody(0, 30))
  bad = {
      'empty.mid': b'',
      'text.mid': b'not a MIDI file',
      'truncated.mid': good_bytes[:len(good_bytes) // 2],
      'zero_tracks.mid': midi_builders.ZERO_TRACKS,
      'drums.mid': midi_builders.midi_bytes(midi_builders.random_melody(20, 30), drum=True),
      'short.mid': midi_builders.midi_bytes(midi_builders.random_melody(21, WINDOW_LENGTH)),
      'big.mid': midi_builders.midi_bytes(midi_builders.random_melody(22, 2500)),
      'many.mid': midi_builders.midi_bytes(midi_builders.random_melody(23, MAX_NOTES + 50)),
      'huge_delta.mid': midi_builders.HUGE_DELTA_TIMES,
      'tempo_1us.mid': midi_builders.TEMPO_1US,
      'division_zero.mid': midi_builders.DIVISION_ZERO,
  }
  for name, data in bad.items():
    midi_builders.write_file(os.path.join(corpus, 'bad', name), data)
  midi_builders.write_file(os.path.join(corpus, 'notes.txt'), b'not an input: wrong suffix')

  listed = os.path.join(root, 'listed')
  midi_builders.write_midi(os.path.join(listed, 'rel', 'good6.mid'),
                           midi_builders.random_melody(6, 36))
  odd_listed = midi_builders.write_midi(os.path.join(listed, 'x [y] *.mid'),
                                        midi_builders.random_melody(7, 37))
  list_file = midi_builders.write_file(os.path.join(listed, 'paths.txt'), '\n'.join([
      '# one path per line', '', 'rel/good6.mid', f'  {odd_listed}  ',
      os.path.join(root, 'missing.mid')]).encode())

  sequences = os.path.join(root, 'sequences')
  os.makedirs(sequences)
  write_tfrecord(os.path.join(sequences, 'seqs.tfrecord'), [
      note_sequence(midi_builders.random_melody(8, 38)),
      note_sequence(midi_builders.random_melody(0, 30)),  # the same notes as good0.mid
      b'\x08\x96\x01 not a NoteSequence',
      note_sequence(midi_builders.random_melody(24, 3)),
  ])
  truncated = write_tfrecord(os.path.join(sequences, 'broken.tfrecord'), [
      note_sequence(midi_builders.random_melody(9, 39)),
      note_sequence(midi_builders.random_melody(25, 40))])
  with open(truncated, 'r+b') as f:
    f.truncate(os.path.getsize(truncated) - 20)

  config = preprocess.PreprocessConfig(
      input=(corpus,), output=os.path.join(root, 'out'), input_list=list_file,
      note_sequences=(os.path.join(sequences, '*.tfrecord'),), window_length=WINDOW_LENGTH,
      stride=STRIDE, max_file_bytes=MAX_FILE_BYTES, max_notes=MAX_NOTES)
  info = preprocess.run(config)
  expected_pieces = [midi_builders.random_melody(seed, 30 + seed) for seed in range(6)] + [
      midi_builders.random_melody(seed, 30 + seed) for seed in range(6, 10)]
  return config, info, root, expected_pieces


def test_every_input_is_accounted_for_with_its_reason(mixed_run):
  config, info, root, _ = mixed_run
  assert info['counts'] == {
      'files_in': 27, 'pieces_written': 10, 'duplicates': 2, 'near_duplicates': 0,
      'dead_letters': 15,
      'dead_letter_reasons': {
          'bad_timing': 2, 'corrupt_tfrecord': 1, 'drums_only': 1, 'empty': 1, 'no_tracks': 1,
          'not_found': 1, 'not_midi': 1, 'not_note_sequence': 1, 'parse_error': 1,
          'too_few_notes': 2, 'too_large': 1, 'too_long': 1, 'too_many_notes': 1},
      'label_conflicts': 0}
  dead = test_preprocess.read_dead_letters(config.output)
  reasons = [(os.path.relpath(d['input'], root), d['reason']) for d in dead]
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
  assert all(d['detail'] for d in dead)


def test_pieces_from_every_source_are_written_once(mixed_run):
  config, info, _, expected_pieces = mixed_run
  files = [f for split in contract.SPLITS for f in info['splits'][split]['files']]
  pieces = test_preprocess.reassemble(test_preprocess.read_chunks(config.output, files),
                                      WINDOW_LENGTH)
  assert sorted(pieces) == sorted(test_preprocess.note_rows(midi_builders.expected_notes(p))
                                  for p in expected_pieces)


def raw_records(dataset: str, files: list[str]) -> list[bytes]:
  return [record.numpy() for record in tf.data.TFRecordDataset(
      [os.path.join(dataset, f) for f in files], compression_type='GZIP')]


def expected_split_contents(config, root: str) -> dict[str, dict]:
  """Each split's serialized chunks and statistics, derived without Beam from every input.

  From every input of the mixed run: parse each with partita's functions, keep the smallest name
  per fingerprint, cut its chunks.
  """
  options = config.parse_options()
  parsed = {}  # name -> notes, for every input that parses
  for folder, _, names in os.walk(root):
    for name in names:
      path = os.path.join(folder, name)
      with open(path, 'rb') as f:
        data = f.read()
      if name.lower().endswith(('.mid', '.midi')) and len(data) <= config.max_file_bytes:
        parsed[path] = data, notes_lib.parse_midi
      elif name.endswith('.tfrecord'):
        records = tf.data.TFRecordDataset(path).as_numpy_iterator()
        for index in range(4):  # the broken file's second record is unreadable
          try:
            parsed[f'{path}#{index}'] = next(records), notes_lib.parse_note_sequence
          except (StopIteration, tf.errors.DataLossError):
            break
  pieces = {}
  for _, (data, parse) in sorted(parsed.items()):
    try:
      piece = parse(data, options)
    except failures.RejectionError:
      continue
    fingerprint = notes_lib.content_fingerprint(piece)
    copies = pieces[fingerprint][1] + 1 if fingerprint in pieces else 1
    pieces[fingerprint] = (pieces[fingerprint][0] if fingerprint in pieces else piece), copies
  expected = {split: {'chunks': [], 'pieces': 0, 'duplicates': 0, 'notes': 0, 'steps': []}
              for split in contract.SPLITS}
  for fingerprint, (piece, copies) in pieces.items():
    split = expected[notes_lib.split_for(fingerprint, dict(config.split_ratios))]
    split['chunks'] += [contract.serialize_chunk(chunk, 'unknown')
                        for chunk in contract.chunks(piece, config.window_length, config.stride)]
    split['pieces'] += 1
    split['duplicates'] += copies - 1
    split['notes'] += len(piece['pitch'])
    split['steps'].append(piece['step'].astype(np.float64))
  return expected


def test_every_split_holds_exactly_the_chunks_of_its_surviving_pieces(mixed_run):
  """The chunks, as a multiset per split, and the statistics, against partita's plain functions.

  Against what partita's plain functions give for the inputs that survive the dedup (shard
  boundaries may differ).
  """
  config, info, root, _ = mixed_run
  expected = expected_split_contents(config, root)
  assert sum(e['pieces'] for e in expected.values()) == info['counts']['pieces_written'] == 10
  assert sum(e['duplicates'] for e in expected.values()) == info['counts']['duplicates'] == 2
  for split in contract.SPLITS:
    summary, want = info['splits'][split], expected[split]
    assert sorted(raw_records(config.output, summary['files'])) == sorted(want['chunks']), split
    assert (summary['pieces'], summary['duplicates'], summary['notes'], summary['chunks']) == (
        want['pieces'], want['duplicates'], want['notes'], len(want['chunks'])), split
    if want['steps']:
      steps = np.concatenate(want['steps'])
      assert summary['step_mean'] == pytest.approx(steps.mean(), rel=1e-9), split
      assert summary['step_std'] == pytest.approx(steps.std(), rel=1e-6), split


def test_outputs_hold_only_finite_non_negative_times_and_midi_pitches(mixed_run):
  config, info, _, _ = mixed_run
  files = [f for split in contract.SPLITS for f in info['splits'][split]['files']]
  chunks = test_preprocess.read_chunks(config.output, files)
  assert chunks
  for chunk in chunks:
    for name in ('step', 'duration'):
      assert np.all(np.isfinite(chunk[name])) and np.all(chunk[name] >= 0)
    assert np.all((chunk['pitch'] >= 0) & (chunk['pitch'] <= 127))
    assert np.all((chunk['velocity'] >= 1) & (chunk['velocity'] <= 127))


def test_read_inputs_reads_every_kind_of_input_and_digests_each_once(tmp_path):
  good = midi_builders.midi_bytes(midi_builders.random_melody(0, 12))
  listed_good = midi_builders.midi_bytes(midi_builders.random_melody(1, 12))
  too_large = midi_builders.midi_bytes(midi_builders.random_melody(2, 2500))
  midi_builders.write_file(tmp_path / 'corpus' / 'good.mid', good)
  midi_builders.write_file(tmp_path / 'corpus' / 'big.MIDI', too_large)
  midi_builders.write_file(tmp_path / 'corpus' / 'notes.txt', good)  # not an input
  midi_builders.write_file(tmp_path / 'listed' / 'listed.mid', listed_good)
  list_file = midi_builders.write_file(tmp_path / 'listed' / 'paths.txt',
                                       b'# comment\nlisted.mid\n\nmissing.mid\n')
  records = [note_sequence(midi_builders.random_melody(3, 12)), b'any bytes: parsed later']
  write_tfrecord(str(tmp_path / 'sequences.tfrecord'), records)
  config = preprocess.PreprocessConfig(
      input=str(tmp_path / 'corpus'), input_list=list_file,
      note_sequences=str(tmp_path / '*.tfrecord'), max_file_bytes=MAX_FILE_BYTES)
  root = str(tmp_path)

  def relative(path):
    return os.path.relpath(path, root)

  with test_pipeline.TestPipeline(runner.LOCAL_RUNNER) as pipeline:
    read = pipeline | inputs.ReadInputs(config)
    assert set(read) == {'midi', 'note_sequences', beam_outputs.TAG, 'input_digests'}
    beam_testing.assert_that(
        read['midi'] | 'Midi' >> beam.MapTuple(lambda path, data: (relative(path), data)),
        beam_testing.equal_to([('corpus/good.mid', good), ('listed/listed.mid', listed_good)]),
        label='Midi')
    beam_testing.assert_that(
        read['note_sequences'] | 'Records' >> beam.MapTuple(
            lambda name, data: (relative(name), data)),
        beam_testing.equal_to([('sequences.tfrecord#0', records[0]),
                               ('sequences.tfrecord#1', records[1])]), label='NoteSequences')
    beam_testing.assert_that(
        read[beam_outputs.TAG] | 'DeadLetters' >> beam.Map(
            lambda d: (relative(d['input']), d['reason'])),
        beam_testing.equal_to([('corpus/big.MIDI', 'too_large'),
                               ('listed/missing.mid', 'not_found')]), label='DeadLetters')
    # One digest per input: of the bytes of those read, of the name of those not read.
    beam_testing.assert_that(read['input_digests'], beam_testing.equal_to([
        hashlib.md5(data).hexdigest() for data in (good, listed_good, *records)] + [
            hashlib.md5(str(tmp_path / name).encode()).hexdigest()
            for name in ('corpus/big.MIDI', 'listed/missing.mid')]), label='Digests')


def test_read_inputs_without_note_sequences_has_no_such_output(tmp_path):
  midi_builders.write_midi(tmp_path / 'a.mid', midi_builders.random_melody(0, 12))
  config = preprocess.PreprocessConfig(input=str(tmp_path))
  with test_pipeline.TestPipeline(runner.LOCAL_RUNNER) as pipeline:
    read = pipeline | inputs.ReadInputs(config)
    assert set(read) == {'midi', beam_outputs.TAG, 'input_digests'}
    beam_testing.assert_that(read['midi'] | beam.MapTuple(lambda path, _: path),
                             beam_testing.equal_to([str(tmp_path / 'a.mid')]))


def test_parse_and_dedup_keeps_each_piece_once_across_kinds_and_rejects_the_rest():
  melody = midi_builders.random_melody(0, 12)
  other = midi_builders.random_melody(1, 12)
  same = midi_builders.midi_bytes(melody)
  config = preprocess.PreprocessConfig(window_length=WINDOW_LENGTH, isolate_parser=False)
  with test_pipeline.TestPipeline(runner.LOCAL_RUNNER) as pipeline:
    read = {'midi': pipeline | 'Midi' >> beam.Create([
                elements.InputBytes('z/copy.mid', same),
                elements.InputBytes('m/original.mid', same),
                elements.InputBytes('b/bad.mid', b'not midi')]),
            'note_sequences': pipeline | 'NoteSequences' >> beam.Create([
                elements.InputBytes('s.tfrecord#0', note_sequence(melody)),
                elements.InputBytes('s.tfrecord#1', note_sequence(other)),
                elements.InputBytes('s.tfrecord#2', b'\x08\x96\x01 not a NoteSequence')])}
    parsed = read | preprocess.ParseAndDedup(config)
    beam_testing.assert_that(parsed['survivors'], beam_testing.equal_to([
        elements.Survivor(test_preprocess.key_of(melody),
                          elements.Input('m/original.mid', 'midi', preprocess.input_digest(same)),
                          3, 'unknown', False),
        elements.Survivor(test_preprocess.key_of(other),
                          elements.Input('s.tfrecord#1', 'note_sequences',
                                         preprocess.input_digest(note_sequence(other))),
                          1, 'unknown', False)]),
        label='Survivors')
    beam_testing.assert_that(
        parsed[beam_outputs.TAG] | beam.Map(lambda d: (d['input'], d['reason'])),
        beam_testing.equal_to([('b/bad.mid', 'not_midi'),
                               ('s.tfrecord#2', 'not_note_sequence')]), label='DeadLetters')


def test_paths_travel_to_the_readers_packed_in_batches_that_keep_every_name():
  # A name that is not valid UTF-8 (Python holds it with surrogate escapes), accents, a space.
  names = [os.fsdecode(b'corpus/caf\xe9.mid'), 'corpus/Dvořák – Humoresque.mid',
           'corpus/a b.mid'] + [f'corpus/folder/piece-{i:03d}.mid' for i in range(61)]
  batch = [elements.MatchedFile(name, 1000 + i) for i, name in enumerate(names)]
  packed = inputs.pack_paths(batch)
  assert sorted(inputs.unpack_paths(packed)) == sorted(batch)
  # Paths of one folder share most of their bytes: the batch costs far less than its paths.
  assert len(packed) < sum(len(os.fsencode(name)) for name in names) / 3


def test_a_file_that_cannot_be_read_is_a_dead_letter(tmp_path):
  gone = str(tmp_path / 'vanished.mid')  # matched, then deleted before it was read
  [letter] = list(inputs.ReadFileFn(MAX_FILE_BYTES).process(elements.MatchedFile(gone, 100)))
  assert letter.tag == beam_outputs.TAG
  assert letter.value['input'] == gone and letter.value['reason'] == 'unreadable'
  assert 'FileNotFoundError' in letter.value['detail'] or 'No such file' in letter.value['detail']


def test_a_folder_of_only_bad_files_succeeds_and_says_so(tmp_path, capsys):
  midi_builders.write_file(tmp_path / 'in' / 'a.mid', b'')
  midi_builders.write_file(tmp_path / 'in' / 'b.mid', b'garbage')
  preprocess.main(['--input', str(tmp_path / 'in'), '--output', str(tmp_path / 'out')])
  out = capsys.readouterr().out
  assert ('inputs: 2 = pieces written 0 + duplicates 0 + near-duplicates 0 + dead letters 2'
          in out)
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
  midi_builders.write_file(tmp_path / 'empty' / 'readme.txt', b'no MIDI here')
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


def test_note_sequences_without_note_seq_are_a_clear_error_that_writes_nothing(
    tmp_path, capsys, monkeypatch):
  """note-seq is an extra: without it, --note-sequences names the extra before anything runs."""
  assert notes_lib.note_seq_installed()  # the suite's environment has the extra
  sequences = tmp_path / 'seqs.tfrecord'
  sequences.write_bytes(b'')
  # A module that sys.modules holds as None cannot be imported: as if it were not installed.
  for name in ['note_seq', *(name for name in sys.modules if name.startswith('note_seq.'))]:
    monkeypatch.setitem(sys.modules, name, None)
  assert not notes_lib.note_seq_installed()
  output = tmp_path / 'out'
  with pytest.raises(SystemExit):
    preprocess.main(['--note-sequences', str(sequences), '--output', str(output)])
  assert ('--note-sequences: NoteSequence inputs need note-seq, which is not installed: install '
          "the project's notesequence extra (pip install -e '.[notesequence]')"
          in capsys.readouterr().err)
  assert not output.exists()
  with pytest.raises(ModuleNotFoundError, match=re.escape(notes_lib.NOTE_SEQ_MISSING)):
    notes_lib.note_seq_protos()


def test_command_line_takes_a_preset_flags_and_overrides_in_that_order(tmp_path, capsys):
  preset = tmp_path / 'preset.yaml'
  preset.write_text('window_length: 32\nstride: 64\nmax_notes: 1000\n')
  config, _ = preprocess.parse_args([
      '--config', str(preset), '--input', 'a', '--output', 'o', '--stride', '96',
      '--set', 'max_notes=2000', '--split', 'train=1,test=1', '--no-sustain', '--no-isolation'])
  assert (config.window_length, config.stride, config.max_notes) == (32, 96, 2000)
  assert config.split_ratios == (('train', 1.0), ('test', 1.0))
  assert not config.apply_sustain and config.isolation_options() is None
  assert config_tree.from_yaml(preprocess.PreprocessConfig, config_tree.to_yaml(config)) == config
  for args, message in ((['--split', 'train=1,dev=1'],
                         "--split: expected NAME=WEIGHT with NAME in ('train', 'validation', "
                         "'test'), got 'dev=1'"),
                        (['--set', 'stride=0'], '--window-length and --stride must be positive'),
                        (['--set', 'strides=2'], 'unknown config key strides')):
    with pytest.raises(SystemExit):
      preprocess.parse_args(['--input', 'a', '--output', 'o', *args])
    assert message in capsys.readouterr().err


def test_default_chunks_stay_under_twice_the_raw_notes_on_disk(tmp_path):
  """Overlapping chunks, not one record per window: disk holds (192 + 64) / 192 copies."""
  num_notes = [700, 900, 1200]
  for seed, count in enumerate(num_notes):
    midi_builders.write_midi(tmp_path / 'in' / f'{seed}.mid',
                             midi_builders.random_melody(seed, count))
  config = preprocess.PreprocessConfig(input=str(tmp_path / 'in'), output=str(tmp_path / 'out'),
                                       compress=False)
  info = preprocess.run(config)
  shard_bytes = sum(os.path.getsize(os.path.join(config.output, f))
                    for split in contract.SPLITS for f in info['splits'][split]['files'])
  # The raw arrays at their narrowest: uint8 pitch and velocity, float32 step, duration and
  # the three metre features.
  raw_bytes = sum(num_notes) * (1 + 4 + 4 + 1 + 3 * 4)
  assert shard_bytes < 2 * raw_bytes
  assert sum(info['splits'][s]['windows'] for s in contract.SPLITS) == sum(
      n - config.window_length for n in num_notes)
