"""The data contract's TensorFlow reader: what ``beam_pipelines.preprocess`` writes, read back.

The Beam job writes chunks with ``partita.contract`` (no TensorFlow in its workers); every stage
that reads a dataset (the trainer's input pipeline, serving's primes from a test split,
evaluation) reads it through this module, so the reader is defined once, beside the writer's
constants, as SeqIO's writer and reader share one contract. It reads ``info.json`` instead of
repeating its constants: window length, compression, shard patterns and timing statistics come
from it.
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

from partita import constants, contract
from partita import labels as labels_lib

# What a packed window holds, in order: the note features, then the piece's label id.
WINDOW_FEATURES = (*constants.NOTE_FEATURES, contract.LABEL_FEATURE)


def load_info(data_dir: str) -> dict:
  """The dataset's info.json; refuses a dataset whose preprocessing never completed."""
  if not tf.io.gfile.exists(os.path.join(data_dir, contract.COMPLETED_MARKER)):
    raise FileNotFoundError(
        f'{data_dir} has no {contract.COMPLETED_MARKER} marker: it is not the output of a '
        'finished `python -m beam_pipelines.preprocess` run')
  with tf.io.gfile.GFile(os.path.join(data_dir, contract.INFO_FILE)) as f:
    info = json.load(f)
  if info.get('format_version') != contract.FORMAT_VERSION:
    raise ValueError(outdated_format_message(data_dir, info))
  return info


def outdated_format_message(data_dir: str, info: dict) -> str:
  """Why a dataset of another format version is refused, and the command that remakes it."""
  version = info.get('format_version')
  missing = [change for number, change in sorted(contract.FORMAT_CHANGES.items())
             if not isinstance(version, int) or version < number]
  what = f" (it lacks {', '.join(missing)})" if missing else ''
  options = info.get('options', {})
  inputs = ' '.join([*(f"--input '{path}'" for path in options.get('input', [])),
                     *(f"--note-sequences '{path}'" for path in options.get('note_sequences', [])),
                     *([f"--input-list '{options['input_list']}'"] if options.get('input_list')
                       else [])]) or '--input MIDI_FOLDER'
  return (f'{data_dir}: dataset format {version} is not {contract.FORMAT_VERSION}{what}; '
          'preprocess it again: python -m beam_pipelines.preprocess '
          f"{inputs} --output {options.get('output', data_dir)}")


def shard_files(data_dir: str, info: dict, split: str) -> list[str]:
  """The sorted shard paths of ``split``; raises FileNotFoundError when there are none."""
  files = sorted(tf.io.gfile.glob(os.path.join(data_dir, info['shard_patterns'][split])))
  if not files:
    raise FileNotFoundError(f'no {split} shards in {data_dir}')
  return files


def label_table(labels: dict) -> tf.lookup.StaticHashTable:
  """Label name -> id, from an info.json's ``labels`` (``partita.labels``).

  The ids are the model's vocabulary when reading with a model's info, so a dataset preprocessed
  on its own still gets that model's ids; names it never saw read as the unconditional id.
  """
  names = list(labels['ids'])
  return tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(tf.constant(names, tf.string),
                                          tf.constant([labels['ids'][n] for n in names], tf.int32)),
      default_value=labels_lib.UNCONDITIONAL_ID)


def parse_chunk(serialized: tf.Tensor,
                label_ids: tf.lookup.StaticHashTable) -> dict[str, tf.Tensor]:
  """One serialized tf.train.Example -> dict of 1-D note tensors and the scalar int32 ``label`` id.

  The note tensors are ``constants.NOTE_FEATURES``: pitch int32, the others float32; the label
  id comes from ``label_ids`` (:func:`label_table`).
  """
  spec = {name: tf.io.VarLenFeature(tf.int64 if dtype == 'int64' else tf.float32)
          for name, dtype in contract.FEATURE_DTYPES.items()}
  spec[contract.LABEL_FEATURE] = tf.io.FixedLenFeature([], tf.string)
  parsed = tf.io.parse_single_example(serialized, spec)
  chunk = {name: tf.sparse.to_dense(parsed[name]) for name in contract.FEATURE_DTYPES}
  return {
      'pitch': tf.cast(chunk['pitch'], tf.int32),
      **{name: tf.cast(chunk[name], tf.float32) for name in constants.NOTE_FEATURES[1:]},
      contract.LABEL_FEATURE: label_ids.lookup(parsed[contract.LABEL_FEATURE]),
  }


def read_chunks(data_dir: str, info: dict, split: str,
                labels: dict) -> list[dict[str, np.ndarray]]:
  """Every chunk of a split, in file order, as numpy notes dicts with the chunk's ``label`` id.

  The id is in the vocabulary ``labels`` (a model's, or the dataset's own ``info['labels']``).
  """
  records = tf.data.TFRecordDataset(shard_files(data_dir, info, split),
                                    compression_type=info['compression'] or None)
  label_ids = label_table(labels)
  return [{name: values.numpy() for name, values in parse_chunk(record, label_ids).items()}
          for record in records]


def chunk_to_windows(chunk: dict[str, tf.Tensor], window_length: int) -> tf.Tensor:
  """Every ``window_length + 1`` consecutive notes of a chunk, at stride 1.

  Returns one float32 tensor ``[windows, window_length + 1, 8]`` (:data:`WINDOW_FEATURES`: the
  note features, then the chunk's label id at every note): pitch, velocity and label are small
  integers, exact in float32, and one tensor per window instead of five makes shuffling and
  batching single windows (the costly part of the pipeline) twice as fast.
  :func:`unpack` turns batches back into named features.
  """
  notes = [tf.cast(chunk[name], tf.float32) for name in constants.NOTE_FEATURES]
  label = tf.fill(tf.shape(notes[0]), tf.cast(chunk[contract.LABEL_FEATURE], tf.float32))
  return tf.signal.frame(tf.stack(notes + [label], axis=-1), window_length + 1, 1, axis=0)


def unpack(windows: tf.Tensor) -> dict[str, tf.Tensor]:
  """``[..., W+1, 8]`` packed windows -> dict of ``[..., W+1]`` per feature.

  Pitch and label are int32.
  """
  features = tf.unstack(windows, axis=-1)
  unpacked = dict(zip(WINDOW_FEATURES, features, strict=True))
  for name in ('pitch', contract.LABEL_FEATURE):
    unpacked[name] = tf.cast(unpacked[name], tf.int32)
  return unpacked


def to_features_and_targets(window: dict[str, tf.Tensor]):
  """[.., W+1] windows -> (inputs: the first W notes, with their label, targets: note W+1)."""
  inputs = {name: values[..., :-1] for name, values in window.items()}
  targets = {
      'pitch': window['pitch'][..., -1],
      'step': window['step'][..., -1],
      'duration': window['duration'][..., -1],
      'velocity': window['velocity'][..., -1] / constants.MAX_VELOCITY,
  }
  return inputs, targets
