"""Generation from the session's tiny export (conftest.tiny_model): the command and the Beam job.

The command (primes, lengths, audio, bad requests) and the Beam job (manifests, globs, dead
letters, summary) on the DirectRunner.
"""

import dataclasses
import inspect
import json
import os
import pickle
import shutil
import wave

import apache_beam as beam
from apache_beam.testing import test_pipeline
from apache_beam.testing import util as beam_testing
import midi_builders
import numpy as np
import pretty_midi
import pytest
import tensorflow as tf
import trainer_fixtures
import yaml

from beam_pipelines import outputs as beam_outputs
from beam_pipelines import runner
from partita import audio, config_tree, constants, export_contract, failures
from partita import labels as labels_lib
from serving import (
  beam_generate,
  choosing,
  export_client,
  generation_request,
  model_handler,
  pieces,
  validation,
)
from serving import generate as generate_lib
from serving import primes as primes_lib
from serving import requests as requests_lib
from serving import sampling as sampling_lib

WINDOW = trainer_fixtures.WINDOW
LABELS = trainer_fixtures.LABELS


def ladder(num_notes):
  """Notes 0.25 s apart, pitch 40 + i: which window a prime is can be read off its pitches."""
  return [(40 + i, 0.25 * i, 0.25 * i + 0.25, 80) for i in range(num_notes)]


def instruments(path):
  """Instrument name -> its notes in onset order (pretty_midi reads them in note-off order)."""
  return {i.name: sorted(i.notes, key=lambda n: (n.start, n.pitch))
          for i in pretty_midi.PrettyMIDI(str(path)).instruments}


def generate(tiny_model, out, *args):
  return generate_lib.main(['--model', tiny_model.export_dir, '--out', str(out), '--no-audio',
                            *map(str, args)])


def test_prime_from_midi_takes_the_window_starting_at_prime_from(tiny_model, tmp_path):
  prime = midi_builders.write_midi(tmp_path / 'ladder.mid', ladder(20))
  out = tmp_path / 'out'
  assert generate(tiny_model, out, '--prime', prime, '--prime-from', 1.0, '--num-samples', 2,
                  '--num-notes', 12) == 0
  for sample in range(2):
    notes = instruments(out / f'sample_00{sample}.mid')
    assert [n.pitch for n in notes['prime']] == list(range(44, 44 + WINDOW))  # onsets >= 1 s
    assert notes['prime'][0].start == 0.0
    assert len(notes['continuation']) == 12
    assert min(n.start for n in notes['continuation']) >= notes['prime'][-1].start


def test_prime_data_primes_are_windows_of_the_test_split(tiny_model, tmp_path):
  out = tmp_path / 'out'
  assert generate(tiny_model, out, '--prime-data', tiny_model.data_dir, '--num-samples', 3,
                  '--num-notes', 5) == 0
  windows = primes_lib.windows_from_dataset(tiny_model.data_dir, WINDOW, 3)
  with open(os.path.join(tiny_model.data_dir, 'info.json')) as f:
    info = json.load(f)
  test_files = tf.io.gfile.glob(os.path.join(tiny_model.data_dir, info['shard_patterns']['test']))
  spec = {'pitch': tf.io.VarLenFeature(tf.int64)}
  chunk_heads = [tf.sparse.to_dense(tf.io.parse_single_example(r, spec)['pitch']).numpy()[:WINDOW]
                 .tolist() for r in tf.data.TFRecordDataset(test_files, 'GZIP')]
  for sample, window in enumerate(windows):
    assert window['pitch'].tolist() in chunk_heads
    notes = instruments(out / f'sample_00{sample}.mid')
    assert [n.pitch for n in notes['prime']] == window['pitch'].tolist()
  # Spread over the split, not three consecutive chunks.
  assert windows[0]['pitch'].tolist() != windows[-1]['pitch'].tolist()


def test_no_prime_writes_only_the_continuation_of_a_neutral_window(tiny_model, tmp_path):
  out = tmp_path / 'out'
  assert generate(tiny_model, out, '--no-prime', '--num-samples', 2, '--num-notes', 9) == 0
  for sample in range(2):
    notes = instruments(out / f'sample_00{sample}.mid')
    assert list(notes) == ['continuation'] and len(notes['continuation']) == 9
  with open(os.path.join(tiny_model.export_dir, 'assets', 'info.json')) as f:
    info = json.load(f)
  neutral = primes_lib.neutral_window(info, WINDOW)
  assert neutral['pitch'].tolist() == [int(np.argmax(info['splits']['train']['pitch_histogram']))
                                       ] * WINDOW
  np.testing.assert_allclose(neutral['step'], info['timing']['step']['mean'], rtol=1e-6)
  np.testing.assert_allclose(neutral['duration'], info['timing']['duration']['mean'], rtol=1e-6)
  assert neutral['velocity'].tolist() == [0] * WINDOW  # no note, for the heads


def test_seconds_generates_in_rounds_and_cuts_at_the_duration(tiny_model):
  export = export_client.load_export(tiny_model.export_dir)
  primes = {name: values[:2] for name, values in export.bundled_primes.items()}
  # Pretend the corpus moves at one note per 1,000 s: each round is then only the 17 extra
  # notes, so 60 s takes several rounds.
  slow = export_client.Export(export.model, dict(export.info, timing={
      'step': {'mean': 1000.0, 'std': 1.0}, 'duration': export.info['timing']['duration']}),
                             export.bundled_primes)
  pieces = export_client.generate_for_seconds(slow, primes, 60.0, sampling_lib.Sampling(seed=4))
  first_round = export_client.generate(export.model, primes,
                                      sampling_lib.Sampling(num_notes=17, seed=4))
  for sample, piece in enumerate(pieces):
    onsets = np.cumsum(piece['step'], dtype=np.float64)
    assert len(onsets) > 17 and onsets[-1] < 60.0
    assert np.all(onsets + piece['duration'] <= 60.0 + 1e-6)
    np.testing.assert_array_equal(piece['pitch'][:17], first_round['pitch'][sample])


def test_seconds_command_and_same_seed_gives_identical_bytes(tiny_model, tmp_path):
  prime = midi_builders.write_midi(tmp_path / 'ladder.mid', ladder(20))
  args = ['--prime', prime, '--seconds', 6, '--num-samples', 2, '--seed', 11, '--top-p', 0.9]
  assert generate(tiny_model, tmp_path / 'a', *args) == 0
  assert generate(tiny_model, tmp_path / 'b', *args) == 0
  assert generate(tiny_model, tmp_path / 'c', *args[:-4], '--seed', 12, '--top-p', 0.9) == 0
  for sample in range(2):
    name = f'sample_00{sample}.mid'
    assert (tmp_path / 'a' / name).read_bytes() == (tmp_path / 'b' / name).read_bytes()
    notes = instruments(tmp_path / 'a' / name)
    start = notes['prime'][-1].start
    assert max(n.end for n in notes['continuation']) <= start + 6.0 + 1e-3
    assert max(n.start for n in notes['continuation']) < start + 6.0
  assert (tmp_path / 'a' / 'sample_000.mid').read_bytes() != (
      tmp_path / 'c' / 'sample_000.mid').read_bytes()
  # The resolved parameters, saved beside the pieces, read back into what the run was given.
  saved = (tmp_path / 'a' / pieces.GENERATION_FILE).read_text()
  assert config_tree.from_yaml(generate_lib.Generation, saved) == generate_lib.Generation(
      tiny_model.export_dir, generation_request.Request(
          sampling=sampling_lib.Sampling(seed=11, top_p=0.9), seconds=6.0),
      generate_lib.Options(num_samples=2, prime_paths=(prime,), audio=False))


@pytest.mark.parametrize('args,message', [
    (['--temperature', '0'], 'temperature must be > 0'),
    (['--temperature', '-1'], 'temperature must be > 0'),
    (['--temperature', 'nan'], 'temperature must be > 0'),
    (['--top-k', '0'], 'top_k must be in 1..128, got 0'),
    (['--top-k', '129'], 'top_k must be in 1..128, got 129'),
    (['--top-p', '0'], 'top_p must be in (0, 1], got 0.0'),
    (['--top-p', '1.5'], 'top_p must be in (0, 1], got 1.5'),
    (['--num-notes', '0'], 'num_notes must be in 1..10000, got 0'),
    (['--num-notes', '10001'], 'num_notes must be in 1..10000, got 10001'),
    (['--seconds', '0'], 'seconds must be in (0, 3600], got 0.0'),
    (['--seconds', '3601'], 'seconds must be in (0, 3600], got 3601.0'),
    (['--program', '128'], 'program must be a General MIDI program 0..127, got 128'),
    (['--num-samples', '0'], 'num_samples must be >= 1, got 0'),
    (['--prime', '{short}'], 'needs a window of 8 notes (short primes are refused'),
    (['--prime', '{ladder}', '--prime-from', '4'], '4 notes from 4 s, but the model needs'),
    (['--prime', '{ladder}', '--prime-from', '-1'], 'prime_from must be >= 0 seconds, got -1.0'),
    (['--prime-from', '1'], 'prime_from applies to prime MIDI files only'),
    (['--num-notes', '5', '--seconds', '3'], 'give num_notes or seconds, not both'),
    (['--prime', '{ladder}', '{not_midi}'], 'not a usable MIDI piece: not_midi'),
    (['--prime', '{missing}'], 'cannot read'),
    (['--prime-data', '{missing}'], 'has no COMPLETED marker'),
    (['--soundfont', '{missing}'], 'soundfont'),
])
def test_bad_requests_exit_2_with_a_message_and_write_nothing(tiny_model, tmp_path, capsys, args,
                                                              message):
  files = {'short': midi_builders.write_midi(tmp_path / 'short.mid', ladder(WINDOW - 1)),
           'ladder': midi_builders.write_midi(tmp_path / 'ladder.mid', ladder(20)),
           'not_midi': midi_builders.write_file(tmp_path / 'notes.mid', b'not a MIDI file'),
           'missing': str(tmp_path / 'missing')}
  out = tmp_path / 'out'
  command = ['--model', tiny_model.export_dir, '--out', str(out), '--num-samples', '1']
  assert generate_lib.main(command + [a.format(**files) for a in args]) == 2
  assert message in capsys.readouterr().err
  assert not out.exists()


def test_missing_or_incompatible_exports_are_refused(tiny_model, tmp_path, capsys):
  def refused(export, message):
    out = tmp_path / 'out'
    assert generate_lib.main(['--model', str(export), '--out', str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()

  refused(tmp_path / 'nowhere', 'is not a SavedModel export (no saved_model.pb)')
  other_window = tmp_path / 'other_window'
  shutil.copytree(tiny_model.export_dir, other_window)
  info_path = other_window / 'assets' / 'info.json'
  info_path.write_text(json.dumps(dict(json.loads(info_path.read_text()), window_length=16)))
  refused(other_window, 'incompatible: its model takes windows of 8 notes but its info.json '
          'says 16')
  foreign = tmp_path / 'foreign'
  tf.saved_model.save(tf.Module(), str(foreign))
  shutil.copytree(os.path.join(tiny_model.export_dir, 'assets'), foreign / 'assets',
                  dirs_exist_ok=True)
  refused(foreign, 'has no `generate` function: not a partita export')
  # An export of a version whose generate had no label_guidance, assets and all.
  older = tmp_path / 'older'
  module = tf.Module()
  window = [tf.TensorSpec([None, 8], dtype, name) for name, dtype in (
      ('pitch', tf.int32), ('step', tf.float32), ('duration', tf.float32),
      ('velocity', tf.float32))]
  scalars = [tf.TensorSpec([], dtype, name) for name, dtype in (
      ('num_notes', tf.int32), ('temperature', tf.float32), ('top_k', tf.int32),
      ('top_p', tf.float32), ('seed', tf.int64))]
  module.generate = tf.function(lambda *args: args[0], input_signature=window + scalars + [
      tf.TensorSpec([None], tf.int32, 'label')])
  module.predict_next = tf.function(lambda *args: args[0], input_signature=window)
  tf.saved_model.save(module, str(older))
  shutil.copytree(os.path.join(tiny_model.export_dir, 'assets'), older / 'assets',
                  dirs_exist_ok=True)
  refused(older, 'its generate takes no quarter_seconds, bar_position, bar_quarters, '
          'label_guidance, tempo, which this version passes; export it again')
  no_assets = tmp_path / 'no_assets'
  shutil.copytree(tiny_model.export_dir, no_assets)
  shutil.rmtree(no_assets / 'assets')
  refused(no_assets, 'lacks the assets written by trainer.task')



def test_the_exported_functions_take_the_contracts_arguments_by_name(tiny_model):
  export = export_client.load_export(tiny_model.export_dir)
  for function, arguments in export_contract.ARGUMENTS.items():
    # The names a reader's keywords bind to, not only the specs' names.
    assert tuple(inspect.signature(getattr(export.model, function)).parameters) == arguments


def test_an_export_with_a_later_optional_argument_is_served_as_before(tiny_model, tmp_path):
  """An argument added to generate with a default leaves this version's requests as they were.

  Adding it is additive (export_contract): the export loads, and a request gives the same notes.
  """
  real = tf.saved_model.load(tiny_model.export_dir)
  specs = tf.nest.flatten(real.generate.concrete_functions[0].structured_input_signature)

  def generate(pitch, step, duration, velocity, quarter_seconds, bar_position, bar_quarters,
               num_notes, temperature, top_k, top_p, label_guidance, tempo, seed, label,
               swing=0.0):
    del swing  # what a later version would read
    return real.generate(
        pitch=pitch, step=step, duration=duration, velocity=velocity,
        quarter_seconds=quarter_seconds, bar_position=bar_position, bar_quarters=bar_quarters,
        num_notes=num_notes, temperature=temperature, top_k=top_k, top_p=top_p,
        label_guidance=label_guidance, tempo=tempo, seed=seed, label=label)

  later = tf.Module()
  later.real = real
  later.generate = tf.function(generate, input_signature=specs + [
      tf.TensorSpec([], tf.float32, 'swing')])
  later.predict_next = real.predict_next
  tf.saved_model.save(later, str(tmp_path / 'later'))
  shutil.copytree(os.path.join(tiny_model.export_dir, 'assets'), tmp_path / 'later' / 'assets',
                  dirs_exist_ok=True)
  export = export_client.load_export(str(tmp_path / 'later'))
  primes = {name: values[:2] for name, values in export.bundled_primes.items()}
  sampling = sampling_lib.Sampling(num_notes=6, seed=3)
  notes = export_client.generate(export.model, primes, sampling)
  for name, values in export_client.generate(real, primes, sampling).items():
    np.testing.assert_array_equal(notes[name], values, err_msg=name)

def test_audio_is_skipped_with_a_note_without_fluidsynth(tiny_model, tmp_path, capsys, monkeypatch):
  monkeypatch.setenv('PATH', str(tmp_path))  # a PATH on which no fluidsynth program exists
  out = tmp_path / 'out'
  assert generate_lib.main(['--model', tiny_model.export_dir, '--out', str(out),
                            '--num-samples', '1', '--num-notes', '5']) == 0
  assert 'note: WAV audio skipped: the fluidsynth program is not installed' in (
      capsys.readouterr().out)
  assert sorted(os.listdir(out)) == ['generation.yaml', 'index.html', 'sample_000.mid',
                                     'sample_000.png', 'summary.json']
  assert 'No audio: the fluidsynth program is not installed' in (out / 'index.html').read_text()


HAS_FLUIDSYNTH = audio.unavailable_reason(audio.DEFAULT_SOUNDFONT) is None


@pytest.mark.skipif(not HAS_FLUIDSYNTH, reason='needs the fluidsynth program and '
                    f'{audio.DEFAULT_SOUNDFONT} (apt-get install fluidsynth fluid-soundfont-gm)')
def test_wav_is_rendered_with_fluidsynth(tiny_model, tmp_path, capsys, monkeypatch):
  monkeypatch.setenv(audio.SOUNDFONT_ENV, str(tmp_path / 'no.sf2'))
  out = tmp_path / 'silent'
  assert generate_lib.main(['--model', tiny_model.export_dir, '--out', str(out),
                            '--num-samples', '1', '--num-notes', '5']) == 0
  assert f'WAV audio skipped: no soundfont at {tmp_path / "no.sf2"}' in capsys.readouterr().out
  monkeypatch.delenv(audio.SOUNDFONT_ENV)
  out = tmp_path / 'out'
  assert generate_lib.main(['--model', tiny_model.export_dir, '--out', str(out),
                            '--num-samples', '2', '--num-notes', '20']) == 0
  assert 'skipped' not in capsys.readouterr().out
  assert sorted(os.listdir(out)) == ['generation.yaml', 'index.html'] + [
      f'sample_00{i}.{ext}' for i in range(2) for ext in ('mid', 'png', 'wav')] + [
      'summary.json']  # no temporaries
  for i in range(2):
    check_wav(out / f'sample_00{i}.wav', out / f'sample_00{i}.mid')
  page = (out / 'index.html').read_text()
  assert page.count('<audio') == 2 and 'src="sample_001.wav"' in page and 'No audio' not in page
  # The page says each sample's own seed: sample i takes --seed + i.
  assert 'seed 0, program 0' in page and 'seed 1, program 0' in page


def check_wav(wav_path, midi_path):
  midi = pretty_midi.PrettyMIDI(str(midi_path))
  with wave.open(str(wav_path)) as wav:
    assert wav.getframerate() == audio.SAMPLE_RATE and wav.getnchannels() == 2
    assert wav.getnframes() / wav.getframerate() >= midi.get_end_time()


@pytest.mark.skipif(not HAS_FLUIDSYNTH, reason='needs the fluidsynth program and '
                    f'{audio.DEFAULT_SOUNDFONT} (apt-get install fluidsynth fluid-soundfont-gm)')
def test_the_beam_job_renders_wav_and_its_page_plays_it(tiny_model, tmp_path, capsys):
  manifest = write_manifest(tmp_path / 'requests.jsonl', [
      {'name': 'a', 'prime': None, 'num_notes': 12}, {'name': 'b', 'prime': None, 'seconds': 4}])
  out = tmp_path / 'out'
  assert beam_job(tiny_model, out, '--manifest', manifest, render_audio=True) == 0
  assert 'skipped' not in capsys.readouterr().out
  for name in ('a', 'b'):
    check_wav(out / f'{name}.wav', out / f'{name}.mid')
  page = (out / 'index.html').read_text()
  assert 'src="a.wav"' in page and 'src="b.wav"' in page
  bad_font = tmp_path / 'bad'
  assert beam_job(tiny_model, bad_font, '--manifest', manifest, '--soundfont', tmp_path / 'x.sf2',
                  render_audio=True) == 2
  assert 'soundfont' in capsys.readouterr().err and not bad_font.exists()


def test_help_explains_every_option(capsys):
  with pytest.raises(SystemExit) as exit_info:
    generate_lib.main(['--help'])
  assert exit_info.value.code == 0
  text = capsys.readouterr().out
  for flag in ('--prime-data', '--no-prime', '--prime-from', '--seconds', '--soundfont',
               '--no-audio', '--top-p', '--program'):
    assert flag in text


def test_output_names_from_untrusted_paths_are_safe():
  assert validation.name_from_path('../../etc/x.mid') == 'x'
  assert validation.name_from_path('a/b/Fugue #1 (BWV 846).MIDI') == 'Fugue__1__BWV_846_'
  assert validation.name_from_path('C:\\music\\.hidden.mid') == 'hidden'
  for bad in ('..', '../x', '/abs', '.hidden', 'a/b', '', 'x' * 101):
    with pytest.raises(failures.RejectionError, match='not safe|cannot make') as info:
      if bad == '..':
        validation.name_from_path(bad)
      else:
        validation.check_name(bad)
    assert info.value.reason == 'bad_name'


def test_a_refused_parameter_is_a_bad_request_rejection_that_pickles():
  with pytest.raises(failures.RejectionError) as info:
    sampling_lib.Sampling(temperature=0.0).check()
  assert type(info.value) is failures.RejectionError  # the project's one rejection type
  assert (info.value.reason, str(info.value)) == ('bad_request', 'temperature must be > 0, got 0.0')
  copy = pickle.loads(pickle.dumps(info.value))
  assert (type(copy), copy.reason, copy.detail) == (
      failures.RejectionError, 'bad_request', info.value.detail)


def test_sampling_holds_the_export_signatures_parameters_with_the_historical_defaults():
  names = tuple(field.name for field in dataclasses.fields(sampling_lib.Sampling))
  assert names == export_contract.GENERATE_PARAMETERS
  assert sampling_lib.Sampling() == sampling_lib.Sampling(
      num_notes=256, temperature=1.0, top_k=constants.PITCHES, top_p=1.0, label_guidance=1.0,
      tempo=0.0, seed=0)
  sampling_lib.Sampling().check()
  for guidance in (-0.1, export_contract.MAX_LABEL_GUIDANCE + 0.5):
    with pytest.raises(failures.RejectionError, match='label_guidance must be in 0..10, got'):
      sampling_lib.Sampling(label_guidance=guidance).check()
  with pytest.raises(failures.RejectionError, match='seed must be in 0..2'):
    sampling_lib.Sampling(seed=export_contract.MAX_SEED + 1).check()
  for tempo in (9.5, 400.5, float('nan'), -60.0):
    with pytest.raises(failures.RejectionError, match=(
        r"tempo must be 0 \(as the prime\) or in 10..400 quarter notes per minute, got")):
      sampling_lib.Sampling(tempo=tempo).check()
  for tempo in (0.0, 10.0, 400.0):
    sampling_lib.Sampling(tempo=tempo).check()


def request_flags(parser):
  """The parser's flags that set a request's field: option -> (help, type, metavar)."""
  own = ('seconds', 'label', 'program', 'prime_from')
  return {action.option_strings[0]: (action.help, action.type, action.metavar)
          for action in parser._actions  # noqa: SLF001  # argparse lists its flags nowhere else
          if action.dest.startswith('config:') or action.dest in own}


def test_both_commands_take_the_same_request_flags_with_the_same_defaults():
  flags = request_flags(generate_lib.argument_parser())
  assert sorted(flags) == ['--composer', '--label-guidance', '--num-notes', '--prime-from',
                           '--program', '--seconds', '--seed', '--temperature', '--tempo',
                           '--top-k', '--top-p']
  assert request_flags(beam_generate.argument_parser()) == flags
  required = ['--model', 'm', '--out', 'o', '--manifest', 'r.jsonl']
  for parser, argv in ((generate_lib.argument_parser(), required[:4]),
                       (beam_generate.argument_parser(), required)):
    args, _ = parser.parse_known_args(argv)
    assert generation_request.from_flags(args) == generation_request.Request()
    args, _ = parser.parse_known_args(argv + ['--num-notes', '9', '--temperature', '0.5',
                                              '--top-k', '7', '--top-p', '0.8', '--seed', '3',
                                              '--label-guidance', '2.5', '--tempo', '72',
                                              '--program', '40', '--prime-from', '1.5',
                                              '--label', 'bach'])
    assert generation_request.from_flags(args) == generation_request.Request(
        prime_from=1.5, sampling=sampling_lib.Sampling(
            num_notes=9, temperature=0.5, top_k=7, top_p=0.8, label_guidance=2.5, tempo=72.0,
            seed=3), program=40, label='bach')
    args, _ = parser.parse_known_args(argv + ['--seconds', '30', '--composer', 'chopin'])
    assert generation_request.from_flags(args) == generation_request.Request(seconds=30.0,
                                                                             label='chopin')
  args = generate_lib.argument_parser().parse_args(required[:4])
  assert (args.num_samples, args.prime, args.no_audio) == (4, None, False)
  args, _ = beam_generate.argument_parser().parse_known_args(required)
  assert args.batch_size == 64


# The Beam job.

def write_manifest(path, requests):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text('\n'.join(r if isinstance(r, str) else json.dumps(r) for r in requests) + '\n')
  return str(path)


def beam_job(tiny_model, out, *args, render_audio=False):
  return beam_generate.main(['--model', tiny_model.export_dir, '--out', str(out),
                             *([] if render_audio else ['--no-audio']),
                             *map(str, args)])


def listing(folder):
  return sorted(os.path.relpath(os.path.join(d, f), folder)
                for d, _, names in os.walk(folder) for f in names)


# Each transform of the Beam job alone.

# What ReadPrimes needs of an export's info.json: the window, and the neutral start's statistics.
INFO = {'window_length': WINDOW,
        'timing': {'step': {'mean': 0.2, 'std': 0.1}, 'duration': {'mean': 0.4, 'std': 0.3}},
        'splits': {'train': {'pitch_histogram': [0] * 60 + [5] + [0] * 67}},
        'metre': {'gridded_pieces': 1, 'gridded_notes': 40, 'quarter_seconds': 0.75,
                  'bar_quarters': 3.0},
        'labels': labels_lib.vocabulary({'bach': {'train': 2}}, 1, 'composer')}


def ladder_window(first_pitch, length=WINDOW):
  """A prime window: ``length`` notes rising from ``first_pitch``, 0.25 s apart.

  Eighth notes at 120 quarter notes a minute in 4/4.
  """
  return {'pitch': np.arange(first_pitch, first_pitch + length, dtype=np.int8),
          'step': np.full(length, 0.25, np.float32),
          'duration': np.full(length, 0.25, np.float32),
          'velocity': np.full(length, 80, np.int8),
          'quarter_seconds': np.full(length, 0.5, np.float32),
          'bar_position': (np.arange(length) % 8 / 2).astype(np.float32),
          'bar_quarters': np.full(length, 4.0, np.float32)}


def inputs_and_reasons(records):
  return records | 'InputsAndReasons' >> beam.Map(lambda d: (d['input'], d['reason']))


def test_read_requests_turns_manifest_lines_into_checked_requests(tmp_path):
  lines = [{'name': 'one', 'prime': 'p/a.mid', 'num_notes': 6}, '',
           {'prime': '/abs/Fugue 1.MIDI'}, {'name': 'quiet', 'prime': None},
           '{"name": "broken"', {'name': 'cold', 'prime': None, 'temperature': 0},
           {'name': '../x', 'prime': None}]
  manifest = write_manifest(tmp_path / 'm' / 'requests.jsonl', lines)
  sampling = sampling_lib.Sampling(num_notes=9, seed=4)
  defaults = generation_request.Request(name='', sampling=sampling)
  with test_pipeline.TestPipeline(runner.LOCAL_RUNNER) as pipeline:
    read = pipeline | requests_lib.ReadRequests(defaults, manifest=manifest)
    beam_testing.assert_that(read['requests'], beam_testing.equal_to([
        generation_request.Request('one', str(tmp_path / 'm' / 'p' / 'a.mid'),
                             sampling=dataclasses.replace(sampling, num_notes=6)),
        generation_request.Request('Fugue_1', '/abs/Fugue 1.MIDI', sampling=sampling),
        generation_request.Request('quiet', None, sampling=sampling)]), label='Requests')
    beam_testing.assert_that(inputs_and_reasons(read[beam_outputs.TAG]), beam_testing.equal_to([
        ('{"name": "broken"', 'bad_json'), (json.dumps(lines[5]), 'bad_request'),
        (json.dumps(lines[6]), 'bad_name')]), label='DeadLetters')


def test_a_manifest_line_is_flat_and_its_numbers_batch_by_value():
  assert generation_request.FIELDS == (
      'name', 'prime', 'prime_from', 'num_notes', 'temperature', 'top_k', 'top_p',
      'label_guidance', 'tempo', 'seed', 'seconds', 'program', 'label', 'composer',
      'candidates', 'copy_limit')
  defaults = generation_request.Request(sampling=sampling_lib.Sampling(seed=4), program=40)
  request = requests_lib.parse_request(
      json.dumps({'name': 'a', 'prime': None, 'temperature': 1, 'top_k': 5, 'prime_from': 0}),
      defaults, '/manifests')
  assert request == generation_request.Request(
      'a', None, 0.0, sampling_lib.Sampling(temperature=1.0, top_k=5, seed=4), program=40)
  assert isinstance(request.sampling.temperature, float)
  # "temperature": 1 and 1.0 are the same sampling, so the two requests can share a batch.
  same = requests_lib.parse_request('{"name": "b", "top_k": 5, "temperature": 1.0}', defaults, '')
  assert request.batch_key() == same.batch_key()
  # Every row has its own seed, so the seed does not split calls; a length in seconds does.
  other_seed = requests_lib.parse_request('{"name": "b", "top_k": 5, "seed": 9}', defaults, '')
  assert other_seed.batch_key() == request.batch_key()
  timed = requests_lib.parse_request('{"name": "t", "top_k": 5, "seconds": 20}', defaults, '')
  assert (timed.seconds, timed.batch_key()) == (20.0,
                                                '["seconds", 20.0, 1.0, 5, 1.0, 1.0, 0.0, 1]')
  # Guidance is a parameter of the whole call.
  guided = requests_lib.parse_request('{"name": "g", "top_k": 5, "label_guidance": 2}', defaults,
                                      '')
  assert guided.sampling.label_guidance == 2.0 and guided.batch_key() != request.batch_key()
  # So is the tempo.
  faster = requests_lib.parse_request('{"name": "f", "top_k": 5, "tempo": 90}', defaults, '')
  assert faster.sampling.tempo == 90.0 and faster.batch_key() != request.batch_key()
  # And the candidates per piece, each a row of the call; the copy limit is per row.
  chosen = requests_lib.parse_request('{"name": "c", "top_k": 5, "candidates": 4}', defaults, '')
  assert chosen.candidates == 4 and chosen.batch_key() != request.batch_key()
  strict = requests_lib.parse_request('{"name": "l", "top_k": 5, "copy_limit": 40}', defaults, '')
  assert strict.copy_limit == 40 and strict.batch_key() == request.batch_key()
  # A line's num_notes replaces a default length in seconds; a line gives one or the other.
  by_seconds = dataclasses.replace(defaults, seconds=30.0)
  assert requests_lib.parse_request('{"name": "n", "num_notes": 8}', by_seconds, '').seconds is None
  assert requests_lib.parse_request('{"name": "s"}', by_seconds, '').seconds == 30.0
  # A field that may be absent may be null.
  assert requests_lib.parse_request('{"name": "z", "seconds": null}', by_seconds,
                                    '').seconds is None
  for line, message in (
      ('{"name": "x", "num_notes": 8, "seconds": 2}', 'give num_notes or seconds, not both'),
      ('{"name": "x", "seconds": 0}', 'seconds must be in (0, 3600], got 0.0'),
      ('{"name": "x", "seed": "1"}', "seed must be an integer, got '1'"),
      ('{"name": "x", "top_p": true}', 'top_p must be a number, got True'),
      ('{"name": "x", "prime": ""}', "prime must be a non-empty string or null, got ''"),
      ('{"name": "x", "composer": 3}', 'composer must be a non-empty string or null, got 3'),
      ('{"name": "x", "label": "a", "composer": "b"}', 'give label or composer, not both'),
      ('{"name": "x", "prime_from": -1}', 'prime_from must be >= 0 seconds, got -1.0')):
    with pytest.raises(failures.RejectionError) as info:
      requests_lib.parse_request(line, defaults, '')
    assert (info.value.reason, info.value.detail) == ('bad_request', message)
  with pytest.raises(failures.RejectionError, match=r"unknown fields \['temprature'\]") as info:
    requests_lib.parse_request('{"name": "c", "temprature": 1}', defaults, '')
  assert info.value.reason == 'bad_request'


def test_read_requests_names_each_globbed_prime_by_its_path(tmp_path):
  for name in ('a/x.mid', 'b/x.mid', '_/_.mid'):  # '_/_.mid' leaves no usable name
    midi_builders.write_midi(tmp_path / 'primes' / name, ladder(10))
  sampling = sampling_lib.Sampling(num_notes=9)
  defaults = generation_request.Request(name='', sampling=sampling)
  primes = tmp_path / 'primes'
  with test_pipeline.TestPipeline(runner.LOCAL_RUNNER) as pipeline:
    read = pipeline | requests_lib.ReadRequests(defaults, primes_glob=str(primes / '**' / '*.mid'))
    beam_testing.assert_that(read['requests'], beam_testing.equal_to([
        generation_request.Request('a_x', str(primes / 'a' / 'x.mid'), sampling=sampling),
        generation_request.Request('b_x', str(primes / 'b' / 'x.mid'), sampling=sampling)]),
                             label='Requests')
    beam_testing.assert_that(inputs_and_reasons(read[beam_outputs.TAG]), beam_testing.equal_to([
        (str(primes / '_' / '_.mid'), 'bad_name')]), label='DeadLetters')


def test_read_primes_reads_each_window_or_says_why_not(tmp_path):
  ladder_file = midi_builders.write_midi(tmp_path / 'ladder.mid', ladder(20))
  short_file = midi_builders.write_midi(tmp_path / 'short.mid', ladder(WINDOW - 1))
  text_file = midi_builders.write_file(tmp_path / 'text.mid', b'not a MIDI file')
  requests = [generation_request.Request('start', ladder_file),
              generation_request.Request('late', ladder_file, prime_from=1.0),
              generation_request.Request('neutral', None),
              generation_request.Request('gone', str(tmp_path / 'missing.mid')),
              generation_request.Request('text', text_file),
              generation_request.Request('short', short_file),
              generation_request.Request('bach', ladder_file, label='Bach'),
              generation_request.Request('mahler', ladder_file, label='mahler')]
  with test_pipeline.TestPipeline(runner.LOCAL_RUNNER) as pipeline:
    primed = pipeline | beam.Create(requests) | requests_lib.ReadPrimes(INFO)
    beam_testing.assert_that(
        primed['primed'] | beam.MapTuple(lambda request, window: (
            request.name, window['pitch'].tolist(),
            np.round(window['step'].astype(np.float64), 3).tolist(),
            window['quarter_seconds'][0].item(), window['bar_position'].tolist())),
        beam_testing.equal_to([
            ('start', list(range(40, 48)), [0.0] + [0.25] * 7, 0.5, [0, 0.5, 1, 1.5, 2, 2.5, 3,
                                                                     3.5]),
            # From the first onset at 1 s: the third beat of the bar.
            ('late', list(range(44, 52)), [0.25] * 8, 0.5, [2, 2.5, 3, 3.5, 0, 0.5, 1, 1.5]),
            # Downbeats at the training pieces' tempo.
            ('neutral', [60] * 8, [0.2] * 8, 0.75, [0] * 8),
            ('bach', list(range(40, 48)), [0.0] + [0.25] * 7, 0.5, [0, 0.5, 1, 1.5, 2, 2.5, 3,
                                                                    3.5])]), label='Primed')
    beam_testing.assert_that(inputs_and_reasons(primed[beam_outputs.TAG]), beam_testing.equal_to([
        ('gone', 'prime_not_found'), ('text', 'not_midi'), ('short', 'prime_too_short'),
        ('mahler', 'unknown_label')]),
                             label='DeadLetters')


def primed(name, window, **fields):
  """A request named ``name`` with ``fields``, and its prime ``window``."""
  return requests_lib.Primed(generation_request.Request(name, **fields), window)


def test_refuse_duplicate_names_refuses_every_request_of_a_name_used_twice():
  items = [primed('a', 'prime a'),
           primed('b', 'b1', sampling=sampling_lib.Sampling(seed=1)),
           primed('b', 'b2', sampling=sampling_lib.Sampling(seed=2))]
  with test_pipeline.TestPipeline(runner.LOCAL_RUNNER) as pipeline:
    unique = pipeline | beam.Create(items) | beam_generate.RefuseDuplicateNames()
    beam_testing.assert_that(unique['unique'], beam_testing.equal_to([items[0]]), label='Unique')
    beam_testing.assert_that(inputs_and_reasons(unique[beam_outputs.TAG]), beam_testing.equal_to([
        ('b', 'duplicate_name'), ('b', 'duplicate_name')]), label='DeadLetters')


def test_generate_pieces_gives_each_request_the_notes_of_its_own_seed_in_any_batch(tiny_model):
  def sampling(seed, num_notes=4):
    return sampling_lib.Sampling(num_notes=num_notes, seed=seed)

  items = [primed('c', ladder_window(50), sampling=sampling(5)),
           primed('a', ladder_window(40), sampling=sampling(5)),
           primed('b', ladder_window(45), sampling=sampling(9)),
           primed('d', ladder_window(55), sampling=sampling(6, num_notes=3)),
           primed('timed', ladder_window(42), sampling=sampling(2), seconds=1.5),
           # A window the model cannot take fails its batch (its parameters are its own).
           primed('odd', ladder_window(40, WINDOW - 3), sampling=sampling(7, num_notes=5))]
  export = export_client.load_export(tiny_model.export_dir)

  def alone(request, window):
    """What the request gives generated on its own, padded to the job's batch size."""
    batch = {key: values[None] for key, values in window.items()}
    if request.seconds is None:
      notes = export_client.generate(export.model, batch, request.sampling, rows=8)
      return {key: values[0] for key, values in notes.items()}
    return export_client.generate_for_seconds(export, batch, request.seconds, request.sampling,
                                             rows=8)[0]

  expected = [(item.request.name, {key: values.tolist() for key, values in alone(*item).items()})
              for item in items[:5]]
  pipeline = test_pipeline.TestPipeline(runner.LOCAL_RUNNER)
  generated = (pipeline
               | beam.Create(items)
               | beam_generate.GeneratePieces(tiny_model.export_dir, batch_size=8))
  beam_testing.assert_that(
      generated['generated'] | beam.MapTuple(lambda request, prime, choice: (
          request.name, {key: values.tolist() for key, values in choice.continuation.items()})),
      beam_testing.equal_to(expected), label='Generated')
  beam_testing.assert_that(inputs_and_reasons(generated[beam_outputs.TAG]),
                           beam_testing.equal_to([('odd', 'generation_error')]),
                           label='DeadLetters')
  result = pipeline.run()
  result.wait_until_finish()
  # RunInference's own metrics, under the handler's namespace: five requests in four batches
  # (one per parameter set) were generated, and the odd one's batch failed.
  counters = {counter.key.metric.name: counter.committed for counter in result.metrics().query(
      beam.metrics.MetricsFilter().with_namespace(model_handler.METRICS_NAMESPACE))['counters']}
  assert counters['num_inferences'] == 5 and counters['failed_batches_counter'] == 1


def test_the_model_handler_refuses_a_batch_of_mixed_parameters(tiny_model):
  handler = model_handler.PieceModelHandler(tiny_model.export_dir, batch_size=4)
  assert handler.should_skip_batching()  # the job batches by key before RunInference
  export = handler.load_model()
  batch = [primed('a', ladder_window(40), sampling=sampling_lib.Sampling(num_notes=3)),
           primed('b', ladder_window(40), sampling=sampling_lib.Sampling(num_notes=4))]
  with pytest.raises(ValueError, match='a batch must share its parameters'):
    handler.run_inference(batch, export)
  results = list(handler.run_inference(batch[:1], export))
  choice = results[0].inference
  assert results[0].example == batch[0] and choice.continuation['pitch'].shape == (3,)
  assert choice.kept == 0 and len(choice.candidates) == 1


def test_write_pieces_writes_midi_and_png_and_dead_letters_what_cannot_be_written(tmp_path):
  prime = ladder_window(40)
  continuation = dict(ladder_window(60, 5), step=np.full(5, 0.5, np.float32))
  broken = dict(continuation, duration=np.full(5, -1.0, np.float32))  # negative: a bug upstream
  def generated(request, notes):
    return beam_generate.Generated(request, prime, choosing.Choice(
        notes, 0, (choosing.Candidate(0, None, None),)))

  items = [generated(generation_request.Request('primed', 'p.mid', program=40), continuation),
           generated(generation_request.Request('plain'), continuation),
           generated(generation_request.Request('broken', 'p.mid'), broken)]
  out = tmp_path / 'out'
  with test_pipeline.TestPipeline(runner.LOCAL_RUNNER) as pipeline:
    written = pipeline | beam.Create(items) | beam_generate.WritePieces(str(out))
    beam_testing.assert_that(
        written['written'] | beam.Map(lambda entry: (entry.title, entry.clips[0].audio)),
        beam_testing.equal_to([('primed', None), ('plain', None)]), label='Written')
    beam_testing.assert_that(inputs_and_reasons(written[beam_outputs.TAG]),
                             beam_testing.equal_to([('broken', 'write_error')]),
                             label='DeadLetters')
  # Nothing half-written or temporary, nothing for the piece that failed.
  assert listing(out) == ['plain.mid', 'plain.png', 'primed.mid', 'primed.png']
  primed = instruments(out / 'primed.mid')
  assert [n.pitch for n in primed['prime']] == list(range(40, 48))
  assert primed['prime'][0].start == 0.0  # the piece starts at the prime's first note
  assert [n.pitch for n in primed['continuation']] == list(range(60, 65))
  assert pretty_midi.PrettyMIDI(str(out / 'primed.mid')).instruments[0].program == 40
  assert list(instruments(out / 'plain.mid')) == ['continuation']  # a neutral start is not shown
  assert (out / 'plain.png').read_bytes().startswith(b'\x89PNG')


def test_write_summary_accounts_for_every_request(tmp_path):
  records = [failures.dead_letter_record('x', 'bad_json', 'not JSON'),
             failures.dead_letter_record('y', 'prime_not_found', 'gone'),
             failures.dead_letter_record('z', 'bad_json', 'not JSON')]
  files = [str(tmp_path / 'dead_letter' / 'dead_letters-00000-of-00001.jsonl')]
  page = str(tmp_path / 'index.html')
  expected = {'requests_in': 5, 'written': 2, 'dead_letters': 3,
              'dead_letter_reasons': {'bad_json': 2, 'prime_not_found': 1},
              'candidates': {'drawn': 4, 'rejected_as_copies': 1},
              'dead_letter_files': files, 'page': page}
  kept, copied = (choosing.Candidate(1, 0.5, None), choosing.Candidate(2, None, 'copies'))
  generated = [beam_generate.Generated(generation_request.Request(name=name), {},
                                       choosing.Choice({}, 0, candidates))
               for name, candidates in (('a', (kept, copied, kept)), ('b', (kept,)))]
  with test_pipeline.TestPipeline(runner.LOCAL_RUNNER) as pipeline:
    summary = ({'requests_in': pipeline | 'In' >> beam.Create(range(5)),
                'written': pipeline | 'Written' >> beam.Create(['a', 'b']),
                'generated': pipeline | 'Generated' >> beam.Create(generated),
                'dead_letters': pipeline | 'DeadLetters' >> beam.Create(records),
                'dead_letter_files': pipeline | 'Files' >> beam.Create(files),
                'page': pipeline | 'Page' >> beam.Create([page])}
               | beam_generate.WriteSummary(str(tmp_path)))
    beam_testing.assert_that(summary, beam_testing.equal_to([expected]))
  assert json.loads((tmp_path / pieces.SUMMARY_FILE).read_text()) == expected
  assert os.listdir(tmp_path) == [pieces.SUMMARY_FILE]


# The Beam job end to end.

def test_beam_job_serves_a_manifest_and_dead_letters_bad_requests(tiny_model, tmp_path, capsys):
  midi_builders.write_midi(tmp_path / 'primes' / 'ladder.mid', ladder(20))
  midi_builders.write_midi(tmp_path / 'primes' / 'short.mid', ladder(WINDOW - 1))
  midi_builders.write_file(tmp_path / 'primes' / 'text.mid', b'not a MIDI file')
  good = [
      {'name': 'one', 'prime': '../primes/ladder.mid', 'num_notes': 6},
      {'name': 'two', 'prime': '../primes/ladder.mid', 'num_notes': 6, 'seed': 1},
      {'name': 'three', 'prime': str(tmp_path / 'primes' / 'ladder.mid'), 'num_notes': 6,
       'prime_from': 1.0, 'temperature': 0.5, 'top_k': 5, 'top_p': 0.9, 'program': 40},
      {'prime': '../primes/ladder.mid', 'num_notes': 7},  # named after the file: 'ladder'
      {'name': 'nothing', 'prime': None, 'num_notes': 8},
      {'name': 'timed', 'prime': '../primes/ladder.mid', 'seconds': 3.5, 'seed': 1},
  ]
  bad = [
      ('{"name": "broken"', 'bad_json'),
      ('[1, 2]', 'bad_json'),
      ({'name': 'cold', 'prime': '../primes/ladder.mid', 'temperature': 0}, 'bad_request'),
      ({'name': 'k', 'prime': '../primes/ladder.mid', 'top_k': 129}, 'bad_request'),
      ({'name': 'p', 'prime': '../primes/ladder.mid', 'top_p': 0}, 'bad_request'),
      ({'name': 'none', 'prime': '../primes/ladder.mid', 'num_notes': 0}, 'bad_request'),
      ({'name': 'many', 'prime': '../primes/ladder.mid', 'num_notes': 10_001}, 'bad_request'),
      ({'name': 'typo', 'prime': '../primes/ladder.mid', 'temprature': 1}, 'bad_request'),
      ({'name': 'str', 'prime': '../primes/ladder.mid', 'seed': '1'}, 'bad_request'),
      ({'name': '../../etc/x', 'prime': '../primes/ladder.mid'}, 'bad_name'),
      ({'prime': None}, 'bad_name'),
      ({'name': 'gone', 'prime': '../primes/missing.mid'}, 'prime_not_found'),
      ({'name': 'text', 'prime': '../primes/text.mid'}, 'not_midi'),
      ({'name': 'short', 'prime': '../primes/short.mid'}, 'prime_too_short'),
      ({'name': 'late', 'prime': '../primes/ladder.mid', 'prime_from': 4.5}, 'prime_too_short'),
      ({'name': 'twice', 'prime': '../primes/ladder.mid'}, 'duplicate_name'),
      ({'name': 'twice', 'prime': '../primes/ladder.mid', 'seed': 3}, 'duplicate_name'),
  ]
  manifest = write_manifest(tmp_path / 'manifests' / 'requests.jsonl',
                            good[:3] + [''] + [r for r, _ in bad] + good[3:])
  out = tmp_path / 'out'
  assert beam_job(tiny_model, out, '--manifest', manifest, '--batch-size', 2) == 0
  reasons = {}
  for _, reason in bad:
    reasons[reason] = reasons.get(reason, 0) + 1
  summary = json.loads((out / 'summary.json').read_text())
  assert summary['requests_in'] == len(good) + len(bad) == summary['written'] + summary[
      'dead_letters']
  assert summary['written'] == len(good)
  assert summary['dead_letter_reasons'] == dict(sorted(reasons.items()))
  assert f'requests in: {len(good) + len(bad)} = written {len(good)} + dead letters' in (
      capsys.readouterr().out)
  names = ['ladder', 'nothing', 'one', 'three', 'timed', 'two']
  assert listing(out) == sorted(
      [f'{n}.{ext}' for n in names for ext in ('mid', 'png')]
      + ['generation.yaml', 'index.html', 'summary.json',
         'dead_letter/dead_letters-00000-of-00001.jsonl'])
  page = (out / 'index.html').read_text()
  assert page.count('<section class="piece">') == len(names)
  assert all(f'href="{name}.mid"' in page and f'src="{name}.png"' in page for name in names)
  assert '30 s' not in page and '3.5 s, temperature 1' in page and '<audio' not in page
  assert 'No audio: not asked for (--no-audio).' in page
  assert not (tmp_path / 'etc').exists()
  resolved = yaml.safe_load((out / 'generation.yaml').read_text())
  assert (resolved['manifest'], resolved['batch_size']) == (str(manifest), 2)
  assert resolved['defaults']['sampling'] == config_tree.to_dict(sampling_lib.Sampling())
  dead = [json.loads(line) for line in
          (out / 'dead_letter' / 'dead_letters-00000-of-00001.jsonl').read_text().splitlines()]
  assert sorted(d['reason'] for d in dead) == sorted(reason for _, reason in bad)
  assert all(set(d) == {'input', 'reason', 'detail'} and d['detail'] for d in dead)
  # A line that gave no usable name is its own input; any other request is named by its name.
  assert {d['input'] for d in dead if d['reason'] == 'bad_json'} == {'{"name": "broken"', '[1, 2]'}
  assert {d['input'] for d in dead if d['reason'] == 'duplicate_name'} == {'twice'}

  expected_notes = {'one': 6, 'two': 6, 'three': 6, 'ladder': 7, 'nothing': 8}
  for name, count in expected_notes.items():
    notes = instruments(out / f'{name}.mid')
    assert len(notes['continuation']) == count
    assert ('prime' in notes) == (name != 'nothing')
  # 'timed' lasts 3.5 s after its prime: its last note ends there, as serving.generate cuts it.
  timed = instruments(out / 'timed.mid')
  prime_end = max(n.end for n in timed['prime'])
  assert max(n.end for n in timed['continuation']) <= prime_end + 3.5 + 0.01
  assert [n.pitch for n in instruments(out / 'three.mid')['prime']] == list(range(44, 52))
  assert pretty_midi.PrettyMIDI(str(out / 'three.mid')).instruments[0].program == 40

  # The same manifest again, split differently into bundles: byte-identical pieces.
  again = tmp_path / 'again'
  assert beam_job(tiny_model, again, '--manifest', manifest, '--batch-size', 2,
                  '--direct_num_workers=2', '--direct_running_mode=multi_threading') == 0
  for name in names:
    assert (again / f'{name}.mid').read_bytes() == (out / f'{name}.mid').read_bytes()


def test_beam_job_over_a_glob_names_pieces_by_their_path(tiny_model, tmp_path):
  midi_builders.write_midi(tmp_path / 'primes' / 'a' / 'x.mid', ladder(12))
  midi_builders.write_midi(tmp_path / 'primes' / 'b' / 'x.mid', ladder(14))
  midi_builders.write_midi(tmp_path / 'primes' / 'b' / 'tiny.mid', ladder(3))
  out = tmp_path / 'out'
  assert beam_job(tiny_model, out, '--primes', tmp_path / 'primes' / '**' / '*.mid',
                  '--num-notes', 4, '--seed', 2) == 0
  summary = json.loads((out / 'summary.json').read_text())
  assert (summary['requests_in'], summary['written']) == (3, 2)
  assert summary['dead_letter_reasons'] == {'prime_too_short': 1}
  assert {'a_x.mid', 'b_x.mid'} <= set(os.listdir(out))
  assert len(instruments(out / 'b_x.mid')['continuation']) == 4


@pytest.mark.parametrize('args,message', [
    (['--manifest', '{missing}'], 'does not exist'),
    (['--primes', '{missing}/*.mid'], 'no file matches'),
    (['--manifest', '{manifest}', '--temperature', '0'], 'temperature must be > 0, got 0.0'),
    (['--manifest', '{manifest}', '--batch-size', '0'], 'batch_size must be >= 1, got 0'),
    (['--manifest', '{manifest}', '--model', '{missing}'], 'not a SavedModel export'),
])
def test_beam_job_refuses_bad_arguments_before_running(tiny_model, tmp_path, capsys, args,
                                                       message):
  paths = {'missing': str(tmp_path / 'missing'),
           'manifest': write_manifest(tmp_path / 'm.jsonl', [{'name': 'a', 'prime': None}])}
  out = tmp_path / 'out'
  assert beam_job(tiny_model, out, *[a.format(**paths) for a in args]) == 2
  assert message in capsys.readouterr().err
  assert not out.exists()


def test_beam_job_run_refuses_bad_defaults_before_reading_anything(tmp_path):
  defaults = generation_request.Request(sampling=sampling_lib.Sampling(temperature=0.0))
  with pytest.raises(failures.RejectionError) as info:
    beam_generate.run(str(tmp_path / 'export'), str(tmp_path / 'out'), defaults,
                      manifest=str(tmp_path / 'missing.jsonl'))
  assert (info.value.reason, info.value.detail) == (
      'bad_request', 'bad default: temperature must be > 0, got 0.0')
  assert not (tmp_path / 'out').exists()


# Labels.

def test_list_labels_names_every_label_with_its_training_pieces(tiny_model, capsys):
  assert generate_lib.main(['--model', tiny_model.export_dir, '--list-labels']) == 0
  lines = capsys.readouterr().out.splitlines()
  with open(os.path.join(tiny_model.export_dir, 'assets', 'info.json')) as f:
    labels = json.load(f)['labels']
  assert labels['vocabulary'] == ['unknown', 'other', *LABELS]
  assert lines[0].startswith('composer labels of this model (--composer NAME')
  for label_id, name in enumerate(labels['vocabulary']):
    pieces = labels['pieces'].get(name, {}).get('train', 0)
    assert lines[1 + label_id].split() == [str(label_id), name, str(pieces), 'training', 'pieces']


def test_composer_conditions_the_pieces_and_an_unknown_one_is_refused(tiny_model, tmp_path, capsys):
  outs = {}
  for composer in LABELS:
    outs[composer] = tmp_path / composer
    assert generate(tiny_model, outs[composer], '--composer', composer.title(), '--num-samples', 2,
                    '--num-notes', 16, '--seed', 4) == 0
    page = (outs[composer] / 'index.html').read_text()
    assert page.count(f'<dt>label</dt><dd>{composer.title()}</dd>') == 2  # one per sample
    resolved = yaml.safe_load((outs[composer] / 'generation.yaml').read_text())
    assert resolved['request']['label'] == composer.title()
  # Same primes and seeds: only the label differs, and so do the notes.
  bach, chopin = (instruments(outs[name] / 'sample_000.mid')['continuation'] for name in LABELS)
  assert [n.end - n.start for n in bach] != [n.end - n.start for n in chopin]
  unconditional = tmp_path / 'none'
  assert generate(tiny_model, unconditional, '--num-samples', 1, '--num-notes', 4) == 0
  assert '<dt>label</dt><dd>none (unconditional)</dd>' in (
      unconditional / 'index.html').read_text()
  capsys.readouterr()
  assert generate(tiny_model, tmp_path / 'mahler', '--composer', 'mahler') == 2
  assert capsys.readouterr().err.strip() == (
      "error: no composer 'mahler'; known: unknown, other, bach, chopin")
  assert not (tmp_path / 'mahler').exists()


def test_beam_job_takes_a_composer_per_request_and_dead_letters_unknown_ones(tiny_model, tmp_path):
  midi_builders.write_midi(tmp_path / 'primes' / 'ladder.mid', ladder(20))
  requests = [
      {'name': 'as_bach', 'prime': '../primes/ladder.mid', 'num_notes': 6, 'composer': 'bach'},
      {'name': 'as_chopin', 'prime': '../primes/ladder.mid', 'num_notes': 6, 'label': 'chopin'},
      {'name': 'default', 'prime': '../primes/ladder.mid', 'num_notes': 6},
      {'name': 'nobody', 'prime': '../primes/ladder.mid', 'composer': None, 'num_notes': 6},
      {'name': 'mahler', 'prime': '../primes/ladder.mid', 'composer': 'mahler'},
      {'name': 'both', 'prime': '../primes/ladder.mid', 'composer': 'bach', 'label': 'bach'},
      {'name': 'number', 'prime': '../primes/ladder.mid', 'composer': 3},
  ]
  manifest = write_manifest(tmp_path / 'manifests' / 'requests.jsonl', requests)
  out = tmp_path / 'out'
  # --composer is every request's default; a line's own composer (even null) replaces it.
  assert beam_job(tiny_model, out, '--manifest', manifest, '--composer', 'chopin') == 0
  summary = json.loads((out / 'summary.json').read_text())
  assert (summary['written'], summary['dead_letter_reasons']) == (
      4, {'bad_request': 2, 'unknown_label': 1})
  dead = {d['input']: d for d in (json.loads(line) for line in (
      out / 'dead_letter' / 'dead_letters-00000-of-00001.jsonl').read_text().splitlines())}
  assert dead['mahler']['detail'] == "no composer 'mahler'; known: unknown, other, bach, chopin"
  page = (out / 'index.html').read_text()
  for name, label in (('as_bach', 'bach'), ('as_chopin', 'chopin'), ('default', 'chopin'),
                      ('nobody', 'none (unconditional)')):
    section = page[page.index(f'<h3>{name}</h3>'):]
    assert f'<dt>label</dt><dd>{label}</dd>' in section[:section.index('</section>')], name
  # The same prime and seed: the default's notes are as_chopin's, not as_bach's.
  assert (out / 'default.mid').read_bytes() == (out / 'as_chopin.mid').read_bytes()
  assert (out / 'as_bach.mid').read_bytes() != (out / 'as_chopin.mid').read_bytes()
  assert beam_job(tiny_model, tmp_path / 'refused', '--manifest', manifest,
                  '--composer', 'mahler') == 2
  assert not (tmp_path / 'refused').exists()
