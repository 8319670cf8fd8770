"""MIDI bytes -> a piece as note arrays (pitch, step, duration, velocity and the metre).

A piece is a "notes dict" of equal-length 1-D numpy arrays in onset order (ties broken by
pitch), one per ``constants.NOTE_FEATURES``: ``step`` is seconds since the previous onset (0 for
the first note), ``duration`` is seconds; ``pitch`` (0..127) and ``velocity`` (1..127) are int8;
``quarter_seconds``, ``bar_position`` and ``bar_quarters`` are float32, where the note falls in
the metre read from the file's ticks, tempo map and time signatures (``partita.metre``; zeros
for a piece without a grid). This is the representation every stage shares: preprocessing
writes it, the trainer reads it, serving writes MIDI from it.

Parsing uses symusic, far faster than pretty_midi (docs/design.md, "Dependency choices"). Rejections
raise :class:`partita.failures.RejectionError` with a stable reason code, which the pipeline
routes to dead letters.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import functools
import hashlib
import importlib.util
import warnings

import numpy as np
import symusic

from partita import constants, failures, metre, near_duplicates

SUSTAIN_CC = 64
# MIDI convention (and note_seq's): controller values >= 64 mean the pedal is down.
SUSTAIN_DOWN_MIN_VALUE = 64
# NoteSequence inputs need note-seq, setup.py's ``notesequence`` extra, which a plain install
# leaves out (setup.py says why).
NOTE_SEQ_MISSING = ("NoteSequence inputs need note-seq, which is not installed: install the "
                    "project's notesequence extra (pip install -e '.[notesequence]')")


@dataclasses.dataclass(frozen=True)
class ParseOptions:
  """What to keep from a MIDI file."""
  min_notes: int = 2
  max_notes: int = 2_000_000
  max_seconds: float = 4 * 3600.0
  # Average onsets per second above which a file's timing is implausible (a tempo of 1 us per
  # quarter note, say). Fast virtuoso piano music averages under 30.
  max_notes_per_second: float = 500.0
  apply_sustain: bool = True
  # Instrument selection; empty means every non-drum track. Track numbers count symusic's
  # tracks from 0: one per MIDI track, program and channel, in file order.
  programs: tuple[int, ...] = ()
  tracks: tuple[int, ...] = ()
  include_drums: bool = False

  def selects(self, index: int, track: symusic.core.TrackTick) -> bool:
    """Whether ``track``, the file's track at ``index``, is kept."""
    return ((self.include_drums or not track.is_drum)
            and (not self.programs or track.program in self.programs)
            and (not self.tracks or index in self.tracks))


def apply_sustain(start: np.ndarray, end: np.ndarray, pitch: np.ndarray,
                  cc_time: np.ndarray, cc_value: np.ndarray,
                  piece_end: float | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Applies the sustain pedal to one track's notes; returns ``(new_end, keep)``.

  Follows note_seq's ``apply_sustain_control_changes``, the reference a test compares against on
  a whole corpus:

  * a note released while the pedal is down sounds until the pedal is released;
  * while the pedal is down, an onset of a pitch ends every earlier note of that pitch that is
    still sounding, held or sustained: a key struck again is damped first;
  * notes of one pitch starting together under the pedal sound as one: only the last in track
    order is kept (``keep`` is False for the others);
  * a pedal still down at the end releases at ``piece_end``, the last note end or pedal event
    of the whole piece (default: of this track);
  * a pedal pressed and released at the same instant counts as released.
  """
  keep = np.ones(len(start), dtype=bool)
  if len(cc_time) == 0 or len(start) == 0:
    return end, keep
  downs, ups, last_change = _pedal_intervals(cc_time, cc_value)
  if len(downs) == 0:
    return end, keep
  if piece_end is None:
    piece_end = max(float(end.max()), last_change)

  def pedal_interval(t: np.ndarray) -> np.ndarray:
    """Index of the pedal-down interval [down, up) holding each time, or -1."""
    interval = np.searchsorted(downs, t, side='right') - 1
    inside = (interval >= 0) & (t < ups[np.maximum(interval, 0)])
    return np.where(inside, interval, -1)

  released_in = pedal_interval(end)
  sustained_end = np.where(released_in >= 0, np.minimum(ups[released_in], piece_end), end)
  damp_time = _damping_onsets(start, pitch, pedal_interval(start) >= 0)
  damped = damp_time < sustained_end
  new_end = np.where(damped, damp_time, sustained_end)
  keep = ~(damped & (damp_time == start))
  return new_end.astype(end.dtype), keep


def _pedal_intervals(cc_time: np.ndarray,
                     cc_value: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
  """The pedal's down intervals and the time of its last change of state, from one track's CC64.

  The intervals are ``[downs[i], ups[i])``; ``ups[i]`` is inf for a pedal never released.
  """
  # Pedal events at the same instant: the release wins, as in note_seq (it orders downs first).
  order = np.lexsort((cc_value < SUSTAIN_DOWN_MIN_VALUE, cc_time))
  is_down = cc_value[order] >= SUSTAIN_DOWN_MIN_VALUE
  times = cc_time[order]
  # Keep state changes only: repeated "down" messages do not start new pedal intervals.
  changed = np.concatenate([[True], is_down[1:] != is_down[:-1]])
  is_down, times = is_down[changed], times[changed]
  downs = times[is_down]
  down_positions = np.flatnonzero(is_down)
  ups = np.full(len(downs), np.inf)  # a pedal never released stays down to the end
  has_up = down_positions + 1 < len(times)
  ups[has_up] = times[down_positions[has_up] + 1]
  return downs, ups, float(times.max())


def _damping_onsets(start: np.ndarray, pitch: np.ndarray,
                    under_pedal: np.ndarray) -> np.ndarray:
  """Each note's damping onset, or inf.

  The first later onset of its pitch (at the same time: later in track order) that happens while
  the pedal is down (``under_pedal``, per note).

  Found in one backward pass over the notes sorted by (pitch, onset, track order).
  """
  count = len(start)
  by_pitch = np.lexsort((np.arange(count), start, pitch))
  sorted_pitch, sorted_start = pitch[by_pitch], start[by_pitch]
  under_pedal_index = np.where(under_pedal[by_pitch], np.arange(count), count)
  first_at_or_after = np.minimum.accumulate(under_pedal_index[::-1])[::-1]
  following = np.append(first_at_or_after[1:], count)
  same_pitch = following < count
  same_pitch[same_pitch] = sorted_pitch[following[same_pitch]] == sorted_pitch[same_pitch]
  damp_time = np.full(count, np.inf)
  damp_time[by_pitch[same_pitch]] = sorted_start[following[same_pitch]]
  return damp_time


def parse_midi(data: bytes, options: ParseOptions = ParseOptions()) -> dict[str, np.ndarray]:
  """Parses MIDI bytes into a notes dict of the selected tracks merged.

  All non-drum tracks are selected by default.

  Raises:
    failures.RejectionError: the bytes are not a usable piece (reason codes: empty, not_midi,
      smpte_timing, parse_error, bad_timing, no_tracks, drums_only, no_notes, too_many_notes,
      too_long, too_few_notes).
  """
  if not data:
    raise failures.RejectionError('empty', 'file is empty')
  if not data.startswith(b'MThd'):
    raise failures.RejectionError('not_midi', 'file does not start with a MIDI header (MThd)')
  if len(data) >= 14 and data[12] & 0x80:  # MThd's division: frames per second, not quarters
    raise failures.RejectionError('smpte_timing', 'SMPTE time division (frames per second) is not '
                                  'supported; only ticks per quarter note')
  try:
    score = symusic.Score.from_midi(data)
  except Exception as e:  # symusic raises RuntimeError and others for corrupt files.
    raise failures.RejectionError('parse_error', f'{type(e).__name__}: {e}') from e
  if score.ticks_per_quarter <= 0:
    raise failures.RejectionError('bad_timing', f'time division is {score.ticks_per_quarter}')
  if len(data) >= 12 and data[10:12] == b'\x00\x00':  # MThd's track count
    raise failures.RejectionError('no_tracks', 'the MIDI header declares zero tracks')
  if score.note_num() and all(t.is_drum for t in score.tracks if len(t.notes)):
    if not options.include_drums:
      raise failures.RejectionError('drums_only', 'every note is on a drum track')
  selected = [i for i, t in enumerate(score.tracks) if options.selects(i, t) and len(t.notes)]
  if not selected:
    selection = ' of the selected programs or tracks' if options.programs or options.tracks else ''
    raise failures.RejectionError('no_notes', f'no notes in any track{selection}')
  num_notes = sum(len(score.tracks[i].notes) for i in selected)
  if num_notes > options.max_notes:
    raise failures.RejectionError('too_many_notes',
                                  f'{num_notes} notes > limit {options.max_notes}')
  in_seconds = score.to('second')
  tracks = [_track_arrays(in_seconds.tracks[i]) for i in selected]
  onset_ticks = np.concatenate([score.tracks[i].notes.numpy()['time'] for i in selected])
  return piece_from_tracks(tracks, options,
                           functools.partial(_onset_metre, score, onset_ticks.astype(np.int64)))


def parse_note_sequence(data: bytes,
                        options: ParseOptions = ParseOptions()) -> dict[str, np.ndarray]:
  """Parses a serialized ``note_seq.NoteSequence`` into a notes dict.

  NoteSequence is Magenta's format (e.g. the MAESTRO TFRecords); the selection and checks are the
  same as :func:`parse_midi`'s.

  A NoteSequence's ``instrument`` numbers play the part of MIDI tracks.

  Raises:
    failures.RejectionError: as for :func:`parse_midi`, plus ``not_note_sequence``.
  """
  music_pb2 = note_seq_protos()
  try:
    sequence = music_pb2.NoteSequence.FromString(data)
  except Exception as e:  # protobuf's DecodeError
    raise failures.RejectionError('not_note_sequence', f'{type(e).__name__}: {e}') from e
  if not sequence.notes:
    raise failures.RejectionError('no_notes', 'the NoteSequence has no notes')
  if all(note.is_drum for note in sequence.notes) and not options.include_drums:
    raise failures.RejectionError('drums_only', 'every note is a drum note')
  notes, controls = {}, {}
  for note in sequence.notes:
    if ((options.include_drums or not note.is_drum)
        and (not options.programs or note.program in options.programs)
        and (not options.tracks or note.instrument in options.tracks)):
      notes.setdefault(note.instrument, []).append(
          (note.start_time, note.end_time, note.pitch, note.velocity))
  if not notes:
    raise failures.RejectionError('no_notes', 'no notes of the selected programs or tracks')
  num_notes = sum(len(n) for n in notes.values())
  if num_notes > options.max_notes:
    raise failures.RejectionError('too_many_notes',
                                  f'{num_notes} notes > limit {options.max_notes}')
  for control in sequence.control_changes:
    if control.control_number == SUSTAIN_CC:
      controls.setdefault(control.instrument, []).append((control.time, control.control_value))
  tracks = []
  for instrument, rows in sorted(notes.items()):
    start, end, pitch, velocity = (np.array(column) for column in zip(*rows, strict=True))
    pedal = np.array(controls.get(instrument, []), dtype=np.float64).reshape(-1, 2)
    # A NoteSequence has no ticks: no grid (partita.metre), whatever its tempos say.
    tracks.append((start.astype(np.float64), end.astype(np.float64), pitch.astype(np.int64),
                   velocity.astype(np.int64), pedal[:, 0], pedal[:, 1].astype(np.int64)))
  return piece_from_tracks(tracks, options)


def note_sequence_label(data: bytes, field: str) -> str:
  """The first value of a serialized NoteSequence's ``sequence_metadata`` field ``field``.

  ``field`` is e.g. ``composers``, ``genre`` or ``artist``; '' when it has none.
  """
  metadata = note_seq_protos().NoteSequence.FromString(data).sequence_metadata
  if field not in metadata.DESCRIPTOR.fields_by_name:
    return ''
  value = getattr(metadata, field)
  return value if isinstance(value, str) else (value[0] if len(value) else '')


def note_seq_installed() -> bool:
  """Whether note-seq, which NoteSequence inputs need, can be imported (without importing it)."""
  try:
    return importlib.util.find_spec('note_seq') is not None
  except ValueError:  # sys.modules holds None for it, which makes every import of it fail
    return False


def note_seq_protos():
  """note_seq's ``music_pb2``, imported without its side effect on pretty_midi.

  Importing note_seq sets ``pretty_midi.pretty_midi.MAX_TICK = 1e10`` for the whole process,
  which disables pretty_midi's guard against corrupt files that exhaust memory; the guard is
  restored here.

  Raises:
    ModuleNotFoundError: note-seq is not installed (:data:`NOTE_SEQ_MISSING`).
  """
  import pretty_midi
  max_tick = pretty_midi.pretty_midi.MAX_TICK
  try:
    with warnings.catch_warnings():  # pydub, imported by note_seq, warns that ffmpeg is missing
      warnings.simplefilter('ignore')
      from note_seq.protobuf import music_pb2
  except ModuleNotFoundError as e:
    if (e.name or '').partition('.')[0] != 'note_seq':  # one of its own dependencies
      raise
    raise ModuleNotFoundError(NOTE_SEQ_MISSING, name=e.name) from e
  finally:
    pretty_midi.pretty_midi.MAX_TICK = max_tick
  return music_pb2


def piece_from_tracks(
    tracks: list[tuple[np.ndarray, ...]], options: ParseOptions,
    onset_metre: Callable[[np.ndarray], dict[str, np.ndarray]] | None = None,
) -> dict[str, np.ndarray]:
  """Merges tracks of note and pedal arrays into a checked notes dict, sustain applied per track.

  Each track is ``(start, end, pitch, velocity, pedal_time, pedal_value)`` arrays (times in
  seconds); the sustain pedal is applied per track. ``onset_metre`` maps positions of notes
  in the tracks (concatenated in that order) to their metre features (:func:`_onset_metre`),
  called once, for the notes kept in the piece's order; None for a piece with no ticks (no
  grid).
  """
  start, end, pitch, velocity, pedal_time, _ = (
      np.concatenate(arrays) for arrays in zip(*tracks, strict=True))
  if not (np.all(np.isfinite(start)) and np.all(np.isfinite(end))
          and np.all(np.isfinite(pedal_time))):
    raise failures.RejectionError('bad_timing', 'non-finite note or pedal times')
  if start.min() < 0 or np.any(end < start):
    raise failures.RejectionError('bad_timing', 'negative note times or durations')
  kept = None
  if options.apply_sustain and len(pedal_time):
    # One pedal-release time for the whole piece, as note_seq does.
    piece_end = max(float(end.max()), float(pedal_time.max()))
    ends, keeps = zip(*(apply_sustain(t_start, t_end, t_pitch, t_pedal_time, t_pedal_value,
                                      piece_end)
                        for t_start, t_end, t_pitch, _, t_pedal_time, t_pedal_value in tracks),
                      strict=True)
    keep = np.concatenate(keeps)
    start, end = start[keep], np.concatenate(ends)[keep]
    pitch, velocity = pitch[keep], velocity[keep]
    kept = np.flatnonzero(keep)

  if end.max() > options.max_seconds:
    raise failures.RejectionError('too_long',
                                  f'{end.max():.0f} s > limit {options.max_seconds:.0f} s')
  if len(start) < options.min_notes:
    raise failures.RejectionError('too_few_notes',
                                  f'{len(start)} notes < minimum {options.min_notes}')
  seconds = float(end.max() - start.min())
  if len(start) > options.max_notes_per_second * max(seconds, 1.0):
    raise failures.RejectionError('bad_timing', f'{len(start)} notes in {seconds:.3g} s: the tempo '
                                  'or time division is implausible')

  order = onset_order(start, pitch)
  in_tracks = order if kept is None else kept[order]
  start = start[order]
  step = np.zeros(len(start), np.float32)
  step[1:] = start[1:] - start[:-1]
  return {
      'pitch': np.clip(pitch[order], 0, constants.PITCHES - 1).astype(np.int8),
      'step': step,
      'duration': (end[order] - start).astype(np.float32),
      'velocity': np.clip(velocity[order], 1, constants.MAX_VELOCITY).astype(np.int8),
      **(metre.no_metre(len(order)) if onset_metre is None else onset_metre(in_tracks)),
  }


def onset_order(start: np.ndarray, pitch: np.ndarray) -> np.ndarray:
  """The notes' order by onset, then pitch, then position: ``np.lexsort((pitch, start))``.

  Twice as fast on notes that come as tracks in time order: one stable sort by onset, then
  one of the nearly sorted (onset group, pitch) keys. ``pitch`` holds integers (MIDI's 0-127;
  a NoteSequence's int32), so the key cannot overflow.
  """
  by_onset = np.argsort(start, kind='stable')
  onsets = start[by_onset]
  group = np.concatenate([[0], np.cumsum(onsets[1:] != onsets[:-1])])
  low = int(pitch.min())
  key = group * (int(pitch.max()) - low + 1) + (pitch[by_onset] - low)
  return by_onset[np.argsort(key, kind='stable')]


def _track_arrays(track: symusic.core.TrackSecond) -> tuple[np.ndarray, ...]:
  """(start, end, pitch, velocity, pedal_time, pedal_value) of one track, times in seconds."""
  notes = track.notes.numpy()
  start = notes['time'].astype(np.float64)
  controls = track.controls.numpy()
  is_pedal = controls['number'] == SUSTAIN_CC
  return (start, start + notes['duration'].astype(np.float64), notes['pitch'].astype(np.int64),
          notes['velocity'].astype(np.int64), controls['time'][is_pedal].astype(np.float64),
          controls['value'][is_pedal].astype(np.int64))


def _onset_metre(score: symusic.core.ScoreTick, onset_ticks: np.ndarray,
                 notes: np.ndarray) -> dict[str, np.ndarray]:
  """The metre features (``partita.metre``) of the notes at ``notes``, indices of ``onset_ticks``.

  From the score's ticks, tempo map and time signatures; each value depends only on its note's
  onset. The tempos and bars are read only for a piece on its grid.
  """
  ticks = onset_ticks[notes]
  on_grid = metre.on_grid(ticks / score.ticks_per_quarter)
  if not metre.gridded(on_grid):
    return metre.no_metre(len(ticks))
  tempos = score.tempos.numpy()
  signatures = score.time_signatures.numpy()
  position, bar_quarters = metre.bar_positions(
      ticks, score.ticks_per_quarter, signatures['time'].astype(np.int64),
      signatures['numerator'].astype(np.int64), signatures['denominator'].astype(np.int64))
  return metre.piece_metre(
      metre.tempo_at(ticks, tempos['time'].astype(np.int64), tempos['mspq'] / 1e6),
      position, bar_quarters, on_grid)


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


def fingerprint_size_and_sketch(
    parse, sketched: bool, data: bytes, options: ParseOptions,
    keep=None) -> tuple[str, int, near_duplicates.Sketch | None, str]:
  """``parse(data, options)``'s :func:`content_fingerprint`, number of notes, sketch and place.

  The sketch (:func:`partita.near_duplicates.sketch`) is None unless ``sketched``, or when the
  piece has too few shingles. All that the dedup and the near-duplicate search need of a piece,
  so a parse in a child process sends back a few hundred bytes, not the notes. ``keep``, if
  given, is called with the piece and returns where it kept it (``partita.kept_pieces.keep``),
  the place returned; else the place is ''.

  Raises:
    failures.RejectionError: as ``parse`` does.
  """
  piece = parse(data, options)
  place = keep(piece) if keep else ''
  sketch = near_duplicates.sketch(piece) if sketched else None
  return content_fingerprint(piece), len(piece['pitch']), sketch, place


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
