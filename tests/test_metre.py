"""partita.metre and the metre's path through parsing, the model's arithmetic and the export.

Tempo maps and time signatures read from ticks, pieces without a grid, positions advanced and
steps pulled onto the grid, and the tempo a continuation is played at.
"""

import json
import os

import numpy as np
import pytest
import symusic
import tensorflow as tf

from partita import constants, contract, dataset, metre
from partita import notes as notes_lib
from trainer import export as export_lib
from trainer import model as model_lib

TICKS_PER_QUARTER = 480


def score_bytes(onset_quarters, tempos=((0, 120.0),), signatures=((0, 4, 4),)) -> bytes:
  """One track of quarter-note-long notes at ``onset_quarters``, with tempo maps and signatures.

  The tempo map is ``(tick, quarter notes per minute)``, the time signatures
  ``(tick, numerator, denominator)``.
  """
  score = symusic.Score(TICKS_PER_QUARTER)
  for tick, qpm in tempos:
    score.tempos.append(symusic.Tempo(tick, qpm))
  for tick, numerator, denominator in signatures:
    score.time_signatures.append(symusic.TimeSignature(tick, numerator, denominator))
  track = symusic.Track('piano', 0, False)
  for i, quarters in enumerate(onset_quarters):
    track.notes.append(symusic.Note(round(quarters * TICKS_PER_QUARTER), TICKS_PER_QUARTER,
                                    60 + i % 12, 80))
  score.tracks.append(track)
  return score.dumps_midi()


# --- partita.metre ---------------------------------------------------------------------------


def test_the_grid_is_32nd_notes_and_sixteenth_triplets_within_a_96th():
  onsets = np.array([0.0, 0.125, 1 / 3, 0.5 + 1 / 12, 0.0625, 2.25 + 1 / 100, 2.25 + 1 / 90])
  assert metre.on_grid(onsets).tolist() == [True, True, True, True, False, True, False]


def test_the_tempo_at_an_onset_is_the_last_event_at_or_before_it():
  # Events out of order; before the first one, MIDI's default 0.5 s a quarter.
  quarter_seconds = metre.tempo_at(np.array([0, 99, 100, 250, 900]), np.array([250, 100]),
                                   np.array([0.75, 1.0]))
  assert quarter_seconds.tolist() == [0.5, 0.5, 1.0, 0.75, 0.75]
  assert metre.tempo_at(np.array([0, 5]), np.zeros(0, np.int64), np.zeros(0)).tolist() == [
      0.5, 0.5]


def test_each_time_signature_starts_a_bar_and_a_corrupt_one_reads_as_four_four():
  # 3/4 from tick 0, 6/8 from quarter 4.5 (mid-bar: a new bar starts there), then a 0/4 event.
  onsets = np.array([0, 2.5, 3, 4.25, 4.5, 6, 7.5, 8, 10, 12.5]) * TICKS_PER_QUARTER
  position, bar_quarters = metre.bar_positions(
      onsets.astype(np.int64), TICKS_PER_QUARTER, np.array([0, 2160, 3840]),
      np.array([3, 6, 0]), np.array([4, 8, 4]))
  assert position.tolist() == [0, 2.5, 0, 1.25, 0, 1.5, 0, 0, 2, 0.5]
  assert bar_quarters.tolist() == [3, 3, 3, 3, 3, 3, 3, 4, 4, 4]
  # No time signature at all: 4/4 from the start.
  position, bar_quarters = metre.bar_positions(np.array([0, 1440, 2400]), TICKS_PER_QUARTER,
                                               np.zeros(0), np.zeros(0), np.zeros(0))
  assert (position.tolist(), bar_quarters.tolist()) == ([0, 3, 1], [4, 4, 4])


def test_a_piece_with_under_nine_tenths_of_its_onsets_on_the_grid_has_no_metre():
  values = (np.full(10, 0.5), np.arange(10) % 4.0, np.full(10, 4.0))
  gridded = metre.piece_metre(*values, np.arange(10) > 0)  # 9 of 10
  assert gridded['bar_position'].tolist() == (np.arange(10) % 4.0).tolist()
  assert all(values.dtype == np.float32 for values in gridded.values())
  off = metre.piece_metre(*values, np.arange(10) > 1)  # 8 of 10
  assert all(values.tolist() == [0.0] * 10 for values in off.values())


# --- parsing ---------------------------------------------------------------------------------


def test_parsing_reads_each_notes_tempo_and_place_in_its_bar_from_the_ticks():
  # 3/4 at 120 quarter notes a minute, then from quarter 3 at 60 and in 6/8 (3 quarters a bar).
  piece = notes_lib.parse_midi(score_bytes(
      [0, 1, 2, 3, 4, 5, 6.5, 7], tempos=[(0, 120.0), (1440, 60.0)],
      signatures=[(0, 3, 4), (1440, 6, 8)]))
  np.testing.assert_allclose(piece['step'], [0, 0.5, 0.5, 0.5, 1, 1, 1.5, 0.5], atol=1e-6)
  assert piece['quarter_seconds'].tolist() == [0.5, 0.5, 0.5, 1, 1, 1, 1, 1]
  assert piece['bar_position'].tolist() == [0, 1, 2, 0, 1, 2, 0.5, 1]
  assert piece['bar_quarters'].tolist() == [3] * 8
  assert {piece[name].dtype for name in constants.METRE_FEATURES} == {np.dtype(np.float32)}


def test_a_performance_and_a_note_sequence_have_no_grid_and_keep_their_seconds():
  # Onsets anywhere in the beat, as a pianist plays them: no metre, the times as they were.
  rng = np.random.default_rng(0)
  onsets = np.cumsum(rng.integers(37, 400, 40)) / 480
  played = notes_lib.parse_midi(score_bytes(onsets))
  assert metre.on_grid(np.round(onsets * TICKS_PER_QUARTER) / TICKS_PER_QUARTER).mean() < 0.9
  for name in constants.METRE_FEATURES:
    assert played[name].tolist() == [0.0] * 40, name
  np.testing.assert_allclose(np.cumsum(played['step']),
                             (np.round(onsets * 480) - round(onsets[0] * 480)) / 960, atol=1e-5)
  sequence = notes_lib.note_seq_protos().NoteSequence()
  sequence.tempos.add(time=0, qpm=60)
  for i in range(8):
    sequence.notes.add(pitch=60 + i, start_time=i * 0.5, end_time=i * 0.5 + 0.4, velocity=70)
  from_sequence = notes_lib.parse_note_sequence(sequence.SerializeToString())
  assert from_sequence['step'].tolist() == [0] + [0.5] * 7
  for name in constants.METRE_FEATURES:
    assert from_sequence[name].tolist() == [0.0] * 8, name


# --- the model's arithmetic --------------------------------------------------------------------


def test_an_onsets_position_advances_by_its_step_at_the_tempo_and_wraps_at_the_bar():
  position = model_lib.advance_position(
      tf.constant([2.5, 2.5, 0.0, 1.0, 1.0]), tf.constant([0.25, 0.5, 1.0 / 3, 0.2, 0.9]),
      tf.constant([0.5, 0.5, 0.5, 0.0, 0.5]), tf.constant([3.0, 3.0, 4.0, 0.0, 4.0]))
  # 2.5 + 0.5 = 3 wraps to the downbeat; 1/3 s is 2/3 of a quarter, snapped to the 1/24 grid
  # from float rounding; no grid gives 0; 1 + 1.8 stays off the grid.
  np.testing.assert_allclose(position.numpy(), [0.0, 0.5, 2 / 3, 0.0, 2.8], atol=1e-6)
  assert position.numpy()[2] == np.float32(16 / 24)


def test_a_sampled_step_lands_on_the_nearest_later_grid_point_or_stays_a_chord():
  step = model_lib.step_onto_grid(
      tf.constant([0.26, 0.0, 0.004, 0.3, 0.26, 0.006]),
      tf.constant([0.0, 1.0, 1.0, 1.5, 0.0, 0.5]), tf.constant([0.5, 0.5, 0.5, 0.5, 0.0, 0.5]))
  # 0.26 s is 0.52 quarters: the 1/24 point nearest is 0.5 (0.25 s). A chord (0, or under half a
  # timing bin) stays; 0.3 s from 1.5 is 2.1 quarters: 2.083 (1.5 + 0.583 -> 0.2917 s). Without
  # a grid, as sampled; a step under a grid point but past a chord moves to the next point.
  np.testing.assert_allclose(step.numpy(), [0.25, 0.0, 0.004, 14 / 24 * 0.5, 0.26, 0.5 / 24],
                             atol=1e-6)


def test_the_metre_anchors_are_the_note_values_then_the_next_subdivisions_and_downbeat():
  recent = {'quarter_seconds': tf.constant([0.5, 0.0]), 'bar_position': tf.constant([1.25, 0.0]),
            'bar_quarters': tf.constant([3.0, 0.0])}
  duration = model_lib.metre_anchors('duration', recent).numpy()
  np.testing.assert_allclose(duration[0], np.array(metre.NOTE_VALUES) * 0.5, atol=1e-6)
  step = model_lib.metre_anchors('step', recent).numpy()
  assert step.shape == (2, model_lib.metre_anchor_count('step')) == (2, 21)
  # From 1.25 in a 3-quarter bar: the next sixteenth 1.5, triplet 4/3, eighth 1.5, beat 2,
  # downbeat 3 (quarters), at 0.5 s a quarter.
  np.testing.assert_allclose(step[0, len(metre.NOTE_VALUES):],
                             np.array([0.25, 1 / 12, 0.25, 0.75, 1.75]) * 0.5, atol=1e-6)
  assert not step[1].any() and not duration[1].any()


def test_a_tempo_rescales_each_gridded_rows_times_so_its_last_note_is_at_that_tempo():
  window = {name: tf.constant([[1.0, 1.0], [1.0, 1.0]]) for name in constants.NOTE_FEATURES}
  window['quarter_seconds'] = tf.constant([[0.25, 0.5], [0.0, 0.0]])
  scaled = export_lib.at_tempo(window, tf.constant(60.0))
  # 60 quarter notes a minute is 1 s a quarter: twice the last note's 0.5 s.
  assert scaled['quarter_seconds'].numpy().tolist() == [[0.5, 1.0], [0.0, 0.0]]
  assert scaled['step'].numpy().tolist() == [[2.0, 2.0], [1.0, 1.0]]
  assert scaled['duration'].numpy().tolist() == [[2.0, 2.0], [1.0, 1.0]]
  assert scaled['bar_position'].numpy().tolist() == [[1.0, 1.0], [1.0, 1.0]]
  unchanged = export_lib.at_tempo(window, tf.constant(0.0))
  for name in window:
    assert unchanged[name].numpy().tolist() == window[name].numpy().tolist(), name


# --- the data contract -----------------------------------------------------------------------


def test_a_dataset_of_an_older_format_is_refused_with_the_command_that_remakes_it(tmp_path):
  info = {'format_version': 2, 'options': {'input': ['/corpus/bach'], 'output': '/data/bach'}}
  with open(os.path.join(tmp_path, contract.INFO_FILE), 'w') as f:
    json.dump(info, f)
  open(os.path.join(tmp_path, contract.COMPLETED_MARKER), 'w').close()
  with pytest.raises(ValueError) as error:
    dataset.load_info(str(tmp_path))
  assert str(error.value) == (
      f"{tmp_path}: dataset format 2 is not 3 (it lacks each note's tempo and position in its "
      "bar); preprocess it again: python -m beam_pipelines.preprocess --input '/corpus/bach' "
      '--output /data/bach')
  assert dataset.outdated_format_message('d', {}) == (
      "d: dataset format None is not 3 (it lacks each piece's label, each note's tempo and "
      'position in its bar); preprocess it again: python -m beam_pipelines.preprocess --input '
      'MIDI_FOLDER --output d')
