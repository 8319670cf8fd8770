"""Where each note falls in the metre: the tempo at its onset and its position in the bar.

Score-derived MIDI (the demo corpus, classical-midi, piano-midi) places every onset on a grid of
ticks, with a tempo map and time signatures beside the notes; a listener hears that grid as the
pulse. Three features per note carry it through every stage (``partita.constants.METRE_FEATURES``):

* ``quarter_seconds``: seconds per quarter note at the note's onset (the tempo map's value there;
  0.5 is 120 quarter notes per minute);
* ``bar_position``: quarter notes from the downbeat of the note's bar to its onset (a time
  signature event starts a bar, as MIDI files write them; before the first one, 4/4 from tick 0);
* ``bar_quarters``: the length of that bar in quarter notes (3/4: 3, 6/8: 3, 4/2: 8).

A piece whose onsets do not sit on a grid (a recorded performance, which has a tempo map of its
own but onsets anywhere in it; a NoteSequence, which has no ticks) gets all three 0: the model
then sees its times in seconds alone, as before the metre existed, and knows (from
``quarter_seconds == 0``) that no grid is there. "On a grid" is :func:`on_grid`: at least
:data:`GRIDDED_MIN_SHARE` of the onsets on a multiple of a 32nd note or of a sixteenth triplet.
"""

from __future__ import annotations

import numpy as np

from partita import constants

# A note's onset is on the file's grid when it lies within GRID_TOLERANCE quarter notes of a
# multiple of 1/8 (32nd notes) or 1/12 (sixteenth triplets) of a quarter note.
GRID_DIVISIONS = (8, 12)
GRID_TOLERANCE = 1 / 96
# Score-derived files put every onset there; a performance far fewer (at 480 ticks per quarter,
# the grid's 16 points per quarter note, 11 ticks wide each, catch 37% of onsets by chance).
GRIDDED_MIN_SHARE = 0.9
# MIDI's default tempo (120 quarter notes per minute) and metre, where a file names none.
DEFAULT_QUARTER_SECONDS = 0.5
DEFAULT_BAR_QUARTERS = 4.0
# Note values (in quarter notes) at which the timing heads place components of their own, at
# the current tempo (trainer.model): from a 32nd note to two whole notes, dotted and triplet
# values included.
NOTE_VALUES = (1 / 8, 1 / 6, 1 / 4, 1 / 3, 3 / 8, 1 / 2, 2 / 3, 3 / 4, 1.0, 4 / 3, 3 / 2, 2.0,
               3.0, 4.0, 6.0, 8.0)
# The subdivisions (quarter notes) whose next grid point, from the note's position in its bar,
# the timing heads also place a component at; with the bar's next downbeat, these pull a piece
# that wandered off its grid back onto it.
SUBDIVISIONS = (1 / 4, 1 / 3, 1 / 2, 1.0)
# The resolution (positions per quarter note) and extent of the position embedding; bars longer
# than MAX_BAR_QUARTERS (rare: 5/2, 9/4 and longer) share its last positions.
POSITIONS_PER_QUARTER = 12
MAX_BAR_QUARTERS = 8


def on_grid(onset_quarters: np.ndarray) -> np.ndarray:
  """Whether each onset lies on the grid described above.

  The onsets are in quarter notes from the file's start.
  """
  onset_quarters = np.asarray(onset_quarters, np.float64)
  near = np.zeros(onset_quarters.shape, bool)
  for division in GRID_DIVISIONS:
    scaled = onset_quarters * division
    near |= np.abs(scaled - np.round(scaled)) <= GRID_TOLERANCE * division
  return near


def tempo_at(onset_ticks: np.ndarray, tempo_ticks: np.ndarray,
             tempo_quarter_seconds: np.ndarray) -> np.ndarray:
  """Seconds per quarter note in force at each onset, from a tempo map's events.

  The events are ticks and seconds per quarter; an event at the onset's own tick applies to it.
  Before the first event, and without any, MIDI's default 0.5 s.
  """
  order = np.argsort(tempo_ticks, kind='stable')
  tempo_ticks, tempo_quarter_seconds = tempo_ticks[order], tempo_quarter_seconds[order]
  index = np.searchsorted(tempo_ticks, onset_ticks, side='right') - 1
  values = np.concatenate([[DEFAULT_QUARTER_SECONDS], tempo_quarter_seconds]).astype(np.float64)
  return values[index + 1]


def bar_positions(onset_ticks: np.ndarray, ticks_per_quarter: int, signature_ticks: np.ndarray,
                  numerators: np.ndarray,
                  denominators: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """``(bar_position, bar_quarters)`` of each onset, from the time signature events.

  The events are (ticks, numerator, denominator). Each event starts a bar; an event whose
  numerator or denominator is not a positive number (a corrupt file) reads as 4/4.
  """
  valid = (numerators > 0) & (denominators > 0)
  lengths = np.where(valid, 4.0 * numerators / np.where(valid, denominators, 1),
                     DEFAULT_BAR_QUARTERS)
  starts = np.concatenate([[0.0], np.asarray(signature_ticks, np.float64) / ticks_per_quarter])
  lengths = np.concatenate([[DEFAULT_BAR_QUARTERS], lengths])
  order = np.argsort(starts, kind='stable')
  starts, lengths = starts[order], lengths[order]
  onset_quarters = np.asarray(onset_ticks, np.float64) / ticks_per_quarter
  index = np.searchsorted(starts, onset_quarters, side='right') - 1
  bar_quarters = lengths[index]
  position = np.mod(onset_quarters - starts[index], bar_quarters)
  # Float rounding may leave a downbeat a hair below the bar's length.
  position = np.where(bar_quarters - position < 1e-9, 0.0, position)
  return position, bar_quarters


def piece_metre(quarter_seconds: np.ndarray, bar_position: np.ndarray, bar_quarters: np.ndarray,
                onset_on_grid: np.ndarray) -> dict[str, np.ndarray]:
  """A piece's metre features (float32), or zeros when too few of its onsets are on the grid.

  Too few for its beats to mean anything; ``onset_on_grid`` says, per note, which are.
  """
  if not gridded(onset_on_grid):
    return no_metre(len(onset_on_grid))
  return {name: np.asarray(value, np.float32) for name, value in zip(
      constants.METRE_FEATURES, (quarter_seconds, bar_position, bar_quarters), strict=True)}


def gridded(onset_on_grid: np.ndarray) -> bool:
  """Whether enough onsets of a piece are on the grid for a metre (``onset_on_grid``: each)."""
  return (len(onset_on_grid) > 0
          and np.count_nonzero(onset_on_grid) / len(onset_on_grid) >= GRIDDED_MIN_SHARE)


def no_metre(notes: int) -> dict[str, np.ndarray]:
  """The metre features of a piece of ``notes`` notes with no grid: all zeros."""
  return {name: np.zeros(notes, np.float32) for name in constants.METRE_FEATURES}

