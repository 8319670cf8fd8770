"""Pieces kept between the preprocessing job's two stages (partita.kept_pieces)."""

from __future__ import annotations

import os

import numpy as np

from partita import kept_pieces


def piece(notes: int) -> dict[str, np.ndarray]:
  return {'pitch': np.arange(notes, dtype=np.int8),
          'step': np.linspace(0, 1, notes, dtype=np.float32)}


def test_pieces_kept_by_one_process_go_to_one_file_and_load_back_exactly(tmp_path):
  first, second = piece(3), piece(5)
  first_place = kept_pieces.keep(str(tmp_path), b'digest-1', first)
  second_place = kept_pieces.keep(str(tmp_path), b'digest-2', second)
  file_name = f'{os.getpid()}.pieces'
  assert os.listdir(tmp_path) == [file_name]
  name, offset, length = first_place.split(':')
  second_name, second_offset, second_length = second_place.split(':')
  # The second is appended right after the first, and the file holds both, nothing else.
  assert (name, int(offset), second_name, int(second_offset)) == (file_name, 0, file_name,
                                                                 int(length))
  assert os.path.getsize(tmp_path / file_name) == int(length) + int(second_length)
  for place, digest, kept in ((first_place, b'digest-1', first),
                              (second_place, b'digest-2', second)):
    loaded = kept_pieces.load(str(tmp_path), place, digest)
    assert loaded.keys() == kept.keys()
    for name, values in kept.items():
      assert loaded[name].dtype == values.dtype
      np.testing.assert_array_equal(loaded[name], values)


def test_a_piece_is_loaded_only_for_the_bytes_it_was_parsed_from(tmp_path):
  place = kept_pieces.keep(str(tmp_path), b'digest-1', piece(3))
  assert kept_pieces.load(str(tmp_path), place, b'digest-2') is None
  assert kept_pieces.load(str(tmp_path), '', b'digest-1') is None
  # Its file gone (another machine's folder): not found, parsed again.
  assert kept_pieces.load(str(tmp_path / 'elsewhere'), place, b'digest-1') is None


def test_a_piece_that_cannot_be_kept_has_no_place(tmp_path):
  assert kept_pieces.keep(str(tmp_path / 'missing'), b'digest', piece(3)) == ''
  assert not os.path.exists(tmp_path / 'missing')


def test_a_closed_file_is_let_go_and_the_next_piece_starts_another(tmp_path):
  first = kept_pieces.keep(str(tmp_path), b'digest-1', piece(3))
  kept_pieces.close(str(tmp_path))
  kept_pieces.close(str(tmp_path))  # nothing left to close
  os.remove(tmp_path / f'{os.getpid()}.pieces')
  second = kept_pieces.keep(str(tmp_path), b'digest-2', piece(5))
  assert second.split(':')[1] == '0'  # a new file, not the deleted one still open
  assert kept_pieces.load(str(tmp_path), first, b'digest-1') is None
  np.testing.assert_array_equal(kept_pieces.load(str(tmp_path), second, b'digest-2')['pitch'],
                                np.arange(5, dtype=np.int8))
