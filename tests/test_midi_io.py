"""Tests for partita.midi_io and partita.atomic.

MIDI round trips, input checks, atomic writes, piano rolls.
"""

from __future__ import annotations

import gc
import math
import os

import matplotlib.figure
import matplotlib.image
import numpy as np
import pretty_midi
import pytest

from partita import atomic, constants, midi_io

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
TIME_TOLERANCE_S = 1e-3


def make_notes(pitch: list[float], step: list[float], duration: list[float],
               velocity: list[float] | None = None) -> dict[str, np.ndarray]:
  """A notes dict with the project's dtypes (velocity 100 unless given)."""
  return {
      'pitch': np.array(pitch, dtype=np.int64),
      'step': np.array(step, dtype=np.float32),
      'duration': np.array(duration, dtype=np.float32),
      'velocity': np.array([100] * len(pitch) if velocity is None else velocity, dtype=np.int64),
  }


# Onsets 0, 0.5, 1.0; ends 0.5, 1.0, 2.0.
PRIME = make_notes([60, 64, 67], [0.0, 0.5, 0.5], [0.5, 0.5, 1.0], [80, 90, 100])
# Continues the prime's onset clock from its last onset (1.0): onsets 1.75, 2.0, 2.5;
# ends 2.0, 2.5, 3.5.
CONTINUATION = make_notes([72, 71, 69], [0.75, 0.25, 0.5], [0.25, 0.5, 1.0], [70, 60, 50])


def read_instruments(path: os.PathLike[str]) -> dict[str, pretty_midi.Instrument]:
  """The instruments of the MIDI file at ``path``, by name (names must be unique)."""
  instruments = pretty_midi.PrettyMIDI(os.fspath(path)).instruments
  by_name = {instrument.name: instrument for instrument in instruments}
  assert len(by_name) == len(instruments)
  return by_name


def notes_from_pretty_midi(midi: pretty_midi.PrettyMIDI,
                           instrument_name: str | None = None) -> dict[str, np.ndarray]:
  """Reads a notes dict back from the instruments named ``instrument_name``, or all non-drum ones.

  What a reader of the files written by partita.midi_io gets.

  Notes are sorted by onset, then pitch; ``step[0]`` is the first onset (time from the start of
  the file). Times are float64 as read. An instrument without notes does not survive a MIDI
  round trip (pretty_midi creates instruments at their first note), so a name that matches
  nothing gives an empty notes dict rather than an error.
  """
  if instrument_name is None:
    instruments = [instrument for instrument in midi.instruments if not instrument.is_drum]
  else:
    instruments = [instrument for instrument in midi.instruments
                   if instrument.name == instrument_name]
  notes = [note for instrument in instruments for note in instrument.notes]
  start = np.array([note.start for note in notes], dtype=np.float64)
  end = np.array([note.end for note in notes], dtype=np.float64)
  pitch = np.array([note.pitch for note in notes], dtype=np.int64)
  velocity = np.array([note.velocity for note in notes], dtype=np.int64)
  order = np.lexsort((pitch, start))
  return {
      'pitch': pitch[order],
      'step': np.diff(start[order], prepend=0.0),
      'duration': (end - start)[order],
      'velocity': velocity[order],
  }


def note_ticks(instrument: pretty_midi.Instrument) -> list[tuple[int, int, int, int]]:
  """Sorted (pitch, start tick, end tick, velocity) of an instrument's notes."""
  return sorted((note.pitch, round(note.start * midi_io.TICKS_PER_SECOND),
                 round(note.end * midi_io.TICKS_PER_SECOND), note.velocity)
                for note in instrument.notes)


def test_onsets_are_start_plus_cumulative_steps():
  np.testing.assert_allclose(midi_io.onsets_after(PRIME), [0.0, 0.5, 1.0])
  np.testing.assert_allclose(midi_io.onsets_after(CONTINUATION, start=1.0), [1.75, 2.0, 2.5])


def test_write_midi_round_trips_prime_and_continuation(tmp_path):
  path = tmp_path / 'piece.mid'
  midi_io.write_midi(path, PRIME, CONTINUATION, program=40)

  assert os.listdir(tmp_path) == ['piece.mid']  # No temporary file left behind.
  instruments = read_instruments(path)
  assert set(instruments) == {'prime', 'continuation'}
  expected = {
      'prime': ([60, 64, 67], [0.0, 0.5, 1.0], [0.5, 1.0, 2.0], [80, 90, 100]),
      'continuation': ([72, 71, 69], [1.75, 2.0, 2.5], [2.0, 2.5, 3.5], [70, 60, 50]),
  }
  for name, (pitch, start, end, velocity) in expected.items():
    instrument = instruments[name]
    notes = sorted(instrument.notes, key=lambda note: note.start)
    assert instrument.program == 40
    assert not instrument.is_drum
    assert [note.pitch for note in notes] == pitch
    np.testing.assert_allclose([note.start for note in notes], start, atol=TIME_TOLERANCE_S)
    np.testing.assert_allclose([note.end for note in notes], end, atol=TIME_TOLERANCE_S)
    assert [note.velocity for note in notes] == velocity


def test_without_prime_the_continuation_starts_at_its_first_step(tmp_path):
  path = tmp_path / 'piece.mid'
  midi_io.write_midi(path, None, CONTINUATION)

  instruments = read_instruments(path)
  assert list(instruments) == ['continuation']
  notes = sorted(instruments['continuation'].notes, key=lambda note: note.start)
  np.testing.assert_allclose([note.start for note in notes], [0.75, 1.0, 1.5],
                             atol=TIME_TOLERANCE_S)
  assert instruments['continuation'].program == 0


def test_200_random_notes_with_overlaps_chords_and_tiny_durations_all_round_trip(tmp_path):
  rng = np.random.default_rng(1234)
  num_notes = 200
  continuation = make_notes(
      pitch=rng.integers(60, 66, num_notes),  # Few pitches, so the same pitch often overlaps.
      step=rng.choice([0.0, 0.0004, 0.01, 0.125, 0.5], num_notes),  # 0: chords; 0.0004: sub-tick.
      duration=rng.choice([0.0, 1e-5, 0.003, 0.1, 2.0], num_notes),  # Zero, tiny and long.
      velocity=rng.integers(1, 128, num_notes))
  start = np.round(midi_io.onsets_after(continuation) * midi_io.TICKS_PER_SECOND).astype(int)
  end = np.round((midi_io.onsets_after(continuation) + continuation['duration'])
                 * midi_io.TICKS_PER_SECOND).astype(int)
  # The data must hold the cases this test is about, or it proves nothing.
  same_pitch_same_tick = len(set(zip(continuation['pitch'], start, strict=True))) < num_notes
  same_pitch_overlap = any(
      continuation['pitch'][i] == continuation['pitch'][j] and start[i] < start[j] < end[i]
      for i in range(num_notes) for j in range(num_notes))
  assert same_pitch_same_tick and same_pitch_overlap
  assert np.any(end - start < 1)

  path = tmp_path / 'piece.mid'
  midi_io.write_midi(path, None, continuation)

  read_back = read_instruments(path)['continuation']
  assert len(read_back.notes) == num_notes
  # Every note comes back at its onset, pitch and velocity ...
  assert sorted((p, s, v) for p, s, _, v in note_ticks(read_back)) == sorted(
      zip(continuation['pitch'].tolist(), start.tolist(), continuation['velocity'].tolist(),
          strict=True))
  # ... and the file reads back exactly as built: no end was changed by the reader.
  built = midi_io.to_pretty_midi(None, continuation).instruments[0]
  assert note_ticks(read_back) == note_ticks(built)
  assert all(e > s for _, s, e, _ in note_ticks(read_back))


def test_a_note_overlapped_by_its_pitch_ends_where_the_pitch_is_struck_again(tmp_path):
  # Left to pretty_midi, the first note would read back ending at 0.75 with the second one.
  continuation = make_notes([60, 60], [0.0, 0.5], [1.0, 0.25])
  path = tmp_path / 'piece.mid'
  midi_io.write_midi(path, None, continuation)

  notes = sorted(read_instruments(path)['continuation'].notes, key=lambda note: note.start)
  np.testing.assert_allclose([(note.start, note.end) for note in notes],
                             [(0.0, 0.5), (0.5, 0.75)], atol=TIME_TOLERANCE_S)


def test_notes_of_one_pitch_starting_together_both_survive_with_the_shorter_end(tmp_path):
  continuation = make_notes([60, 60, 60], [0.0, 0.0, 1.0], [0.5, 1.0, 0.5], [80, 90, 100])
  path = tmp_path / 'piece.mid'
  midi_io.write_midi(path, None, continuation)

  notes = sorted(read_instruments(path)['continuation'].notes,
                 key=lambda note: (note.start, note.velocity))
  np.testing.assert_allclose([(note.start, note.end) for note in notes],
                             [(0.0, 0.5), (0.0, 0.5), (1.0, 1.5)], atol=TIME_TOLERANCE_S)
  assert [note.velocity for note in notes] == [80, 90, 100]


def test_out_of_range_pitch_velocity_and_duration_are_clamped(tmp_path):
  continuation = make_notes([-5, 200], [0.0, 1.0], [0.0, 1e-6], [0, 300])
  path = tmp_path / 'piece.mid'
  midi_io.write_midi(path, None, continuation)

  notes = sorted(read_instruments(path)['continuation'].notes, key=lambda note: note.start)
  assert [note.pitch for note in notes] == [0, 127]
  assert [note.velocity for note in notes] == [1, 127]
  minimum = midi_io.MIN_DURATION_TICKS / midi_io.TICKS_PER_SECOND
  assert minimum >= midi_io.MIN_DURATION_S
  np.testing.assert_allclose([note.end - note.start for note in notes], [minimum, minimum],
                             atol=1e-9)


@pytest.mark.parametrize('writer', [midi_io.write_midi, midi_io.write_piano_roll])
@pytest.mark.parametrize('part', ['prime', 'continuation'])
@pytest.mark.parametrize('key, index, value', [
    ('step', 1, -0.1),
    ('step', 2, math.inf),
    ('duration', 0, math.nan),
    ('duration', 1, -1.0),
])
def test_negative_or_non_finite_times_raise_and_write_nothing(tmp_path, writer, part, key, index,
                                                              value):
  notes = {'prime': {name: values.copy() for name, values in PRIME.items()},
           'continuation': {name: values.copy() for name, values in CONTINUATION.items()}}
  notes[part][key][index] = value

  with pytest.raises(ValueError, match=f'{part} {key} has (negative|non-finite) values'):
    writer(tmp_path / 'out', notes['prime'], notes['continuation'])
  assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('continuation, message', [
    ({'pitch': np.array([60]), 'step': np.array([0.0]), 'duration': np.array([1.0])},
     'lack'),
    (make_notes([60, 62], [0.0], [1.0, 1.0]), '1-D arrays of one length'),
    ({key: values.reshape(1, -1) for key, values in CONTINUATION.items()},
     '1-D arrays of one length'),
    (make_notes([60], [20_000.0], [1.0]), 'later than MIDI readers accept'),
])
def test_malformed_or_unreadably_long_notes_raise(tmp_path, continuation, message):
  with pytest.raises(ValueError, match=message):
    midi_io.write_midi(tmp_path / 'out.mid', None, continuation)
  assert os.listdir(tmp_path) == []


def test_program_outside_general_midi_raises():
  with pytest.raises(ValueError, match='program'):
    midi_io.to_pretty_midi(None, CONTINUATION, program=128)


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch):
  path = tmp_path / 'piece.mid'
  midi_io.write_midi(path, PRIME, CONTINUATION)
  previous_content = path.read_bytes()

  def write_half_then_fail(self, file):
    file.write(b'MThd half a file')
    raise OSError('disk full')

  monkeypatch.setattr(pretty_midi.PrettyMIDI, 'write', write_half_then_fail)
  with pytest.raises(OSError, match='disk full'):
    midi_io.write_midi(path, None, CONTINUATION)
  assert os.listdir(tmp_path) == ['piece.mid']
  assert path.read_bytes() == previous_content


def test_write_into_a_missing_folder_raises_and_creates_nothing(tmp_path):
  with pytest.raises(FileNotFoundError):
    midi_io.write_midi(tmp_path / 'missing' / 'piece.mid', PRIME, CONTINUATION)
  assert os.listdir(tmp_path) == []


def test_atomic_replacing_writes_through_a_hidden_unique_temporary_beside_the_target(tmp_path):
  path = tmp_path / 'out.wav'
  with atomic.replacing(path) as first, atomic.replacing(path) as second:
    assert first != second
    for temporary in (first, second):
      assert os.path.dirname(temporary) == str(tmp_path)
      assert os.path.basename(temporary).startswith('.out.wav.') and temporary.endswith('.tmp')
      assert not path.exists()  # nothing at the target until the block completes
    with open(first, 'wb') as f:
      f.write(b'first')
    with open(second, 'wb') as f:
      f.write(b'second')
  assert path.read_bytes() == b'first'  # the writer that finishes last wins
  assert os.listdir(tmp_path) == ['out.wav']


def test_atomic_replacing_an_interrupted_block_keeps_the_old_file_and_no_temporary(tmp_path):
  path = tmp_path / 'out.wav'
  atomic.write_bytes(path, b'old')
  with pytest.raises(KeyboardInterrupt):
    with atomic.replacing(path) as temporary:
      with open(temporary, 'wb') as f:
        f.write(b'half of the new')
      raise KeyboardInterrupt
  assert path.read_bytes() == b'old'
  assert os.listdir(tmp_path) == ['out.wav']


def test_atomic_replacing_a_block_that_writes_nothing_fails_and_keeps_the_old_file(tmp_path):
  path = tmp_path / 'out.wav'
  atomic.write_bytes(path, b'old')
  with pytest.raises(FileNotFoundError):
    with atomic.replacing(path):
      pass  # e.g. a renderer that exited without writing its output
  assert path.read_bytes() == b'old'
  assert os.listdir(tmp_path) == ['out.wav']


def test_piano_roll_is_a_readable_png_of_the_chosen_size(tmp_path):
  path = tmp_path / 'roll.png'
  midi_io.write_piano_roll(path, PRIME, CONTINUATION, title='a title')

  assert path.read_bytes()[:len(PNG_SIGNATURE)] == PNG_SIGNATURE
  assert os.listdir(tmp_path) == ['roll.png']
  # 12 x 5 inches at 100 dpi, RGBA.
  assert matplotlib.image.imread(path).shape == (500, 1200, 4)


@pytest.mark.parametrize('prime, continuation', [
    (None, CONTINUATION),
    (PRIME, make_notes([], [], [])),
    (None, make_notes([], [], [])),
])
def test_piano_roll_without_prime_or_continuation_notes(tmp_path, prime, continuation):
  path = tmp_path / 'roll.png'
  midi_io.write_piano_roll(path, prime, continuation)
  assert path.read_bytes()[:len(PNG_SIGNATURE)] == PNG_SIGNATURE


def test_piano_roll_legend_names_what_the_continuation_is():
  midi = midi_io.to_pretty_midi(PRIME, CONTINUATION)
  for label in ('generated', 'real continuation'):
    figure = midi_io._piano_roll_figure(midi, '', label)  # noqa: SLF001 (what the PNG draws)
    assert [text.get_text() for text in figure.axes[0].get_legend().get_texts()] == [
        'prime', label]


def test_piano_roll_figures_are_freed(tmp_path):
  def live_figures() -> int:
    gc.collect()
    return sum(isinstance(obj, matplotlib.figure.Figure) for obj in gc.get_objects())

  figures_before = live_figures()
  for index in range(5):
    midi_io.write_piano_roll(tmp_path / f'roll{index}.png', PRIME, CONTINUATION)
  assert live_figures() == figures_before


def test_notes_from_pretty_midi_reads_back_what_was_written(tmp_path):
  path = tmp_path / 'piece.mid'
  midi_io.write_midi(path, PRIME, CONTINUATION)
  midi = pretty_midi.PrettyMIDI(os.fspath(path))

  continuation = notes_from_pretty_midi(midi, 'continuation')
  assert continuation['pitch'].tolist() == [72, 71, 69]
  np.testing.assert_allclose(continuation['step'], [1.75, 0.25, 0.5], atol=TIME_TOLERANCE_S)
  np.testing.assert_allclose(continuation['duration'], [0.25, 0.5, 1.0], atol=TIME_TOLERANCE_S)
  assert continuation['velocity'].tolist() == [70, 60, 50]

  everything = notes_from_pretty_midi(midi)
  assert everything['pitch'].tolist() == [60, 64, 67, 72, 71, 69]
  np.testing.assert_allclose(everything['step'], [0.0, 0.5, 0.5, 0.75, 0.25, 0.5],
                             atol=TIME_TOLERANCE_S)


def test_notes_from_pretty_midi_sorts_chords_by_pitch_and_skips_drums():
  midi = midi_io.to_pretty_midi(None, make_notes([67, 60, 64], [0.5, 0.0, 0.0], [1.0, 1.0, 1.0]))
  drums = pretty_midi.Instrument(program=0, is_drum=True, name='drums')
  drums.notes.append(pretty_midi.Note(velocity=100, pitch=36, start=0.0, end=0.1))
  midi.instruments.append(drums)

  notes = notes_from_pretty_midi(midi)
  assert notes['pitch'].tolist() == [60, 64, 67]
  np.testing.assert_allclose(notes['step'], [0.5, 0.0, 0.0])
  assert notes_from_pretty_midi(midi, 'drums')['pitch'].tolist() == [36]


def test_an_empty_continuation_reads_back_as_no_notes(tmp_path):
  # pretty_midi creates an instrument at its first note, so an empty one is not in the file.
  path = tmp_path / 'piece.mid'
  midi_io.write_midi(path, PRIME, make_notes([], [], []))

  midi = pretty_midi.PrettyMIDI(os.fspath(path))
  assert [instrument.name for instrument in midi.instruments] == ['prime']
  notes = notes_from_pretty_midi(midi, 'continuation')
  assert all(len(values) == 0 for values in notes.values())
  assert set(notes) == set(constants.SOUND_FEATURES)
