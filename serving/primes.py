"""Prime windows for generation: from MIDI files, from a preprocessed dataset, or a neutral start.

The exported model continues a window of exactly ``window_length`` notes (the dataset's window,
recorded in the export's ``info.json``), so every prime is such a window, as a notes dict of 1-D
arrays (pitch, step, duration, velocity):

* **MIDI file**: the first ``window_length`` notes whose onset is at or after ``start_seconds``
  (0: the piece's first window). A file with fewer notes from there is refused
  (``prime_too_short``), never padded: padding would condition the model on music that is not in
  the file.
* **Dataset** (``--prime-data``): windows of the test split of a preprocessed dataset, which the
  model never trained on, read with tf.data through the dataset contract's reader
  (``partita.dataset``) and the dataset's ``info.json`` (no Beam needed).
* **Neutral** (``--no-prime``): for pieces from nothing. The model still needs a window, so it
  is given one note repeated ``window_length`` times: the training split's most frequent pitch
  (a note near middle C in tonal music), at the training split's mean step and mean duration,
  and the velocity ``constants.NO_NOTE_VELOCITY`` (0), which marks each position as no note for
  the heads' pitch memory and timing anchors: they would otherwise copy the one note and its
  time, and the piece would repeat it. It carries no melody, harmony or rhythm beyond the
  corpus averages. Where the training pieces have a grid (``partita.metre``), every position
  sits on a downbeat at their typical tempo and bar length (``info.json``'s ``metre``), so the
  piece starts a bar at that tempo (or at ``--tempo``). It is not part of the output: such a
  piece holds only its continuation.
"""

from __future__ import annotations

import numpy as np

from partita import constants, failures
from partita import notes as notes_lib
from serving import validation

NEUTRAL_PITCH = 60  # middle C, when the dataset's info has no pitch histogram
# Chunks of the test split read to choose dataset primes from; enough for variety, bounded so a
# huge test split costs seconds, not minutes.
MAX_DATASET_CHUNKS = 10_000


def window_from_midi(data: bytes, window_length: int, start_seconds: float = 0.0,
                     source: str = 'prime') -> dict[str, np.ndarray]:
  """The first ``window_length`` notes of MIDI ``data`` with an onset at or after ``start_seconds``.

  Raises:
    failures.RejectionError: the bytes are not a usable piece (reason: the parser's code, e.g.
      ``not_midi``), or fewer than ``window_length`` notes start at or after ``start_seconds``
      (``prime_too_short``; a request's ``prime_from`` is checked with the request).
  """
  try:
    piece = notes_lib.parse_midi(data, notes_lib.ParseOptions(min_notes=1))
  except failures.RejectionError as e:
    raise failures.RejectionError(
        e.reason, f'{source}: not a usable MIDI piece: {e.reason}: {e.detail}') from e
  onsets = np.cumsum(piece['step'], dtype=np.float64)
  first = int(np.searchsorted(onsets, start_seconds, side='left'))
  available = len(onsets) - first
  if available < window_length:
    where = f' from {start_seconds:g} s' if start_seconds else ''
    raise failures.RejectionError(
        'prime_too_short', f'{source}: {available} notes{where}, but the model needs a window of '
        f'{window_length} notes (short primes are refused, not padded)')
  return {name: values[first:first + window_length] for name, values in piece.items()}


def windows_from_dataset(data_dir: str, window_length: int,
                         count: int) -> list[dict[str, np.ndarray]]:
  """``count`` windows of the test split of the dataset in ``data_dir`` (local or ``gs://``).

  Each window is the first ``window_length`` notes of a chunk (see ``partita.contract``); the
  windows are taken from chunks evenly spaced over the first ``MAX_DATASET_CHUNKS`` chunks in
  file order, so they come from many pieces rather than from consecutive chunks of one. With
  fewer usable chunks than ``count``, windows repeat.

  Raises:
    failures.RejectionError: ``bad_request``: the folder is not a finished dataset, or its test
      split has no chunk of at least ``window_length`` notes.
  """
  # Deferred, like every TensorFlow import in serving: the dataset contract's reader needs it.
  import tensorflow as tf

  from partita import dataset as dataset_lib
  try:
    info = dataset_lib.load_info(data_dir)
    files = dataset_lib.shard_files(data_dir, info, 'test')
  except (FileNotFoundError, ValueError) as e:
    raise validation.bad_request(str(e)) from e
  records = tf.data.TFRecordDataset(files, compression_type=info['compression'] or None)
  heads = []
  label_ids = dataset_lib.label_table(info['labels'])  # read, not used: a prime is notes only
  for record in records.take(MAX_DATASET_CHUNKS):
    chunk = dataset_lib.parse_chunk(record, label_ids)
    if len(chunk['pitch']) >= window_length:
      heads.append({name: chunk[name].numpy()[:window_length]
                    for name in constants.NOTE_FEATURES})
  if not heads:
    raise validation.bad_request(
        f'{data_dir}: no test chunk holds a window of {window_length} notes '
        f"(the dataset's window is {info['window_length']})")
  chosen = np.linspace(0, len(heads) - 1, count).round().astype(int)
  return [heads[i] for i in chosen]


def neutral_window(info: dict, window_length: int) -> dict[str, np.ndarray]:
  """The ``--no-prime`` window described in the module docstring, from the dataset's info."""
  histogram = info.get('splits', {}).get('train', {}).get('pitch_histogram')
  pitch = int(np.argmax(histogram)) if histogram and sum(histogram) else NEUTRAL_PITCH
  timing, metre = info['timing'], info['metre']
  gridded = metre['gridded_notes'] > 0
  return {
      'pitch': np.full(window_length, pitch, np.int64),
      'step': np.full(window_length, timing['step']['mean'], np.float32),
      'duration': np.full(window_length, timing['duration']['mean'], np.float32),
      'velocity': np.full(window_length, constants.NO_NOTE_VELOCITY, np.int64),
      'quarter_seconds': np.full(window_length, metre['quarter_seconds'] if gridded else 0,
                                 np.float32),
      'bar_position': np.zeros(window_length, np.float32),
      'bar_quarters': np.full(window_length, metre['bar_quarters'] if gridded else 0, np.float32),
  }
