"""Notes dicts -> MIDI files and piano-roll pictures.

Serving writes every generated piece through this module: the prime (the music the model was
given) and the continuation (what it generated) go on two instruments of one MIDI file, and a
piano roll shows both for a quick look. Everything written here reads back note for note with
``pretty_midi.PrettyMIDI(path)``: MIDI cannot express some things a model can output (zero-length
notes, velocity 0, two overlapping notes of one pitch on one channel), so such notes are adjusted
before writing rather than silently lost or changed by the reader. Values that no adjustment can
make sense of (negative or non-finite times) are bugs upstream and raise ``ValueError``.

Files are written atomically (:mod:`partita.atomic`): a reader sees the previous file or the
complete new one, never a half-written file.

No Beam and no TensorFlow here, so the serving code can import it cheaply.
"""

from __future__ import annotations

from collections.abc import Mapping
import io
import math
import os

from matplotlib import figure as figure_lib
from matplotlib import ticker
from matplotlib.backends import backend_agg
import numpy as np
import pretty_midi

from partita import atomic, constants

# Notes are timed in seconds, so tempo and resolution only choose the file's time grid. 480 ticks
# per quarter note is the usual DAW resolution and 120 bpm is MIDI's default tempo (the one a
# player assumes when a file has none), which makes a tick 60 / (120 * 480) = 1/960 s: about 1 ms,
# finer than anyone hears and than the model's timing.
RESOLUTION = 480
TEMPO_BPM = 120.0
TICKS_PER_SECOND = RESOLUTION * TEMPO_BPM / 60.0
# Shorter notes are lengthened to this. A note needs at least one tick to be read back at all
# (see _end_at_restrike); 1/128 s (8 ticks) also stays a note when another tool rewrites the file
# on a coarser grid (it is a whole tick at 64 ticks per quarter), and is still too short to hear
# as more than a click.
MIN_DURATION_S = 1 / 128
MIN_DURATION_TICKS = math.ceil(MIN_DURATION_S * TICKS_PER_SECOND)
# pretty_midi refuses to read a file whose largest event tick plus one exceeds MAX_TICK, and its
# writer puts the end-of-track event one tick after the last note-off: so notes must end by
# MAX_TICK - 2 ticks (about 2.9 hours at our tick size).
LAST_READABLE_TICK = int(pretty_midi.pretty_midi.MAX_TICK) - 2

PRIME_INSTRUMENT = 'prime'
CONTINUATION_INSTRUMENT = 'continuation'

PIANO_ROLL_SIZE_INCHES = (12.0, 5.0)
PIANO_ROLL_DPI = 100
PRIME_COLOUR = '0.6'  # Mid grey: context, not the result.
CONTINUATION_COLOUR = 'tab:red'


def onsets_after(notes: Mapping[str, np.ndarray], start: float = 0.0) -> np.ndarray:
  """Absolute onset times in seconds: ``start + cumsum(step)``.

  Accumulates in float64 because steps are stored as float32, whose rounding errors would add up
  over a long piece.
  """
  return start + np.cumsum(np.asarray(notes['step'], dtype=np.float64))


def to_pretty_midi(prime: Mapping[str, np.ndarray] | None, continuation: Mapping[str, np.ndarray],
                   program: int = 0) -> pretty_midi.PrettyMIDI:
  """Builds a MIDI with the prime on instrument 'prime' and the continuation on 'continuation'.

  Both instruments play General MIDI ``program``. The prime starts at time 0 (its ``step[0]`` is
  the time to its first onset); the continuation continues the prime's onset clock, so its first
  onset is ``step[0]`` after the prime's last onset. Notes are put on the file's tick grid and
  adjusted so they survive a write/read round trip: pitch clamped to 0..127, velocity to 1..127
  (velocity 0 would be a note-off), duration lengthened to at least ``MIN_DURATION_S``, and a
  note overlapping the next onset of its pitch ended there (see :func:`_end_at_restrike`).

  Raises:
    ValueError: a notes dict is malformed or holds negative or non-finite values, notes end
      later than a MIDI reader accepts, or ``program`` is not 0..127.
  """
  if not 0 <= program < constants.PROGRAMS:
    raise ValueError(f'General MIDI program must be 0..127, got {program}')
  midi = pretty_midi.PrettyMIDI(resolution=RESOLUTION, initial_tempo=TEMPO_BPM)
  continuation_start = 0.0
  if prime is not None:
    prime = _checked_notes(prime, PRIME_INSTRUMENT)
    prime_onsets = onsets_after(prime)
    midi.instruments.append(_instrument(PRIME_INSTRUMENT, prime, prime_onsets, program))
    if len(prime_onsets):
      continuation_start = float(prime_onsets[-1])
  continuation = _checked_notes(continuation, CONTINUATION_INSTRUMENT)
  midi.instruments.append(_instrument(CONTINUATION_INSTRUMENT, continuation,
                                      onsets_after(continuation, continuation_start), program))
  return midi


def write_midi(path: str | os.PathLike[str], prime: Mapping[str, np.ndarray] | None,
               continuation: Mapping[str, np.ndarray], program: int = 0) -> None:
  """Writes :func:`to_pretty_midi`'s MIDI to ``path``, atomically."""
  atomic.write_bytes(path, midi_bytes(prime, continuation, program))


def midi_bytes(prime: Mapping[str, np.ndarray] | None, continuation: Mapping[str, np.ndarray],
               program: int = 0) -> bytes:
  """:func:`to_pretty_midi`'s MIDI file as bytes.

  For writers that are not local files (Beam's FileSystems, ``gs://``).
  """
  buffer = io.BytesIO()
  to_pretty_midi(prime, continuation, program).write(buffer)
  return buffer.getvalue()


def write_piano_roll(path: str | os.PathLike[str], prime: Mapping[str, np.ndarray] | None,
                     continuation: Mapping[str, np.ndarray], title: str = '',
                     continuation_label: str = 'generated') -> None:
  """Writes :func:`piano_roll_png` to ``path``, atomically."""
  atomic.write_bytes(path, piano_roll_png(prime, continuation, title, continuation_label))


def piano_roll_png(prime: Mapping[str, np.ndarray] | None, continuation: Mapping[str, np.ndarray],
                   title: str = '', continuation_label: str = 'generated') -> bytes:
  """A PNG piano roll of the prime (grey) and the continuation (red), as bytes.

  x is time in seconds, y is MIDI pitch, each note a horizontal bar; a dashed line marks the
  continuation's first onset; the legend names the continuation ``continuation_label`` (the
  evaluation's real continuations are not "generated"). The notes drawn are the ones
  :func:`write_midi` writes, so the picture shows what the MIDI file plays.
  """
  figure = _piano_roll_figure(to_pretty_midi(prime, continuation), title, continuation_label)
  buffer = io.BytesIO()
  figure.savefig(buffer, format='png', dpi=PIANO_ROLL_DPI)
  return buffer.getvalue()


def _checked_notes(notes: Mapping[str, np.ndarray], name: str) -> dict[str, np.ndarray]:
  """Validates a notes dict; returns it with pitch and velocity rounded and clamped to MIDI's range.

  Raises:
    ValueError: keys are missing, arrays are not 1-D of one length, or values are non-finite, or
      step or duration is negative. These come from bugs upstream, so fail loudly.
  """
  missing = [key for key in constants.SOUND_FEATURES if key not in notes]
  if missing:
    raise ValueError(f'{name} notes lack {missing}; a notes dict needs '
                     f'{list(constants.SOUND_FEATURES)}')
  arrays = {key: np.asarray(notes[key], dtype=np.float64) for key in constants.SOUND_FEATURES}
  shapes = {key: values.shape for key, values in arrays.items()}
  if any(len(shape) != 1 for shape in shapes.values()) or len(set(shapes.values())) != 1:
    raise ValueError(f'{name} notes must be 1-D arrays of one length, got shapes {shapes}')
  for key, values in arrays.items():
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
      raise ValueError(f'{name} {key} has non-finite values at indices {bad[:10].tolist()} '
                       f'(first value {values[bad[0]]})')
  for key in ('step', 'duration'):
    bad = np.flatnonzero(arrays[key] < 0)
    if len(bad):
      raise ValueError(f'{name} {key} has negative values at indices {bad[:10].tolist()} '
                       f'(first value {arrays[key][bad[0]]})')
  return {
      'pitch': np.clip(np.rint(arrays['pitch']), 0, constants.PITCHES - 1).astype(np.int64),
      'step': arrays['step'],
      'duration': arrays['duration'],
      'velocity': np.clip(np.rint(arrays['velocity']), 1, constants.MAX_VELOCITY).astype(np.int64),
  }


def _instrument(name: str, notes: dict[str, np.ndarray], onset_seconds: np.ndarray,
                program: int) -> pretty_midi.Instrument:
  """An instrument holding checked ``notes`` at ``onset_seconds``, on the tick grid.

  Times are put on the grid here, rather than left to the writer, because what survives a round
  trip depends on the ticks notes land on (see :func:`_end_at_restrike`).
  """
  start_tick = np.round(onset_seconds * TICKS_PER_SECOND)
  end_tick = np.maximum(np.round((onset_seconds + notes['duration']) * TICKS_PER_SECOND),
                        start_tick + MIN_DURATION_TICKS)
  if len(end_tick) and end_tick.max() > LAST_READABLE_TICK:
    raise ValueError(f'{name} notes end at {end_tick.max() / TICKS_PER_SECOND:.0f} s, later than '
                     f'MIDI readers accept ({LAST_READABLE_TICK / TICKS_PER_SECOND:.0f} s)')
  start_tick, end_tick = start_tick.astype(np.int64), end_tick.astype(np.int64)
  end_tick = _end_at_restrike(notes['pitch'], start_tick, end_tick)
  instrument = pretty_midi.Instrument(program=program, name=name)
  instrument.notes = [
      pretty_midi.Note(velocity=int(velocity), pitch=int(pitch), start=start / TICKS_PER_SECOND,
                       end=end / TICKS_PER_SECOND)
      for pitch, velocity, start, end in zip(notes['pitch'], notes['velocity'], start_tick,
                                             end_tick, strict=True)]
  return instrument


def _end_at_restrike(pitch: np.ndarray, start_tick: np.ndarray,
                     end_tick: np.ndarray) -> np.ndarray:
  """Note ends in ticks, with each note ended no later than the next onset of its pitch.

  A MIDI channel has one key per pitch, so two overlapping notes of one pitch have no single
  meaning, and pretty_midi's reader closes every sounding note of a pitch at the first note-off
  of that pitch: without this, a long note overlapped by a short one would be read back ending
  with the short one. Ending it where the key is struck again, as on a piano, makes the file
  mean what it says. Notes of one pitch starting on the same tick (a doubled
  chord tone) all end with the shortest of them, which is how the reader would end them anyway.

  The writer puts a tick's note-offs before its note-ons, so a note-off on the tick of a later
  onset of the same pitch is harmless; but a note must end at least one tick after it starts, or
  its own note-off comes first and the note is dropped (or ends with a later note of its pitch).
  Callers guarantee that.
  """
  if len(pitch) == 0:
    return end_tick
  order = np.lexsort((start_tick, pitch))
  sorted_pitch, sorted_start = pitch[order], start_tick[order]
  # A group is the notes of one pitch starting on one tick.
  starts_group = np.concatenate(
      [[True], (sorted_pitch[1:] != sorted_pitch[:-1]) | (sorted_start[1:] != sorted_start[:-1])])
  group_first = np.flatnonzero(starts_group)
  group_of_note = np.cumsum(starts_group) - 1
  group_pitch, group_start = sorted_pitch[group_first], sorted_start[group_first]
  # Where the pitch is struck again after each group; no limit after a pitch's last group.
  no_limit = np.iinfo(np.int64).max
  same_pitch_next = group_pitch[1:] == group_pitch[:-1]
  next_restrike = np.append(np.where(same_pitch_next, group_start[1:], no_limit), no_limit)
  group_end = np.minimum(np.minimum.reduceat(end_tick[order], group_first), next_restrike)
  resolved_end = np.empty_like(end_tick)
  resolved_end[order] = group_end[group_of_note]
  return resolved_end


def _piano_roll_figure(midi: pretty_midi.PrettyMIDI, title: str,
                       continuation_label: str) -> figure_lib.Figure:
  """Draws the instruments of a :func:`to_pretty_midi` MIDI as a piano roll.

  Uses a bare Figure on the Agg canvas, not pyplot: pyplot keeps every figure open until it is
  closed and needs a GUI backend or global configuration, whereas this figure is freed as soon as
  the caller drops it, so thousands of calls in a server neither leak nor need a display.
  """
  figure = figure_lib.Figure(figsize=PIANO_ROLL_SIZE_INCHES)
  backend_agg.FigureCanvasAgg(figure)
  axes = figure.add_subplot()
  styles = {PRIME_INSTRUMENT: (PRIME_COLOUR, 'prime'),
            CONTINUATION_INSTRUMENT: (CONTINUATION_COLOUR, continuation_label)}
  pitches_drawn = []
  for instrument in midi.instruments:
    if not instrument.notes:
      continue
    colour, label = styles[instrument.name]
    start = np.array([note.start for note in instrument.notes])
    end = np.array([note.end for note in instrument.notes])
    pitch = np.array([note.pitch for note in instrument.notes])
    axes.barh(pitch, end - start, left=start, height=0.8, color=colour, label=label)
    pitches_drawn.append(pitch)
    if instrument.name == CONTINUATION_INSTRUMENT:
      axes.axvline(start.min(), color='black', linestyle='--', linewidth=1)
  if pitches_drawn:
    all_pitches = np.concatenate(pitches_drawn)
    axes.set_ylim(all_pitches.min() - 1.5, all_pitches.max() + 1.5)
    # Outside the axes, on the right, so it never hides notes.
    axes.legend(loc='upper left', bbox_to_anchor=(1.0, 1.0))
  axes.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  axes.set_xlim(left=0.0)
  axes.set_xlabel('time (s)')
  axes.set_ylabel('MIDI pitch')
  if title:
    axes.set_title(title)
  figure.tight_layout()
  return figure
