"""The data contract between preprocessing and training: file layout, features, chunks.

Preprocessing writes each piece as overlapping *chunks* of notes rather than one record per
training window: chunk ``k`` holds notes ``[k*stride, k*stride + stride + window_length)``, so the
trainer expands every chunk into ``stride`` windows (``window_length`` input notes plus the next
note as target) in ``tf.data``. Every note after the first ``window_length`` notes of a piece is a
target exactly once per epoch, and the files hold each note ``(stride + window_length) / stride``
times instead of ``window_length`` times (stride-1 windows on disk).
"""

from __future__ import annotations

import functools

import numpy as np

INFO_FILE = 'info.json'
COMPLETED_MARKER = 'COMPLETED'
SPLITS = ('train', 'validation', 'test')
# 2: chunks carry their piece's label name, info.json the label vocabulary (partita.labels).
# 3: notes carry their metre (partita.metre), info.json its summary.
FORMAT_VERSION = 3
# What each format added, for the error that asks for an older dataset to be preprocessed again.
FORMAT_CHANGES = {2: "each piece's label", 3: "each note's tempo and position in its bar"}

# Feature name -> dtype as stored in each tf.train.Example (variable-length lists, one per chunk),
# in the order of constants.NOTE_FEATURES.
FEATURE_DTYPES = {'pitch': 'int64', 'step': 'float32', 'duration': 'float32', 'velocity': 'int64',
                  'quarter_seconds': 'float32', 'bar_position': 'float32',
                  'bar_quarters': 'float32'}
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


def _header(tag: int, length: int) -> bytes:
  """What precedes a length-delimited payload of ``length`` bytes."""
  return bytes([tag]) + _varint(length)


def _entry_header(name: str, dtype: str, payload_length: int) -> bytes:
  """What precedes the packed values of feature ``name`` in a Features map.

  The values are ``payload_length`` bytes; what precedes them is the entry, key, Feature and
  list headers.
  """
  packed = _header(_LENGTH_DELIMITED_1, payload_length)
  feature = _header(_FEATURE_TAGS[dtype], len(packed) + payload_length) + packed
  key_and_value = (_field(_LENGTH_DELIMITED_1, name.encode())
                   + _header(_MAP_VALUE, len(feature) + payload_length) + feature)
  return _header(_LENGTH_DELIMITED_1, len(key_and_value) + payload_length) + key_and_value


_BYTES_PER_VALUE = {'int64': 1, 'float32': 4}


@functools.lru_cache(maxsize=4096)
def _chunk_frame(num_notes: int, label: str) -> tuple[bytes, ...]:
  """The bytes around the payloads of a ``num_notes``-note chunk labelled ``label``.

  One before each FEATURE_DTYPES payload (the first also opens the Example), and the label's
  entry after the last. Chunks share a few lengths, so a frame is built once and reused.
  """
  headers = [_entry_header(name, dtype, num_notes * _BYTES_PER_VALUE[dtype])
             for name, dtype in FEATURE_DTYPES.items()]
  # A BytesList holds each value as its own length-delimited field (not packed).
  label_entry = _field(_LENGTH_DELIMITED_1, _field(_LENGTH_DELIMITED_1, LABEL_FEATURE.encode())
                       + _field(_MAP_VALUE, _field(_FEATURE_TAGS['bytes'], _field(
                           _LENGTH_DELIMITED_1, label.encode()))))
  payloads_length = num_notes * sum(_BYTES_PER_VALUE[dtype] for dtype in FEATURE_DTYPES.values())
  features_length = sum(map(len, headers)) + len(label_entry) + payloads_length
  return (_header(_LENGTH_DELIMITED_1, features_length) + headers[0], *headers[1:], label_entry)


def serialized_chunks(notes: dict[str, np.ndarray], window_length: int, stride: int,
                      label: str) -> list[bytes]:
  """The chunks of :func:`chunks` of a piece labelled ``label``, each a serialized Example.

  Each is a ``tf.train.Example`` of the features of FEATURE_DTYPES and LABEL_FEATURE.

  Written straight from the numpy arrays in protobuf's wire format (packed lists: pitch and
  velocity, always 0..127, are one-byte varints; floats little-endian): each feature is
  converted once per piece, and every chunk is slices of it inside a frame shared by all chunks
  of its length. That is about 8x faster than building each chunk's message field by field and
  far faster than ``tf.train.Example``, and preprocessing workers never import TensorFlow. A
  test checks TensorFlow parses the chunks back to the same values.
  """
  return [b''.join(parts) for parts in _chunk_parts(
      notes, chunk_bounds(len(notes['pitch']), window_length, stride), label)]


def serialize_chunk(chunk: dict[str, np.ndarray], label: str) -> bytes:
  """One chunk (all of ``chunk``'s notes), serialized as :func:`serialized_chunks` does."""
  (parts,) = _chunk_parts(chunk, [(0, len(chunk['pitch']))], label)
  return b''.join(parts)


def _chunk_parts(notes, bounds, label):
  """Yields, for each ``(start, end)`` in ``bounds``, the byte strings of that chunk's Example.

  Their concatenation is that chunk's serialized Example.
  """
  wire = []
  for name, dtype in FEATURE_DTYPES.items():
    values = np.asarray(notes[name])
    if len(values) != len(notes['pitch']):
      raise ValueError(f'{name} has {len(values)} values, pitch {len(notes["pitch"])}')
    if dtype == 'int64':
      if values.size and (values.min() < 0 or values.max() > 127):
        raise ValueError(f'{name} must lie in 0..127 to be stored as one-byte varints')
      wire.append(values.astype(np.uint8).tobytes())
    else:
      wire.append(values.astype('<f4').tobytes())
  sizes = [_BYTES_PER_VALUE[dtype] for dtype in FEATURE_DTYPES.values()]
  for start, end in bounds:
    frame = _chunk_frame(end - start, label)
    parts = []
    for header, payload, size in zip(frame, wire, sizes):
      parts += (header, payload[start * size:end * size])
    parts.append(frame[-1])
    yield parts
