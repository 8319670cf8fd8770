"""Fuzzing the per-file path, bytes -> notes -> chunks -> windows, with hypothesis.

The property: any bytes either become a valid piece (finite, non-negative times, pitches in
0..127, every window well formed) or are rejected with a specific reason; nothing else may
happen (another exception is a bug, a crash kills the run). CI runs the short, derandomized
'ci' profile; run the long one on demand (see conftest.py and the README):

    python -m pytest tests/test_fuzz.py --hypothesis-profile=long
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
import midi_builders
import numpy as np
import test_hostile

from partita import contract, failures
from partita import notes as notes_lib

WINDOW_LENGTH = 8
OPTIONS = notes_lib.ParseOptions(min_notes=WINDOW_LENGTH + 1, max_notes=50_000)
SEEDS = [
    midi_builders.midi_bytes(midi_builders.random_melody(0, 40)),
    midi_builders.midi_bytes(tracks=[
        midi_builders.Track(midi_builders.random_melody(1, 30), sustain=[(0.5, 127), (2.0, 0)]),
        midi_builders.Track(midi_builders.random_melody(2, 20), program=40),
        midi_builders.Track(midi_builders.random_melody(3, 10), drum=True)]),
]


@st.composite
def mutated_midi(draw) -> bytes:
  """A valid file with a few bytes replaced, inserted or cut.

  Most of the header survives, so the parser gets far into the file.
  """
  data = bytearray(draw(st.sampled_from(SEEDS)))
  for _ in range(draw(st.integers(1, 8))):
    position = draw(st.integers(0, len(data) - 1))
    action = draw(st.sampled_from(['replace', 'insert', 'delete']))
    byte = draw(st.integers(0, 255))
    if action == 'replace':
      data[position] = byte
    elif action == 'insert':
      data.insert(position, byte)
    elif len(data) > 1:
      del data[position]
  if draw(st.booleans()):
    data = data[:draw(st.integers(0, len(data)))]
  return bytes(data)


def parse_to_windows(data: bytes) -> None:
  try:
    piece = notes_lib.parse_midi(data, OPTIONS)
  except failures.RejectionError as e:
    assert e.reason in test_hostile.SPECIFIC_REASONS and e.detail
    return
  test_hostile.check_piece(piece)
  covered = 0
  for chunk in contract.chunks(piece, WINDOW_LENGTH, stride=5):
    test_hostile.check_piece(chunk)
    windows = np.lib.stride_tricks.sliding_window_view(chunk['pitch'], WINDOW_LENGTH + 1)
    covered += len(windows)
  assert covered == len(piece['pitch']) - WINDOW_LENGTH


@given(mutated_midi())
def test_mutated_midi_becomes_a_valid_piece_or_a_specific_rejection(data):
  parse_to_windows(data)


@given(st.binary(max_size=2000).map(lambda tail: b'MThd\x00\x00\x00\x06' + tail))
def test_arbitrary_bytes_after_a_midi_header(data):
  parse_to_windows(data)


@given(st.binary(max_size=2000))
def test_arbitrary_bytes_as_a_note_sequence(data):
  try:
    piece = notes_lib.parse_note_sequence(data, OPTIONS)
  except failures.RejectionError as e:
    assert e.reason in test_hostile.SPECIFIC_REASONS | {'not_note_sequence'} and e.detail
  else:
    test_hostile.check_piece(piece)
