"""Crafted hostile MIDI files: the broken input the internet holds, written in code.

:func:`hostile_files` returns ``{name: (bytes, expected)}`` where ``expected`` is the dead-letter
reason the file must get, ``'piece'`` for a file that is valid (if strange) and must be
processed, or ``None`` where either is acceptable (random mutations) as long as a rejection has
a specific reason.
"""

from __future__ import annotations

import struct

from midi_builders import (
  DIVISION_ZERO,
  HUGE_DELTA_TIMES,
  TEMPO_1US,
  ZERO_TRACKS,
  midi_bytes,
  note_events,
  random_melody,
  smf_bytes,
  variable_length,
)
import numpy as np

END_OF_TRACK = b'\x00\xff\x2f\x00'


def header(num_tracks: int, division: bytes = struct.pack('>H', 96), midi_format: int = 1) -> bytes:
  return b'MThd' + struct.pack('>IHH', 6, midi_format, num_tracks) + division


def track(events: bytes, declared_length: int | None = None) -> bytes:
  events += END_OF_TRACK
  length = len(events) if declared_length is None else declared_length
  return b'MTrk' + struct.pack('>I', length) + events


def chunk_boundaries(data: bytes) -> list[int]:
  """Offsets where each chunk header and each chunk body start."""
  offsets, position = [], 0
  while position + 8 <= len(data):
    offsets += [position, position + 8]
    position += 8 + struct.unpack('>I', data[position + 4:position + 8])[0]
  return offsets


def hostile_files(real_files: list[bytes], seed: int = 0) -> dict[str, tuple[bytes, str | None]]:
  rng = np.random.default_rng(seed)
  files = {
      'huge_delta_times.mid': (HUGE_DELTA_TIMES, 'too_long'),
      # The largest delta time a MIDI file can hold (2**28 - 1 ticks), for one note.
      'max_delta_time.mid': (smf_bytes(96, b'\x00\x90\x3c\x40\xff\xff\xff\x7f\x80\x3c\x40'),
                             'too_long'),
      'tempo_1us.mid': (TEMPO_1US, 'bad_timing'),
      'division_zero.mid': (DIVISION_ZERO, 'bad_timing'),
      'smpte_division.mid': (header(1, b'\xe7\x28') + track(note_events([60, 62, 64], 40)),
                             'smpte_timing'),
      # 1,000,000 notes: over the job's --max-notes in the test, rejected after a fast count.
      'a_million_notes.mid': (smf_bytes(96, note_events([60, 62] * 500_000, 1)),
                              'too_many_notes'),
      # 3,000 tracks of one note each, one after another: a valid 3,000-note piece.
      'thousands_of_tracks.mid': (
          header(3000) + b''.join(
              track(variable_length(24 * i) + b'\x90\x3c\x40\x18\x80\x3c\x40')
              for i in range(3000)), 'piece'),
      'notes_never_end.mid': (smf_bytes(96, b''.join(
          b'\x00\x90' + bytes([p, 64]) + b'\x60\x90' + bytes([p + 1, 0x40])
          for p in range(40, 80, 2))), 'no_notes'),
      'zero_length_notes.mid': (smf_bytes(96, b''.join(
          b'\x00\x90' + bytes([p, 64]) + b'\x00\x80' + bytes([p, 64]) + b'\x30\xff\x01\x01a'
          for p in range(30, 100))), 'piece'),
      'running_status_without_status.mid': (smf_bytes(96, b'\x00\x3c\x40\x60\x3c\x00'),
                                            'parse_error'),
      'running_status_across_meta.mid': (
          smf_bytes(96, b'\x00\x90\x3c\x40' + b'\x00\xff\x01\x01a\x60\x3c\x00' * 80), None),
      'chunk_length_too_long.mid': (header(1, midi_format=0) + track(note_events([60] * 80, 96),
                                                                    declared_length=10**6),
                                    'parse_error'),
      'chunk_length_too_short.mid': (header(1, midi_format=0) + track(note_events([60] * 80, 96),
                                                                     declared_length=5),
                                     'parse_error'),
      'sysex_past_the_end.mid': (smf_bytes(96, note_events([60, 62] * 40, 96)
                                           + b'\x00\xf0\x7f\x01\x02'), 'parse_error'),
      'random_bytes.mid': (rng.bytes(3000), 'not_midi'),
      'random_after_header.mid': (header(3) + rng.bytes(3000), None),
      'empty.mid': (b'', 'empty'),
      'zero_tracks.mid': (ZERO_TRACKS, 'no_tracks'),
  }
  whole = midi_bytes(random_melody(3, 90))
  for offset in chunk_boundaries(whole):
    if 0 < offset < len(whole):
      files[f'truncated_at_{offset}.mid'] = (whole[:offset], None)
  for index, data in enumerate(real_files):
    mutated = np.frombuffer(data, dtype=np.uint8).copy()
    positions = rng.integers(14, len(data), size=1 + index % 3)
    mutated[positions] = rng.integers(0, 256, size=len(positions), dtype=np.uint8)
    files[f'mutated_{index}.mid'] = (mutated.tobytes(), None)
  return files
