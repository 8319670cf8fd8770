"""The originality guard: does a generated piece repeat a long run of a training piece's pitches?

A model can learn to recite. A piece may repeat at most ``limit`` consecutive pitches of a
training piece (:data:`DEFAULT_LIMIT`, 32). The guard's table holds every run of ``limit + 1``
consecutive pitches of the training split as a hash (:func:`build_table`, written beside the
export at training time), and a piece *copies* when it has a stretch of more than ``limit``
pitches whose every run of the table's length is in the table (:func:`copies`; at the table's
own limit, simply: one of its runs of ``limit + 1`` is there). A table of one limit so checks
any higher limit too.

Runs are compared by their intervals (each pitch minus the one before), so a transposed copy
counts as a copy: a run of ``n`` pitches is its ``n - 1`` intervals, hashed. The hash is a
polynomial over the intervals, modulo 2**64 (numpy's uint64 arithmetic wraps); two different
runs share a hash with probability about 2**-64 per pair, so a table of millions of runs makes
a false match practically impossible.

What "consecutive" means is the data contract's order: notes by onset, a chord's notes by pitch.
The table is built from the training split's chunks (``partita.contract``): consecutive chunks
overlap by ``window_length`` notes, so every run of up to ``window_length + 1`` notes of a
training piece lies whole in some chunk, and a table of such runs is a table of the pieces'.
A dataset of shorter windows gets a table of a lower limit (:func:`table_limit`).

No TensorFlow here: plain numpy, so serving, evaluation and the trainer share it.
"""

from __future__ import annotations

from collections.abc import Iterable
import io
from typing import NamedTuple

import numpy as np

# The most consecutive pitches of a training piece that a kept piece may repeat.
DEFAULT_LIMIT = 32
# An odd 64-bit multiplier (the golden ratio's fraction, as in Fibonacci hashing) spreads the
# intervals' polynomial over all 64 bits.
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
# Intervals run from -127 to 127; shifting them by this makes every one a positive digit.
_INTERVAL_OFFSET = 128


class RunTable(NamedTuple):
  """The sorted, distinct hashes of every run of ``run_length`` pitches of a set of pieces."""
  run_length: int
  hashes: np.ndarray  # uint64, sorted, distinct


def table_limit(limit: int, window_length: int) -> int:
  """The limit of the table to build for ``limit``: at most the dataset's window length.

  Chunks hold runs of at most ``window_length + 1`` pitches whole; a table of a lower limit
  checks ``limit`` all the same (see :func:`copies`).

  Raises:
    ValueError: ``limit`` is below 1.
  """
  if limit < 1:
    raise ValueError(f'the copy limit must be at least 1 pitch, got {limit}')
  return min(limit, window_length)


def run_hashes(pitches: np.ndarray, run_length: int) -> np.ndarray:
  """The hash of every run of ``run_length`` consecutive ``pitches``, in order (uint64).

  A piece shorter than a run has none.
  """
  pitches = np.asarray(pitches, dtype=np.int64)
  if len(pitches) < run_length:
    return np.zeros(0, np.uint64)
  digits = (np.diff(pitches) + _INTERVAL_OFFSET).astype(np.uint64)
  powers = np.ones(run_length - 1, np.uint64)
  with np.errstate(over='ignore'):
    for i in range(run_length - 2, 0, -1):
      powers[i - 1] = powers[i] * _MULTIPLIER
    windows = np.lib.stride_tricks.sliding_window_view(digits, run_length - 1)
    return (windows * powers).sum(axis=1, dtype=np.uint64)


def build_table(pieces_pitches: Iterable[np.ndarray], limit: int = DEFAULT_LIMIT) -> RunTable:
  """The :class:`RunTable` of every run of ``limit + 1`` pitches of each piece."""
  hashes = [run_hashes(pitches, limit + 1) for pitches in pieces_pitches]
  return RunTable(limit + 1, np.unique(np.concatenate([np.zeros(0, np.uint64), *hashes])))


def copied_runs(pitches: np.ndarray, table: RunTable) -> np.ndarray:
  """For each run of ``table.run_length`` of ``pitches``, whether the table holds it."""
  hashes = run_hashes(pitches, table.run_length)
  if not len(table.hashes) or not len(hashes):
    return np.zeros(len(hashes), bool)
  found = np.minimum(np.searchsorted(table.hashes, hashes), len(table.hashes) - 1)
  return table.hashes[found] == hashes


def longest_match(pitches: np.ndarray, table: RunTable) -> int:
  """The longest stretch of ``pitches`` whose every run of the table's length it holds; 0: none.

  ``m`` consecutive runs found make a stretch of ``m + table.run_length - 1`` pitches.
  """
  found = np.concatenate([[False], copied_runs(pitches, table), [False]])
  edges = np.flatnonzero(np.diff(found.astype(np.int8)))
  if not len(edges):
    return 0
  return int((edges[1::2] - edges[0::2]).max()) + table.run_length - 1


def copies(pitches: np.ndarray, table: RunTable, limit: int | None = None) -> bool:
  """Whether ``pitches`` repeat more than ``limit`` pitches (default: the table's own limit).

  Raises:
    ValueError: ``limit`` is below the table's, which holds no shorter runs.
  """
  limit = table.run_length - 1 if limit is None else limit
  if limit < table.run_length - 1:
    raise ValueError(f'this table checks copies of more than {table.run_length - 1} pitches, '
                     f'not of more than {limit}')
  return longest_match(pitches, table) > limit


def to_bytes(table: RunTable) -> bytes:
  """``table`` as an ``.npz`` file's bytes (its run length and hashes)."""
  buffer = io.BytesIO()
  np.savez(buffer, run_length=np.int64(table.run_length), hashes=table.hashes)
  return buffer.getvalue()


def from_bytes(data: bytes) -> RunTable:
  """The table :func:`to_bytes` wrote."""
  with np.load(io.BytesIO(data)) as saved:
    return RunTable(int(saved['run_length']), saved['hashes'].astype(np.uint64))
