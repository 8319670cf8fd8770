"""Tests for partita.notes (MIDI bytes -> notes dict) and partita.contract (chunks)."""

from __future__ import annotations

import hashlib
import pickle

import midi_builders
import numpy as np
import pytest

from partita import constants, contract, failures
from partita import notes as notes_lib

TOLERANCE = 1e-4


def assert_notes(piece, pitch, step, duration, velocity):
  """Exact integer features, float features within TOLERANCE, and the project's dtypes."""
  assert set(piece) == set(constants.NOTE_FEATURES)
  np.testing.assert_array_equal(piece['pitch'], pitch)
  np.testing.assert_allclose(piece['step'], step, rtol=0, atol=TOLERANCE)
  np.testing.assert_allclose(piece['duration'], duration, rtol=0, atol=TOLERANCE)
  np.testing.assert_array_equal(piece['velocity'], velocity)
  assert piece['step'].dtype == np.float32 and piece['duration'].dtype == np.float32
  assert piece['pitch'].dtype.kind == 'i' and piece['velocity'].dtype.kind == 'i'


def rejection(data: bytes, options: notes_lib.ParseOptions | None = None) -> str:
  with pytest.raises(failures.RejectionError) as info:
    notes_lib.parse_midi(data, options or notes_lib.ParseOptions())
  return info.value.reason


def test_a_rejection_carries_its_reason_and_detail_and_survives_pickling():
  with pytest.raises(failures.RejectionError) as info:
    notes_lib.parse_midi(b'not midi')
  rejected = info.value
  assert (rejected.reason, rejected.detail) == (
      'not_midi', 'file does not start with a MIDI header (MThd)')
  assert str(rejected) == rejected.detail  # the message is the detail; the reason is a code
  copy = pickle.loads(pickle.dumps(rejected))
  assert (type(copy), copy.reason, copy.detail) == (
      failures.RejectionError, 'not_midi', rejected.detail)
  assert failures.dead_letter_record('a.mid', rejected.reason, rejected.detail) == {
      'input': 'a.mid', 'reason': 'not_midi', 'detail': rejected.detail}


# --- parsing ---------------------------------------------------------------------------------


def test_parse_melody_exact_features():
  data = midi_builders.midi_bytes([(60, 0.0, 0.5, 80), (64, 0.5, 0.75, 90), (67, 1.25, 2.25, 100)])
  assert_notes(notes_lib.parse_midi(data), pitch=[60, 64, 67], step=[0.0, 0.5, 0.75],
               duration=[0.5, 0.25, 1.0], velocity=[80, 90, 100])


def test_step_is_relative_to_first_onset_not_time_zero():
  data = midi_builders.midi_bytes([(62, 1.5, 2.0, 70), (65, 2.0, 2.5, 71)])
  assert_notes(notes_lib.parse_midi(data), pitch=[62, 65], step=[0.0, 0.5],
               duration=[0.5, 0.5], velocity=[70, 71])


def test_chord_notes_sorted_by_pitch_within_an_onset():
  data = midi_builders.midi_bytes([(67, 0.0, 1.0, 50), (60, 0.0, 0.5, 60), (64, 0.0, 0.25, 70),
                                   (59, 1.0, 1.5, 80), (55, 1.0, 2.0, 90)])
  assert_notes(notes_lib.parse_midi(data), pitch=[60, 64, 67, 55, 59],
               step=[0.0, 0.0, 0.0, 1.0, 0.0], duration=[0.5, 0.25, 1.0, 1.0, 0.5],
               velocity=[60, 70, 50, 90, 80])


@pytest.mark.parametrize('low, high', [(0, 128), (-2**31, 2**31 - 1)])
def test_onset_order_is_lexsort_by_onset_then_pitch_then_position(low, high):
  rng = np.random.default_rng(0)
  # Three "tracks" in time order, with shared onsets, repeated pitches and a NoteSequence's
  # int32 range of pitches.
  start = np.concatenate([np.sort(rng.integers(0, 40, 50)) / 4 for _ in range(3)])
  pitch = rng.integers(low, high, len(start), dtype=np.int64)
  pitch[::7] = pitch[0]
  np.testing.assert_array_equal(notes_lib.onset_order(start, pitch),
                                np.lexsort((pitch, start)))


def test_non_drum_tracks_merged_sorted_and_drums_ignored():
  data = midi_builders.midi_bytes(tracks=[
      midi_builders.Track([(72, 0.0, 0.5, 10), (74, 1.0, 1.5, 11)], program=0, name='right hand'),
      midi_builders.Track([(48, 0.0, 1.0, 20), (50, 0.5, 1.0, 21)], program=32, name='left hand'),
      midi_builders.Track([(36, 0.0, 0.125, 127), (38, 0.25, 0.375, 127)], drum=True, name='drums'),
  ])
  assert_notes(notes_lib.parse_midi(data), pitch=[48, 72, 50, 74], step=[0.0, 0.0, 0.5, 0.5],
               duration=[1.0, 0.5, 0.5, 0.5], velocity=[20, 10, 21, 11])


DRUMS = [(36, 0.0, 0.125, 100), (38, 0.5, 0.625, 100), (42, 1.0, 1.125, 100)]


def test_drums_only_file_is_rejected_unless_drums_are_included():
  data = midi_builders.midi_bytes(DRUMS, drum=True)
  assert rejection(data) == 'drums_only'
  options = notes_lib.ParseOptions(include_drums=True)
  assert notes_lib.parse_midi(data, options)['pitch'].tolist() == [36, 38, 42]


def test_selects_tracks_and_programs():
  data = midi_builders.midi_bytes(tracks=[
      midi_builders.Track([(60, 0.0, 0.5, 100)], program=0),   # track 0: piano
      midi_builders.Track([(48, 0.0, 0.5, 90)], program=42),   # track 1: cello
      midi_builders.Track(DRUMS, drum=True),                   # track 2: drums
      midi_builders.Track([(72, 0.25, 0.5, 80)], program=42),  # track 3: cello
  ])
  def pitches(**selection):
    options = notes_lib.ParseOptions(min_notes=1, **selection)
    return notes_lib.parse_midi(data, options)['pitch'].tolist()

  assert pitches() == [48, 60, 72]
  assert pitches(programs=(42,)) == [48, 72]
  assert pitches(tracks=(0, 3)) == [60, 72]
  assert pitches(programs=(42,), tracks=(0, 1)) == [48]
  assert pitches(include_drums=True) == [36, 48, 60, 72, 38, 42]
  assert pitches(tracks=(2,), include_drums=True) == [36, 38, 42]
  with pytest.raises(failures.RejectionError) as info:
    notes_lib.parse_midi(data, notes_lib.ParseOptions(programs=(5,)))
  assert (info.value.reason, info.value.detail) == (
      'no_notes', 'no notes in any track of the selected programs or tracks')


def test_tempo_does_not_change_times_in_seconds():
  melody = [(60, 0.0, 0.5, 80), (62, 0.5, 1.25, 81), (64, 1.25, 1.5, 82)]
  slow = notes_lib.parse_midi(midi_builders.midi_bytes(melody, tempo_bpm=100.0))
  assert_notes(slow, pitch=[60, 62, 64], step=[0.0, 0.5, 0.75], duration=[0.5, 0.75, 0.25],
               velocity=[80, 81, 82])


# --- sustain pedal ---------------------------------------------------------------------------


def test_sustain_extends_cuts_and_leaves_notes_released_after_pedal_up():
  # Pedal down 0.25 .. 1.5.
  data = midi_builders.midi_bytes([
      (60, 0.0, 0.5, 100),   # released under the pedal: extended to 1.5 ...
      (64, 0.0, 0.5, 100),   # ... but this one is cut at the next onset of 64 (1.0).
      (64, 1.0, 1.25, 100),  # released under the pedal: extended to 1.5.
      (67, 0.5, 2.0, 100),   # released after the pedal-up: unchanged.
      (72, 0.0, 0.125, 100),  # released before the pedal-down: unchanged.
  ], sustain=[(0.25, 127), (1.5, 0)])
  assert_notes(notes_lib.parse_midi(data), pitch=[60, 64, 72, 67, 64],
               step=[0.0, 0.0, 0.0, 0.5, 0.5], duration=[1.5, 1.0, 0.125, 1.5, 0.5],
               velocity=[100] * 5)


def test_sustain_still_down_at_end_releases_at_last_note_end():
  data = midi_builders.midi_bytes([(60, 0.0, 0.5, 90), (62, 1.0, 3.0, 90)], sustain=[(0.25, 100)])
  assert_notes(notes_lib.parse_midi(data), pitch=[60, 62], step=[0.0, 1.0],
               duration=[3.0, 2.0], velocity=[90, 90])


def test_sustain_values_below_64_are_pedal_up():
  data = midi_builders.midi_bytes([(60, 0.0, 0.5, 90), (62, 1.0, 1.5, 90)],
                                  sustain=[(0.25, 63), (1.25, 64), (1.75, 10)])
  assert_notes(notes_lib.parse_midi(data), pitch=[60, 62], step=[0.0, 1.0],
               duration=[0.5, 0.75], velocity=[90, 90])


def test_apply_sustain_false_leaves_durations_alone():
  data = midi_builders.midi_bytes([(60, 0.0, 0.5, 100), (64, 0.5, 0.75, 100)],
                                  sustain=[(0.25, 127), (2.0, 0)])
  options = notes_lib.ParseOptions(apply_sustain=False)
  assert_notes(notes_lib.parse_midi(data, options), pitch=[60, 64], step=[0.0, 0.5],
               duration=[0.5, 0.25], velocity=[100, 100])
  assert_notes(notes_lib.parse_midi(data), pitch=[60, 64], step=[0.0, 0.5],
               duration=[2.0, 1.5], velocity=[100, 100])


def test_sustain_applies_per_track():
  data = midi_builders.midi_bytes(tracks=[
      midi_builders.Track([(60, 0.0, 0.5, 100)], sustain=[(0.25, 127), (2.0, 0)]),
      midi_builders.Track([(48, 0.0, 0.5, 100)], program=33),
  ])
  assert_notes(notes_lib.parse_midi(data), pitch=[48, 60], step=[0.0, 0.0],
               duration=[0.5, 2.0], velocity=[100, 100])


def test_apply_sustain_on_arrays():
  start = np.array([0.0, 0.0, 1.0, 0.5, 0.0, 3.0, 4.0])
  end = np.array([0.5, 0.5, 1.25, 2.0, 0.125, 3.5, 4.5])
  pitch = np.array([60, 64, 64, 67, 72, 60, 62])
  # Down 0.25 (repeated at 0.75: not a new interval) .. up 1.5; down again 3.25 to the end.
  cc_time = np.array([0.75, 0.25, 1.5, 3.25, 1.6])
  cc_value = np.array([100, 127, 0, 64, 0])
  new_end, keep = notes_lib.apply_sustain(start, end, pitch, cc_time, cc_value)
  np.testing.assert_array_equal(new_end, [1.5, 1.0, 1.5, 2.0, 0.125, 4.5, 4.5])
  assert new_end.dtype == end.dtype and keep.all()
  # Inputs are not modified; no pedal events or no pedal-down leaves ends as they are.
  np.testing.assert_array_equal(end, [0.5, 0.5, 1.25, 2.0, 0.125, 3.5, 4.5])
  for no_pedal in ((np.array([]), np.array([], dtype=np.int64)),
                   (np.array([0.1, 1.0]), np.array([0, 10]))):
    unchanged, keep = notes_lib.apply_sustain(start, end, pitch, *no_pedal)
    np.testing.assert_array_equal(unchanged, end)
    assert keep.all()


def sustained(start, end, pitch, pedal, piece_end=None):
  new_end, keep = notes_lib.apply_sustain(
      np.array(start, dtype=float), np.array(end, dtype=float), np.array(pitch),
      np.array([t for t, _ in pedal], dtype=float), np.array([v for _, v in pedal]), piece_end)
  return new_end.tolist(), keep.tolist()


def test_apply_sustain_repeated_pitch_damps_sustained_and_held_notes():
  # Released under a pedal held 0 .. 10: each note sounds until the next onset of its pitch.
  assert sustained([0.0, 1.0, 2.0], [0.5, 1.5, 2.5], [60, 60, 60], [(0.0, 127), (10.0, 0)]) == (
      [1.0, 2.0, 10.0], [True] * 3)
  # A note still held when its key is struck again under the pedal is damped too ...
  assert sustained([0.0, 2.0], [5.0, 3.0], [60, 60], [(1.0, 127), (4.0, 0)]) == (
      [2.0, 4.0], [True, True])
  # ... but not when the pedal is up at the new onset.
  assert sustained([0.0, 2.0], [5.0, 3.0], [60, 60], [(3.0, 127), (4.0, 0)]) == (
      [5.0, 4.0], [True, True])


def test_apply_sustain_merges_simultaneous_repeats_under_the_pedal():
  # Two notes of pitch 60 at 0.0 under the pedal sound as one: the later in track order.
  assert sustained([0.0, 0.0, 0.0], [1.0, 2.0, 1.0], [60, 60, 64], [(0.0, 127), (3.0, 0)]) == (
      [0.0, 3.0, 3.0], [False, True, True])
  # With the pedal up both stay, unchanged.
  assert sustained([0.0, 0.0], [1.0, 2.0], [60, 60], [(0.5, 127), (0.75, 0)]) == (
      [1.0, 2.0], [True, True])


def test_apply_sustain_pedal_events_at_one_instant_count_as_released():
  # Up and down at 0.0 in either file order: the pedal is up, so nothing is extended
  # until the next down at 2.0.
  for pedal in ([(0.0, 0), (0.0, 127)], [(0.0, 127), (0.0, 0)]):
    assert sustained([0.0, 1.0], [0.5, 2.5], [60, 62], pedal + [(2.0, 127), (3.0, 0)]) == (
        [0.5, 3.0], [True, True])


def test_apply_sustain_pedal_held_to_the_end_releases_at_piece_end():
  assert sustained([0.0], [0.5], [60], [(0.25, 127)]) == ([0.5], [True])  # the track's end
  assert sustained([0.0], [0.5], [60], [(0.25, 127)], piece_end=7.0) == ([7.0], [True])


# --- rejections ------------------------------------------------------------------------------

MELODY = [(60, 0.0, 0.5, 80), (62, 0.5, 1.0, 80), (64, 1.0, 2.0, 80)]


def test_rejects_empty_files_and_bytes_that_are_not_midi():
  assert rejection(b'') == 'empty'
  assert rejection(b'\x00') == 'not_midi'
  assert rejection(b'RIFF\x00\x00\x00\x00WAVEfmt ') == 'not_midi'


def test_rejects_truncated_midi_as_parse_error():
  data = midi_builders.midi_bytes(MELODY)
  assert len(notes_lib.parse_midi(data)['pitch']) == 3  # the whole file is fine
  assert rejection(data[:len(data) // 2]) == 'parse_error'
  assert rejection(data[:10]) == 'parse_error'


def test_rejects_file_without_notes_or_without_tracks():
  assert rejection(midi_builders.midi_bytes([])) == 'no_notes'
  assert rejection(midi_builders.ZERO_TRACKS) == 'no_tracks'


def test_absurd_tick_and_tempo_values_are_rejected_without_exhausting_memory():
  with pytest.raises(failures.RejectionError) as info:
    notes_lib.parse_midi(midi_builders.HUGE_DELTA_TIMES)
  assert info.value.reason == 'too_long'
  with pytest.raises(failures.RejectionError) as info:
    notes_lib.parse_midi(midi_builders.TEMPO_1US)
  assert info.value.reason == 'bad_timing'
  assert info.value.detail.startswith('1000 notes in 0.001 s')


def test_rejects_too_few_and_too_many_notes():
  data = midi_builders.midi_bytes(MELODY)
  assert rejection(data, notes_lib.ParseOptions(min_notes=4)) == 'too_few_notes'
  assert len(notes_lib.parse_midi(data, notes_lib.ParseOptions(min_notes=3))['pitch']) == 3
  assert rejection(data, notes_lib.ParseOptions(max_notes=2)) == 'too_many_notes'
  assert len(notes_lib.parse_midi(data, notes_lib.ParseOptions(max_notes=3))['pitch']) == 3
  # Drum notes do not count.
  with_drums = midi_builders.midi_bytes(tracks=[
      midi_builders.Track(MELODY), midi_builders.Track([(36, 0.0, 0.1, 90)] * 5, drum=True)])
  assert len(notes_lib.parse_midi(with_drums, notes_lib.ParseOptions(max_notes=3))['pitch']) == 3


def test_rejects_too_long():
  data = midi_builders.midi_bytes(MELODY)  # ends at 2.0 s
  assert rejection(data, notes_lib.ParseOptions(max_seconds=1.5)) == 'too_long'
  assert len(notes_lib.parse_midi(data, notes_lib.ParseOptions(max_seconds=2.5))['pitch']) == 3


def test_rejects_time_division_zero_as_bad_timing():
  # Note on C4 at tick 0, note off 96 ticks later; then the same again.
  events = b'\x00\x90\x3c\x40\x60\x80\x3c\x40\x00\x90\x3e\x40\x60\x80\x3e\x40'
  with pytest.raises(failures.RejectionError) as info:
    notes_lib.parse_midi(midi_builders.smf_bytes(0, events))
  assert (info.value.reason, info.value.detail) == ('bad_timing', 'time division is 0')
  # The same bytes with a valid division parse: 96 ticks = one quarter = 0.5 s at 120 bpm.
  assert_notes(notes_lib.parse_midi(midi_builders.smf_bytes(96, events)), pitch=[60, 62],
               step=[0.0, 0.5], duration=[0.5, 0.5], velocity=[64, 64])


def test_rejection_carries_reason_and_detail():
  with pytest.raises(failures.RejectionError) as info:
    notes_lib.parse_midi(midi_builders.midi_bytes(MELODY), notes_lib.ParseOptions(min_notes=5))
  assert info.value.reason == 'too_few_notes'
  assert info.value.detail == '3 notes < minimum 5'
  assert str(info.value) == '3 notes < minimum 5'  # the reason is a code beside the message


# --- fingerprint and split -------------------------------------------------------------------


def test_fingerprint_ignores_track_layout_names_programs_and_tempo():
  one_track = midi_builders.midi_bytes(MELODY, name='piano')
  two_tracks = midi_builders.midi_bytes(tracks=[
      midi_builders.Track(MELODY[:1], name='a', program=40),
      midi_builders.Track(MELODY[1:], name='b', program=0)])
  slower = midi_builders.midi_bytes(MELODY, tempo_bpm=100.0, name='other name')
  assert len({one_track, two_tracks, slower}) == 3
  fingerprints = {notes_lib.content_fingerprint(notes_lib.parse_midi(d))
                  for d in (one_track, two_tracks, slower)}
  assert len(fingerprints) == 1
  assert fingerprints == {notes_lib.content_fingerprint(midi_builders.expected_notes(MELODY))}


def test_fingerprint_changes_with_pitch_onset_and_duration():
  base = notes_lib.content_fingerprint(notes_lib.parse_midi(midi_builders.midi_bytes(MELODY)))
  variants = [
      [(61, 0.0, 0.5, 80)] + MELODY[1:],  # pitch
      [MELODY[0], (62, 0.625, 1.0, 80), MELODY[2]],  # onset
      MELODY[:2] + [(64, 1.0, 2.5, 80)],  # duration
  ]
  others = {notes_lib.content_fingerprint(notes_lib.parse_midi(midi_builders.midi_bytes(v)))
            for v in variants}
  assert len(others) == 3 and base not in others
  assert len(base) == 64


def test_fingerprint_is_stable_under_sub_millisecond_noise():
  # Times count to the millisecond (onsets off by <= 0.3 ms and durations by 0.4 ms are equal);
  # velocities are not part of the content.
  piece = midi_builders.expected_notes(MELODY)
  noisy = dict(piece, step=piece['step'] + np.float32(1e-4),
               duration=piece['duration'] - np.float32(4e-4),
               velocity=piece['velocity'] + 1)
  assert notes_lib.content_fingerprint(noisy) == notes_lib.content_fingerprint(piece)
  two_ms_later = dict(piece, step=piece['step'] + np.array([0, 0, 2e-3], dtype=np.float32))
  assert notes_lib.content_fingerprint(two_ms_later) != notes_lib.content_fingerprint(piece)


def test_split_for_is_deterministic_and_follows_boundaries():
  ratios = {'train': 0.8, 'validation': 0.1, 'test': 0.1}
  # The position in [0, 1) is the first 15 hex digits as a fraction.
  assert notes_lib.split_for('0' * 64, ratios) == 'train'
  assert notes_lib.split_for('c' + '0' * 63, ratios) == 'train'  # 0.75
  assert notes_lib.split_for('d' + '0' * 63, ratios) == 'validation'  # 0.8125
  assert notes_lib.split_for('e' + '0' * 63, ratios) == 'validation'  # 0.875
  assert notes_lib.split_for('f' + '0' * 63, ratios) == 'test'  # 0.9375
  assert notes_lib.split_for('f' * 64, ratios) == 'test'
  # Weights are normalised.
  assert notes_lib.split_for('7' + '0' * 63, {'a': 1, 'b': 1}) == 'a'  # 0.4375
  assert notes_lib.split_for('8' + '0' * 63, {'a': 1, 'b': 1}) == 'b'  # 0.5
  fingerprint = hashlib.sha256(b'piece').hexdigest()
  assert len({notes_lib.split_for(fingerprint, ratios) for _ in range(5)}) == 1


def test_split_for_respects_ratios_over_many_fingerprints():
  ratios = {'train': 0.8, 'validation': 0.1, 'test': 0.1}
  names = [notes_lib.split_for(hashlib.sha256(str(i).encode()).hexdigest(), ratios)
           for i in range(10_000)]
  for name, ratio in ratios.items():
    assert abs(names.count(name) / len(names) - ratio) < 0.02, name
  assert set(names) == set(ratios)


# --- contract: chunks ------------------------------------------------------------------------


def test_chunk_bounds_exact():
  assert contract.chunk_bounds(10, window_length=3, stride=4) == [(0, 7), (4, 10)]
  assert contract.chunk_bounds(11, window_length=3, stride=4) == [(0, 7), (4, 11)]
  assert contract.chunk_bounds(12, window_length=3, stride=4) == [(0, 7), (4, 11), (8, 12)]
  assert contract.chunk_bounds(4, window_length=3, stride=4) == [(0, 4)]


@pytest.mark.parametrize('num_notes', [0, 1, 3])
def test_no_chunks_without_a_window(num_notes):
  assert contract.chunk_bounds(num_notes, window_length=3, stride=4) == []
  assert contract.num_windows(num_notes, 3) == 0
  if num_notes:
    piece = midi_builders.expected_notes(midi_builders.random_melody(0, num_notes))
  else:
    piece = {name: np.zeros(0) for name in constants.NOTE_FEATURES}
  assert contract.chunks(piece, window_length=3, stride=4) == []


@pytest.mark.parametrize('num_notes', range(1, 40))
@pytest.mark.parametrize('window_length,stride', [(3, 4), (1, 1), (5, 2), (8, 5), (4, 64)])
def test_every_target_is_covered_exactly_once(num_notes, window_length, stride):
  targets = []
  for start, end in contract.chunk_bounds(num_notes, window_length, stride):
    assert 0 <= start < end <= num_notes and end - start <= stride + window_length
    # Window i of a chunk: inputs [start + i, start + i + window_length), target right after.
    targets += [start + i + window_length for i in range(end - start - window_length)]
  assert sorted(targets) == list(range(window_length, num_notes))
  assert len(targets) == contract.num_windows(num_notes, window_length)


def test_chunks_slice_every_feature():
  piece = midi_builders.expected_notes(midi_builders.random_melody(3, 10))
  chunks = contract.chunks(piece, window_length=3, stride=4)
  assert len(chunks) == 2
  for chunk, (start, end) in zip(chunks, [(0, 7), (4, 10)], strict=True):
    assert set(chunk) == set(constants.NOTE_FEATURES)
    for name in constants.NOTE_FEATURES:
      np.testing.assert_array_equal(chunk[name], piece[name][start:end])


def test_serialized_chunk_is_a_tf_example_with_the_same_values():
  import tensorflow as tf
  rng = np.random.default_rng(0)
  for num_notes in (0, 1, 5, 300, 5000):  # 5000: lengths that need multi-byte varints
    chunk = {
        'pitch': rng.integers(0, 128, num_notes),
        'step': rng.random(num_notes).astype(np.float32) * 3,
        'duration': rng.random(num_notes).astype(np.float32) * 30,
        'velocity': rng.integers(1, 128, num_notes),
        'quarter_seconds': rng.random(num_notes).astype(np.float32),
        'bar_position': rng.integers(0, 48, num_notes).astype(np.float32) / 12,
        'bar_quarters': rng.choice([0.0, 3.0, 4.0], num_notes).astype(np.float32),
    }
    serialized = contract.serialize_chunk(chunk, 'carl_czerny')
    feature = tf.train.Example.FromString(serialized).features.feature
    assert set(feature) == {*contract.FEATURE_DTYPES, contract.LABEL_FEATURE}
    assert list(feature[contract.LABEL_FEATURE].bytes_list.value) == [b'carl_czerny']
    assert list(feature['pitch'].int64_list.value) == chunk['pitch'].tolist()
    assert list(feature['velocity'].int64_list.value) == chunk['velocity'].tolist()
    assert list(feature['step'].float_list.value) == chunk['step'].tolist()
    assert list(feature['duration'].float_list.value) == chunk['duration'].tolist()
    for name in constants.METRE_FEATURES:
      assert list(feature[name].float_list.value) == chunk[name].tolist()


def test_serialized_chunks_of_a_piece_are_its_chunks_one_by_one():
  import tensorflow as tf
  rng = np.random.default_rng(1)
  piece = {'pitch': rng.integers(0, 128, 700).astype(np.int8),
           'step': rng.random(700).astype(np.float32),
           'duration': rng.random(700).astype(np.float32),
           'velocity': rng.integers(1, 128, 700).astype(np.int8),
           'quarter_seconds': rng.random(700).astype(np.float32),
           'bar_position': rng.random(700).astype(np.float32) * 3,
           'bar_quarters': np.full(700, 3.0, np.float32)}
  label = 'a' * 200  # a label entry whose length needs a two-byte varint
  serialized = contract.serialized_chunks(piece, window_length=64, stride=192, label=label)
  chunks = contract.chunks(piece, window_length=64, stride=192)
  assert [len(c['pitch']) for c in chunks] == [256, 256, 256, 124]
  assert serialized == [contract.serialize_chunk(chunk, label) for chunk in chunks]
  last = tf.train.Example.FromString(serialized[-1]).features.feature
  assert list(last['pitch'].int64_list.value) == piece['pitch'][576:].tolist()
  assert list(last['duration'].float_list.value) == piece['duration'][576:].tolist()
  assert list(last['bar_position'].float_list.value) == piece['bar_position'][576:].tolist()
  assert list(last[contract.LABEL_FEATURE].bytes_list.value) == [label.encode()]


def test_serialize_chunk_refuses_features_of_different_lengths():
  chunk = {'pitch': np.array([60, 61]), 'step': np.zeros(3), 'duration': np.zeros(2),
           'velocity': np.array([1, 1])}
  with pytest.raises(ValueError, match='step has 3 values, pitch 2'):
    contract.serialize_chunk(chunk, 'unknown')


def test_serialize_chunk_refuses_values_outside_a_byte():
  chunk = {'pitch': np.array([60, 128]), 'step': np.zeros(2), 'duration': np.zeros(2),
           'velocity': np.array([1, 1])}
  with pytest.raises(ValueError, match='pitch must lie in 0..127'):
    contract.serialize_chunk(chunk, 'unknown')
