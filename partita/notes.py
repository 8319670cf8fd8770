"""MIDI bytes -> a piece as note arrays (pitch, step, duration, velocity).

A piece is a "notes dict": ``{'pitch', 'step', 'duration', 'velocity'}`` of equal-length 1-D numpy
arrays in onset order (ties broken by pitch). ``step`` is seconds since the previous onset
(0 for the first note), ``duration`` is seconds. This is the representation every stage shares:
preprocessing writes it, the trainer reads it, serving writes MIDI from it.

Parsing uses symusic (about 100x pretty_midi on this kind of machine, see DESIGN.md). Rejections
raise :class:`RejectedPiece` with a stable reason code, which the pipeline routes to dead letters.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import symusic

FEATURES = ('pitch', 'step', 'duration', 'velocity')
SUSTAIN_CC = 64
# MIDI convention (and note_seq's): controller values >= 64 mean the pedal is down.
SUSTAIN_DOWN_MIN_VALUE = 64


class RejectedPiece(Exception):
  """A file that cannot become a piece; ``reason`` is a short stable code for counting."""

  def __init__(self, reason: str, detail: str):
    super().__init__(f'{reason}: {detail}')
    self.reason = reason
    self.detail = detail


@dataclasses.dataclass(frozen=True)
class ParseOptions:
  """What to keep from a MIDI file."""
  min_notes: int = 2
  max_notes: int = 2_000_000
  max_seconds: float = 4 * 3600.0
  apply_sustain: bool = True


def apply_sustain(start: np.ndarray, end: np.ndarray, pitch: np.ndarray,
                  cc_time: np.ndarray, cc_value: np.ndarray) -> np.ndarray:
  """Returns note ends with the sustain pedal applied (one track's notes and CC64 events).

  A note released while the pedal is down keeps sounding until the pedal is released, or until
  the next onset of the same pitch, whichever comes first (note_seq's
  ``apply_sustain_control_changes`` semantics). A pedal still down at the end of the piece
  releases at the piece's last note end.
  """
  if len(cc_time) == 0 or len(start) == 0:
    return end
  order = np.argsort(cc_time, kind='stable')
  is_down = cc_value[order] >= SUSTAIN_DOWN_MIN_VALUE
  times = cc_time[order]
  # Keep state changes only: repeated "down" messages do not start new pedal intervals.
  changed = np.concatenate([[True], is_down[1:] != is_down[:-1]])
  is_down, times = is_down[changed], times[changed]
  downs = times[is_down]
  if len(downs) == 0:
    return end
  ups = np.full(len(downs), max(float(end.max()), float(times.max())))
  down_positions = np.flatnonzero(is_down)
  has_up = down_positions + 1 < len(times)
  ups[has_up] = times[down_positions[has_up] + 1]

  interval = np.searchsorted(downs, end, side='right') - 1
  sustained = (interval >= 0) & (end < ups[np.maximum(interval, 0)])
  new_end = np.where(sustained, ups[np.maximum(interval, 0)], end)

  # A sustained note is cut by the next onset of the same pitch after its own release.
  by_pitch = np.lexsort((start, pitch))
  next_same_pitch = np.full(len(start), np.inf)
  same = pitch[by_pitch][1:] == pitch[by_pitch][:-1]
  next_same_pitch[by_pitch[:-1][same]] = start[by_pitch][1:][same]
  cut = sustained & (next_same_pitch >= end) & (next_same_pitch < new_end)
  return np.where(cut, next_same_pitch, new_end).astype(end.dtype)


def parse_midi(data: bytes, options: ParseOptions = ParseOptions()) -> dict[str, np.ndarray]:
  """Parses MIDI bytes into a notes dict of all non-drum tracks merged.

  Raises:
    RejectedPiece: the bytes are not a usable piece (reason codes: not_midi, parse_error,
      no_notes, too_few_notes, too_many_notes, too_long, bad_timing).
  """
  if not data.startswith(b'MThd'):
    raise RejectedPiece('not_midi', 'file does not start with a MIDI header (MThd)')
  try:
    score = symusic.Score.from_midi(data)
  except Exception as e:  # symusic raises RuntimeError and others for corrupt files.
    raise RejectedPiece('parse_error', f'{type(e).__name__}: {e}') from e
  if score.ticks_per_quarter <= 0:
    raise RejectedPiece('bad_timing', f'time division is {score.ticks_per_quarter}')
  tracks = [t for t in score.tracks if not t.is_drum and len(t.notes)]
  if not tracks:
    detail = 'only drum tracks' if score.note_num() else 'no notes in any track'
    raise RejectedPiece('no_notes', detail)
  num_notes = sum(len(t.notes) for t in tracks)
  if num_notes > options.max_notes:
    raise RejectedPiece('too_many_notes', f'{num_notes} notes > limit {options.max_notes}')

  score = score.to('second')
  starts, ends, pitches, velocities = [], [], [], []
  for track in score.tracks:
    if track.is_drum or not len(track.notes):
      continue
    notes = track.notes.numpy()
    start = notes['time'].astype(np.float64)
    end = start + notes['duration'].astype(np.float64)
    pitch = notes['pitch'].astype(np.int64)
    if options.apply_sustain and len(track.controls):
      controls = track.controls.numpy()
      is_sustain = controls['number'] == SUSTAIN_CC
      end = apply_sustain(start, end, pitch, controls['time'][is_sustain].astype(np.float64),
                          controls['value'][is_sustain].astype(np.int64))
    starts.append(start)
    ends.append(end)
    pitches.append(pitch)
    velocities.append(notes['velocity'].astype(np.int64))
  start, end = np.concatenate(starts), np.concatenate(ends)
  pitch, velocity = np.concatenate(pitches), np.concatenate(velocities)

  if not (np.all(np.isfinite(start)) and np.all(np.isfinite(end))):
    raise RejectedPiece('bad_timing', 'non-finite note times')
  if start.min() < 0 or np.any(end < start):
    raise RejectedPiece('bad_timing', 'negative note times or durations')
  if end.max() > options.max_seconds:
    raise RejectedPiece('too_long', f'{end.max():.0f} s > limit {options.max_seconds:.0f} s')
  if num_notes < options.min_notes:
    raise RejectedPiece('too_few_notes', f'{num_notes} notes < minimum {options.min_notes}')

  order = np.lexsort((pitch, start))
  start = start[order]
  return {
      'pitch': np.clip(pitch[order], 0, 127),
      'step': np.diff(start, prepend=start[0]).astype(np.float32),
      'duration': (end[order] - start).astype(np.float32),
      'velocity': np.clip(velocity[order], 1, 127),
  }


def content_fingerprint(notes: dict[str, np.ndarray]) -> str:
  """Hex digest of a piece's note content (pitches and times to the millisecond).

  Identical music stored in different bytes (another track layout, tempo map, file name)
  gets the same fingerprint: it is the key for dedup and for the train/validation/test split.
  """
  digest = hashlib.sha256()
  digest.update(notes['pitch'].astype(np.int16).tobytes())
  digest.update(np.round(np.cumsum(notes['step'], dtype=np.float64) * 1000).astype(np.int64)
                .tobytes())
  digest.update(np.round(notes['duration'].astype(np.float64) * 1000).astype(np.int64).tobytes())
  return digest.hexdigest()


def split_for(fingerprint: str, ratios: dict[str, float]) -> str:
  """Deterministic split name for a piece, from its content fingerprint.

  ``ratios`` maps split names to weights (normalised here), e.g.
  ``{'train': 0.8, 'validation': 0.1, 'test': 0.1}``.
  """
  position = int(fingerprint[:15], 16) / 16**15
  total = sum(ratios.values())
  cumulative = 0.0
  for name, weight in ratios.items():
    cumulative += weight / total
    if position < cumulative:
      return name
  return list(ratios)[-1]
