"""The originality guard's table: runs of pitches, hashed by their intervals (no TensorFlow)."""

import numpy as np
import pytest

from partita import originality

# A training piece whose intervals are never 0, and fillers of repeated notes (interval 0), so
# that a copied stretch cannot grow into its surroundings by chance.
TRAINING = 40 + np.cumsum(np.tile([3, -2, 5, -4, 1, 2, -3, -1, 4, -5, 2, 1, -2], 10))
FILLER = np.full(10, 90)


def piece_with(copied: np.ndarray) -> np.ndarray:
  return np.concatenate([FILLER, copied, FILLER + 1])


def test_a_transposed_copy_is_found_with_its_exact_length():
  table = originality.build_table([TRAINING], limit=32)
  assert table.run_length == 33
  copy = piece_with(TRAINING[20:60] + 7)  # 40 pitches, a fifth up
  assert originality.longest_match(copy, table) == 40
  assert originality.copies(copy, table)
  assert originality.copies(copy, table, limit=39)
  assert not originality.copies(copy, table, limit=40)


def test_a_run_at_the_limit_is_allowed():
  table = originality.build_table([TRAINING], limit=32)
  assert originality.longest_match(piece_with(TRAINING[5:37]), table) == 0  # 32 pitches
  assert originality.longest_match(piece_with(TRAINING[5:38]), table) == 33
  assert not originality.copies(piece_with(TRAINING[5:37]), table)


def test_a_limit_below_the_tables_is_refused():
  table = originality.build_table([TRAINING], limit=32)
  with pytest.raises(ValueError, match='more than 32 pitches, not of more than 16'):
    originality.copies(TRAINING, table, limit=16)


def test_a_lower_tables_chained_runs_check_a_higher_limit():
  table = originality.build_table([TRAINING], limit=8)
  copy = piece_with(TRAINING[:50])
  assert originality.longest_match(copy, table) == 50
  assert originality.copies(copy, table, limit=32)
  assert not originality.copies(piece_with(TRAINING[:30]), table, limit=32)


def test_short_pieces_have_no_runs_and_an_empty_table_finds_nothing():
  assert originality.run_hashes(np.arange(10), 33).shape == (0,)
  empty = originality.build_table([np.arange(10)], limit=32)
  assert empty.hashes.shape == (0,)
  assert originality.longest_match(TRAINING, empty) == 0


def test_the_table_survives_its_bytes():
  table = originality.build_table([TRAINING, TRAINING[::-1]], limit=16)
  again = originality.from_bytes(originality.to_bytes(table))
  assert again.run_length == 17
  assert again.hashes.dtype == np.uint64
  np.testing.assert_array_equal(again.hashes, table.hashes)
  assert np.all(table.hashes[1:] > table.hashes[:-1])  # sorted and distinct


def test_table_limit_is_at_most_the_window():
  assert originality.table_limit(32, 64) == 32
  assert originality.table_limit(32, 8) == 8
  with pytest.raises(ValueError, match='at least 1 pitch'):
    originality.table_limit(0, 64)
