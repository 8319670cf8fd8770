"""Builds small MIDI files in code for tests (no .mid files are checked in).

Files are written by pretty_midi at 120 bpm with 480 ticks per quarter note, so one tick is
1/960 s and every time that is a multiple of 1/960 s (e.g. any whole millisecond that is a
multiple of 1/8 s, or 0.25 s, 0.125 s...) round-trips exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import io
import os
import struct

import numpy as np
import pretty_midi

RESOLUTION = 480
TEMPO_BPM = 120.0
SECONDS_PER_TICK = 60.0 / TEMPO_BPM / RESOLUTION  # 1/960 s

# (pitch, start seconds, end seconds, velocity)
Note = tuple[int, float, float, int]
# (time seconds, controller value)
Pedal = tuple[float, int]


@dataclasses.dataclass(frozen=True)
class Track:
  """One instrument: its notes, sustain pedal (CC64) events, drum flag, program and name."""
  notes: Sequence[Note] = ()
  sustain: Sequence[Pedal] = ()
  drum: bool = False
  program: int = 0
  name: str = ''


def midi_bytes(notes: Sequence[Note] = (), *, tracks: Sequence[Track] | None = None,
               sustain: Sequence[Pedal] = (), drum: bool = False, program: int = 0,
               name: str = '', tempo_bpm: float = TEMPO_BPM) -> bytes:
  """A standard MIDI file as bytes.

  Either one track given by ``notes``/``sustain``/``drum``/``program``/``name``, or several
  given as ``tracks`` (then the other arguments must be left out). ``tempo_bpm`` changes the
  tempo the file is stored at, not the times in seconds (at 100 bpm a tick is 1/800 s).
  """
  if tracks is None:
    tracks = [Track(tuple(notes), tuple(sustain), drum, program, name)]
  elif notes or sustain or drum or program or name:
    raise ValueError('pass either tracks or a single track\'s arguments, not both')
  pm = pretty_midi.PrettyMIDI(resolution=RESOLUTION, initial_tempo=tempo_bpm)
  for track in tracks:
    instrument = pretty_midi.Instrument(program=track.program, is_drum=track.drum,
                                        name=track.name)
    for pitch, start, end, velocity in track.notes:
      instrument.notes.append(pretty_midi.Note(velocity=int(velocity), pitch=int(pitch),
                                               start=float(start), end=float(end)))
    for time, value in track.sustain:
      instrument.control_changes.append(
          pretty_midi.ControlChange(number=64, value=int(value), time=float(time)))
    pm.instruments.append(instrument)
  buffer = io.BytesIO()
  pm.write(buffer)
  return buffer.getvalue()


def write_file(path: os.PathLike[str] | str, data: bytes) -> str:
  """Writes ``data`` to ``path`` (creating parent folders); returns the path as a string."""
  path = os.fspath(path)
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  with open(path, 'wb') as f:
    f.write(data)
  return path


def write_midi(path: os.PathLike[str] | str, notes: Sequence[Note] = (), **kwargs) -> str:
  """Writes :func:`midi_bytes` (same arguments) to ``path``; returns the path as a string."""
  return write_file(path, midi_bytes(notes, **kwargs))


def random_melody(seed: int, num_notes: int, *, grid_s: float = 0.125) -> list[Note]:
  """A reproducible melody with all times on a ``grid_s`` grid (exact ticks).

  Onsets strictly increase, so the notes' onset order is the list order. Notes may overlap
  (a later note can end first) but never with a sounding note of the same pitch, whose
  note-on/off pairing in a MIDI file would be ambiguous.
  """
  rng = np.random.default_rng(seed)
  notes = []
  onset_steps = 0
  for i in range(num_notes):
    if i:
      onset_steps += int(rng.integers(1, 5))
    length_steps = int(rng.integers(1, 9))
    sounding = {p for p, _, end, _ in notes if end > onset_steps * grid_s}
    pitch = int(rng.integers(36, 97))
    while pitch in sounding:
      pitch = int(rng.integers(36, 97))
    notes.append((pitch, onset_steps * grid_s, (onset_steps + length_steps) * grid_s,
                  int(rng.integers(20, 128))))
  return notes


def expected_notes(notes: Sequence[Note], tempo_bpm: float = TEMPO_BPM) -> dict[str, np.ndarray]:
  """The notes dict ``partita.notes.parse_midi`` should return for ``notes`` (no pedal).

  That is, for ``notes`` written by :func:`midi_bytes` at ``tempo_bpm``.

  Sorted by onset then pitch; step is seconds since the previous onset. The metre: pretty_midi
  writes one tempo and no time signature (so 4/4 from the start); when at least 90% of the
  onsets fall on a 32nd note or a sixteenth triplet, each note's tempo is 60 / tempo_bpm and its
  position in the bar its onset in quarter notes modulo 4, else all three are 0.
  """
  ordered = sorted(notes, key=lambda n: (n[1], n[0]))
  start = np.array([n[1] for n in ordered], dtype=np.float64)
  quarter_seconds = 60.0 / tempo_bpm
  quarters = np.round(start / quarter_seconds * RESOLUTION) / RESOLUTION
  on_grid = (np.isclose(quarters * 8, np.round(quarters * 8))
             | np.isclose(quarters * 12, np.round(quarters * 12)))
  gridded = len(start) > 0 and on_grid.mean() >= 0.9
  return {
      'pitch': np.array([n[0] for n in ordered], dtype=np.int64),
      'step': np.diff(start, prepend=start[:1]).astype(np.float32),
      'duration': np.array([n[2] - n[1] for n in ordered], dtype=np.float32),
      'velocity': np.array([n[3] for n in ordered], dtype=np.int64),
      'quarter_seconds': np.full(len(start), quarter_seconds if gridded else 0.0, np.float32),
      'bar_position': (np.mod(quarters, 4.0) if gridded else np.zeros(len(start))).astype(
          np.float32),
      'bar_quarters': np.full(len(start), 4.0 if gridded else 0.0, np.float32),
  }


def smf_bytes(division: int, track_events: bytes, *, midi_format: int = 0) -> bytes:
  """A hand-made one-track standard MIDI file: MThd with ``division``, then one MTrk chunk.

  ``track_events`` is the raw event data (delta times included); an end-of-track meta event is
  appended.
  """
  track = track_events + b'\x00\xff\x2f\x00'
  header = b'MThd' + struct.pack('>IHHH', 6, midi_format, 1, division)
  return header + b'MTrk' + struct.pack('>I', len(track)) + track


def note_events(pitches, ticks_per_note: int) -> bytes:
  """Raw MTrk events: one note per pitch, each ``ticks_per_note`` long, back to back."""
  length = variable_length(ticks_per_note)
  return b''.join(b'\x00\x90' + bytes([pitch, 64]) + length + b'\x80' + bytes([pitch, 64])
                  for pitch in pitches)


def variable_length(value: int) -> bytes:
  """A MIDI variable-length quantity."""
  groups = [value & 0x7F]
  value >>= 7
  while value:
    groups.append((value & 0x7F) | 0x80)
    value >>= 7
  return bytes(reversed(groups))


# Hand-made files with absurd values (each must be rejected without exhausting memory).
ZERO_TRACKS = b'MThd' + struct.pack('>IHHH', 6, 1, 0, 480)  # format 1, no MTrk chunk
# Notes 2**27 ticks apart at 96 ticks per quarter, 120 bpm: about 8 days each.
HUGE_DELTA_TIMES = smf_bytes(96, note_events([60, 62, 64], 2**27))
# A tempo of 1 microsecond per quarter note: 1,000 notes within a millisecond.
TEMPO_1US = smf_bytes(96, b'\x00\xff\x51\x03\x00\x00\x01' + note_events([60, 62] * 500, 96))
# Time division 0: no tick has a duration.
DIVISION_ZERO = smf_bytes(0, note_events([60, 62, 64], 96))
