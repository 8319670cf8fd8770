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
  assert os.listdir(tmp_path) == [f'{os.getpid()}.pieces']
  assert first_place.startswith(f'{os.getpid()}.pieces:0:')
  assert second_place == f'{os.getpid()}.pieces:{first_place.rsplit(":", 1)[1]}:' + (
      second_place.rsplit(':', 1)[1])
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
