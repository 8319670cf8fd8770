"""The sustain pedal, compared with note_seq's reference on every file of the piano corpus.

Both implementations get the same parsed notes and pedal events (symusic's, per track), so the
comparison is of the pedal handling alone. The corpus lives outside the repository
(``../shared/corpora/piano-midi``, or ``$PARTITA_CORPORA/piano-midi``).
"""

from __future__ import annotations

import glob
import os

import numpy as np
import pretty_midi
import pytest
import symusic

from partita import notes as notes_lib

CORPORA = os.environ.get(
    'PARTITA_CORPORA', os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'corpora'))
PIANO_FILES = sorted(glob.glob(os.path.join(CORPORA, 'piano-midi', '**', '*.mid'), recursive=True))
TOLERANCE_SECONDS = 1e-3


@pytest.fixture(scope='module')
def reference_sustain():
  """note_seq's apply_sustain_control_changes and NoteSequence, with pretty_midi's guard restored.

  pretty_midi's MAX_TICK guard, which importing note_seq disables, is restored for the rest of
  the test session.
  """
  max_tick = pretty_midi.pretty_midi.MAX_TICK
  from note_seq import sequences_lib
  pretty_midi.pretty_midi.MAX_TICK = max_tick
  return sequences_lib.apply_sustain_control_changes, notes_lib.note_seq_protos().NoteSequence


def sorted_rows(pitch, start, end) -> np.ndarray:
  """(pitch, start, end) rows in onset order (onsets compared to 0.1 ms), then pitch, then end."""
  order = np.lexsort((end, pitch, np.round(start, 4)))
  return np.stack([pitch[order], start[order], end[order]], axis=1).astype(np.float64)


@pytest.mark.skipif(not os.path.isdir(CORPORA), reason=f'no corpora folder at {CORPORA}')
def test_corpus_is_there():
  assert len(PIANO_FILES) == 337, f'expected the 337 files of the piano corpus in {CORPORA}'


# Without the corpus, one case that skips with the reason, rather than none at all (which
# would pass silently).
@pytest.mark.parametrize('path', PIANO_FILES or [pytest.param(
    None, marks=pytest.mark.skip(reason=f'no piano corpus at {CORPORA}'))],
    ids=lambda path: os.path.basename(path) if path else 'no-corpus')
def test_sustain_matches_note_seq(path, reference_sustain):
  apply_reference, note_sequence_type = reference_sustain
  with open(path, 'rb') as f:
    data = f.read()
  # The reference input: the non-drum tracks with notes, as parse_midi merges them.
  sequence = note_sequence_type()
  for index, track in enumerate(symusic.Score.from_midi(data).to('second').tracks):
    if track.is_drum or not len(track.notes):
      continue
    for note in track.notes:
      sequence.notes.add(start_time=note.start, end_time=note.end, pitch=note.pitch,
                         velocity=note.velocity, instrument=index)
    for control in track.controls:
      if control.number == notes_lib.SUSTAIN_CC:
        sequence.control_changes.add(time=control.time, control_number=control.number,
                                     control_value=control.value, instrument=index)
  reference = apply_reference(sequence).notes
  first_onset = min(note.start_time for note in reference)
  expected = sorted_rows(np.array([n.pitch for n in reference]),
                         np.array([n.start_time for n in reference]) - first_onset,
                         np.array([n.end_time for n in reference]) - first_onset)

  piece = notes_lib.parse_midi(data, notes_lib.ParseOptions(min_notes=1))
  start = np.cumsum(piece['step'], dtype=np.float64)
  actual = sorted_rows(piece['pitch'], start, start + piece['duration'])

  np.testing.assert_array_equal(actual[:, 0], expected[:, 0])
  np.testing.assert_allclose(actual[:, 1:], expected[:, 1:], rtol=0, atol=TOLERANCE_SECONDS)
