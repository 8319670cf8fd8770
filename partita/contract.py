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
SPLITS = ('train', 'validation', 'test')
# 2: chunks carry their piece's label name, info.json the label vocabulary (partita.labels).
FORMAT_VERSION = 2

# Feature name -> dtype as stored in each tf.train.Example (variable-length lists, one per chunk).
FEATURE_DTYPES = {'pitch': 'int64', 'step': 'float32', 'duration': 'float32', 'velocity': 'int64'}
# One bytes value per chunk: its piece's label name (partita.labels; ids are info.json's).
LABEL_FEATURE = 'label'


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


# Wire-format tags of tf.train.Example (example.proto, feature.proto): field number << 3 | 2
# (length-delimited). Example.features = 1; Features.feature = 1 (a map entry: key = 1,
# value = 2); Feature.bytes_list = 1, Feature.float_list = 2, Feature.int64_list = 3;
# BytesList/FloatList/Int64List.value = 1.
_LENGTH_DELIMITED_1 = 0x0A
_MAP_VALUE = 0x12
_FEATURE_TAGS = {'bytes': 0x0A, 'float32': 0x12, 'int64': 0x1A}


def _varint(value: int) -> bytes:
  encoded = bytearray()
  while value >= 0x80:
    encoded.append((value & 0x7F) | 0x80)
    value >>= 7
  encoded.append(value)
  return bytes(encoded)


def _field(tag: int, payload: bytes) -> bytes:
  return bytes([tag]) + _varint(len(payload)) + payload


def _entry(name: str, feature: bytes) -> bytes:
  return _field(_LENGTH_DELIMITED_1,
                _field(_LENGTH_DELIMITED_1, name.encode()) + _field(_MAP_VALUE, feature))


def serialize_chunk(chunk: dict[str, np.ndarray], label: str) -> bytes:
  """A chunk of a piece labelled ``label`` as a serialized ``tf.train.Example`` (the features
  of FEATURE_DTYPES and LABEL_FEATURE).

  Written straight from the numpy arrays in protobuf's wire format (packed lists: pitch and
  velocity, always 0..127, are one-byte varints; floats little-endian) rather than through
  ``tf.train.Example``: about 5x faster per chunk, and preprocessing workers never import
  TensorFlow. A test checks TensorFlow parses it back to the same values.
  """
  entries = []
  for name, dtype in FEATURE_DTYPES.items():
    values = np.asarray(chunk[name])
    if dtype == 'int64':
      if values.size and (values.min() < 0 or values.max() > 127):
        raise ValueError(f'{name} must lie in 0..127 to be stored as one-byte varints')
      payload = values.astype(np.uint8).tobytes()
    else:
      payload = values.astype('<f4').tobytes()
    entries.append(_entry(name, _field(_FEATURE_TAGS[dtype],
                                       _field(_LENGTH_DELIMITED_1, payload))))
  # A BytesList holds each value as its own length-delimited field (not packed).
  entries.append(_entry(LABEL_FEATURE, _field(_FEATURE_TAGS['bytes'],
                                              _field(_LENGTH_DELIMITED_1, label.encode()))))
  return _field(_LENGTH_DELIMITED_1, b''.join(entries))
