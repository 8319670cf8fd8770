"""Hostile MIDI (see hostile_midi.py): each file is parsed or rejected, and a job finishes.

Each file is parsed or rejected with a specific reason, never a hang, a crash or a memory
blow-up; a job over a folder mixing them with good files finishes and accounts for every file.
"""

from __future__ import annotations

import glob
import json
import os

import hostile_midi
import midi_builders
import numpy as np
import pytest
import test_preprocess
import test_sustain_reference

from beam_pipelines import preprocess
from partita import contract, failures, isolation
from partita import notes as notes_lib

WINDOW_LENGTH = 64
MAX_NOTES = 100_000
# Reasons that name what is wrong with the file; internal_error would mean a bug of ours.
SPECIFIC_REASONS = {'empty', 'not_midi', 'smpte_timing', 'parse_error', 'bad_timing', 'no_tracks',
                    'drums_only', 'no_notes', 'too_many_notes', 'too_long', 'too_few_notes'}


def real_files() -> list[bytes]:
  """Ten real files to mutate: from the piano corpus, or generated where it is absent."""
  piano_files = test_sustain_reference.PIANO_FILES
  if piano_files:
    paths = piano_files[::len(piano_files) // 10][:10]
    return [open(path, 'rb').read() for path in paths]
  return [midi_builders.midi_bytes(midi_builders.random_melody(seed, 300)) for seed in range(10)]


HOSTILE = hostile_midi.hostile_files(real_files())
OPTIONS = notes_lib.ParseOptions(min_notes=WINDOW_LENGTH + 1, max_notes=MAX_NOTES)


def check_piece(piece: dict[str, np.ndarray]) -> None:
  for name in ('step', 'duration'):
    assert np.all(np.isfinite(piece[name])) and np.all(piece[name] >= 0)
  assert np.all((piece['pitch'] >= 0) & (piece['pitch'] <= 127))
  assert len({len(values) for values in piece.values()}) == 1


@pytest.fixture(scope='module')
def parser():
  """The job's crash isolation, as a guard against a hang, a native crash or a memory blow-up.

  Each on a file becomes parse_timeout, parser_crash or out_of_memory, which fail the test below.
  The limits are far beyond any real parse (the slowest hostile file takes well under a second),
  so no outcome depends on the machine's speed or load.
  """
  process = isolation.ParserProcess(
      isolation.IsolationOptions(timeout_seconds=120.0, memory_bytes=4 * 2**30))
  yield process
  process.close()


@pytest.mark.parametrize('name', sorted(HOSTILE))
def test_hostile_file_is_parsed_or_rejected_specifically(name, parser):
  data, expected = HOSTILE[name]
  try:
    piece = parser.parse(notes_lib.parse_midi, data, OPTIONS)
  except failures.RejectionError as e:
    outcome = e.reason
    assert e.reason in SPECIFIC_REASONS and e.detail
  else:
    outcome = 'piece'
    check_piece(piece)
    for chunk in contract.chunks(piece, WINDOW_LENGTH, 192):
      check_piece(chunk)
  if expected:
    assert outcome == expected


def test_job_on_hostile_folder_processes_good_files_and_accounts_for_every_file(tmp_path):
  corpus = tmp_path / 'corpus'
  for name, (data, _) in HOSTILE.items():
    midi_builders.write_file(corpus / 'hostile' / name, data)
  good = [midi_builders.random_melody(seed, 100 + seed) for seed in range(4)]
  for seed, melody in enumerate(good):
    midi_builders.write_midi(corpus / f'good{seed}.mid', melody)
  config = preprocess.PreprocessConfig(
      input=str(corpus), output=str(tmp_path / 'out'), window_length=WINDOW_LENGTH,
      max_notes=MAX_NOTES, parse_memory_mb=1024, parse_timeout_seconds=120.0)

  info = preprocess.run(config)

  counts = info['counts']
  assert counts['files_in'] == len(HOSTILE) + len(good)
  assert counts['files_in'] == (counts['pieces_written'] + counts['duplicates']
                                + counts['near_duplicates'] + counts['dead_letters'])
  dead = {}
  for path in glob.glob(os.path.join(config.output, failures.DEAD_LETTER_DIR, '*.jsonl')):
    with open(path) as f:
      for line in f:
        letter = json.loads(line)
        dead[os.path.basename(letter['input'])] = letter['reason']
  assert set(dead.values()) <= SPECIFIC_REASONS  # no crash, timeout, memory blow-up or bug
  for name, (_, expected) in HOSTILE.items():
    if expected == 'piece':
      assert name not in dead
    elif expected:
      assert dead[name] == expected, name
  assert not any(name.startswith('good') for name in dead)

  files = [f for split in contract.SPLITS for f in info['splits'][split]['files']]
  chunks = test_preprocess.read_chunks(config.output, files)
  for chunk in chunks:
    check_piece(chunk)
  # Each good piece is shorter than one chunk (stride + window), so it is one chunk whole.
  written = [test_preprocess.note_rows(chunk) for chunk in chunks]
  for melody in good:
    assert test_preprocess.note_rows(midi_builders.expected_notes(melody)) in written
