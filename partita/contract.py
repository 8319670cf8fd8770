"""The data contract between preprocessing and training: file layout, features, chunks.

Preprocessing writes each piece as overlapping *chunks* of notes rather than one record per
training window: chunk ``k`` holds notes ``[k*stride, k*stride + stride + window_length)``, so the
trainer expands every chunk into ``stride`` windows (``window_length`` input notes plus the next
note as target) in ``tf.data``. Every note after the first ``window_length`` notes of a piece is a
target exactly once per epoch, and the files hold each note ``(stride + window_length) / stride``
times instead of ``window_length`` times (stride-1 windows on disk).
"""

from __future__ import annotations

import numpy as np

INFO_FILE = 'info.json'
COMPLETED_MARKER = 'COMPLETED'
DEAD_LETTER_DIR = 'dead_letter'
SPLITS = ('train', 'validation', 'test')
FORMAT_VERSION = 1

# Feature name -> dtype as stored in each tf.train.Example (variable-length lists, one per chunk).
FEATURE_DTYPES = {'pitch': 'int64', 'step': 'float32', 'duration': 'float32', 'velocity': 'int64'}


def shard_pattern(split: str) -> str:
  """Glob, relative to the dataset folder, matching one split's TFRecord shards."""
  return f'{split}/{split}-*.tfrecord*'


def chunk_bounds(num_notes: int, window_length: int, stride: int) -> list[tuple[int, int]]:
  """[start, end) note ranges of the chunks of a piece with ``num_notes`` notes.

  Each chunk yields ``end - start - window_length`` windows; together they give one window per
  target note ``window_length .. num_notes - 1``. A piece with ``num_notes <= window_length`` has
  no window and no chunk.
  """
  bounds = []
  for start in range(0, max(num_notes - window_length, 0), stride):
    bounds.append((start, min(start + stride + window_length, num_notes)))
  return bounds


def num_windows(num_notes: int, window_length: int) -> int:
  """Training windows a piece contributes (one per note after the first window)."""
  return max(num_notes - window_length, 0)


def chunks(notes: dict[str, np.ndarray], window_length: int,
           stride: int) -> list[dict[str, np.ndarray]]:
  """Slices a notes dict into the chunks described by :func:`chunk_bounds`."""
  num_notes = len(notes['pitch'])
  return [{name: values[start:end] for name, values in notes.items()}
          for start, end in chunk_bounds(num_notes, window_length, stride)]
