"""Inputs of the preprocessing job: matching, reading and reading again, and their dead letters.

The inputs are MIDI files, path lists and NoteSequence TFRecords; the pieces that survive the
dedup are read once more; inputs that cannot be read become dead letters.

Paths are local or any filesystem Beam knows (gs://); every function goes through
``FileSystems``. :class:`ReadInputs` is the job's first step; :class:`ReadAgain` reads the
inputs the dedup kept, so that only names and fingerprints, never notes, cross the shuffle.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
import zlib

import apache_beam as beam
from apache_beam import metrics
from apache_beam.io import fileio, filesystem, filesystems

from beam_pipelines import elements
from beam_pipelines import outputs as beam_outputs
from partita import constants
from partita import labels as labels_lib

# The kinds of input, the keys of ReadInputs' outputs: each has its own parser and way of being
# read again.
MIDI = 'midi'
NOTE_SEQUENCES = 'note_sequences'

# Matched files travel to the readers in batches of this many MatchedFiles, compressed
# together: the shuffle that spreads the reads over workers then carries a few bytes a file
# (paths in one folder share most of their characters) instead of its whole path, and each
# worker still gets work in pieces of well under a second.
PATHS_PER_BATCH = 64

# escape_glob matches a literal '[' with the class '[[]'; Beam turns that into the regex '[[]',
# which Python's re flags as a possible future nested set. It means exactly '[' today.
warnings.filterwarnings('ignore', 'Possible nested set', FutureWarning)


def input_patterns(input_spec: str) -> list[str]:
  """Glob patterns for an input that is a glob, a single file, or a folder (searched recursively).

  A path that exists is taken literally even if it holds glob characters ('Sonatas [1800]').
  """
  if filesystems.FileSystems.exists(input_spec) or not any(ch in input_spec for ch in '*?['):
    literal = escape_glob(input_spec)
    folder_pattern = literal.rstrip('/') + '/**'
    # One file under it makes it a folder: listing them all took 0.56 s at 50,000 files.
    if filesystems.FileSystems.match([folder_pattern], limits=[1])[0].metadata_list:
      return [folder_pattern]
    return [literal]
  return [input_spec]


def escape_glob(path: str) -> str:
  """``path`` as a Beam match pattern that matches exactly that path."""
  return re.sub(r'([*?[])', r'[\1]', path)


def listed_path(list_file: str, line: str) -> str | None:
  """The path on one line of an --input-list file; None for blank and '#' comment lines.

  Relative paths are relative to the list file's folder.
  """
  line = line.strip()
  if not line or line.startswith('#'):
    return None
  if filesystems.FileSystems.get_scheme(line) or os.path.isabs(line):
    return line
  return filesystems.FileSystems.join(filesystems.FileSystems.split(list_file)[0], line)


def folder_root(input_spec: str) -> str:
  """The folder an --input's files are found below.

  The folder itself, or a glob's folder before its first wildcard ('corpus/*/*.mid' -> 'corpus').
  """
  if filesystems.FileSystems.exists(input_spec) or not any(ch in input_spec for ch in '*?['):
    return input_spec.rstrip('/')
  literal = re.split(r'[*?[]', input_spec, maxsplit=1)[0]
  return literal.rpartition('/')[0] if '/' in literal else '.'


def label_sources(config) -> labels_lib.LabelSources:
  """The run's :class:`partita.labels.LabelSources`.

  ``config`` is a :class:`beam_pipelines.preprocess.PreprocessConfig`; the CSV is read here, once,
  and travels to the workers with the transforms.
  """
  csv_labels = {}
  if config.label_csv:
    text = read_bytes(config.label_csv).decode('utf-8-sig')
    csv_labels = labels_lib.read_csv(text, config.label_csv, config.label_name,
                                     config.label_csv_path_column)
  roots = tuple(folder_root(spec) for spec in config.input) if config.label_from_folder else ()
  return labels_lib.LabelSources(csv_labels=csv_labels, name_regex=config.label_regex,
                                 folder_roots=roots,
                                 unknown_names=tuple(labels_lib.normalize(name)
                                                     for name in config.unknown_labels))


def pack_paths(batch: list[elements.MatchedFile]) -> bytes:
  """A batch of matched files as one compressed value (sorted: neighbours share prefixes)."""
  return zlib.compress(json.dumps(sorted(batch)).encode(), 9)


def unpack_paths(packed: bytes) -> list[elements.MatchedFile]:
  """The matched files of :func:`pack_paths`' value."""
  return [elements.MatchedFile(path, size) for path, size in json.loads(zlib.decompress(packed))]


def read_bytes(path: str) -> bytes:
  """The bytes of the file at ``path`` (local or any filesystem Beam knows), as stored."""
  with filesystems.FileSystems.open(
      path, compression_type=filesystem.CompressionTypes.UNCOMPRESSED) as f:
    return f.read()


class ReadFileFn(beam.DoFn):
  """MatchedFile -> InputBytes; too large or unreadable files become dead letters."""

  def __init__(self, max_file_bytes: int):
    self._max_file_bytes = max_file_bytes
    self._read = metrics.Metrics.counter('read', 'files_read')

  def process(self, matched: elements.MatchedFile):
    """Yields the file's InputBytes, or its dead letter (``too_large``, ``unreadable``)."""
    if matched.size > self._max_file_bytes:
      yield beam_outputs.dead_letter(matched.path, 'too_large',
                                     f'{matched.size} bytes > limit {self._max_file_bytes}')
      return
    try:
      data = read_bytes(matched.path)
    except Exception as e:  # permissions, vanished files, transient storage errors
      yield beam_outputs.dead_letter(matched.path, 'unreadable', f'{type(e).__name__}: {e}')
      return
    self._read.inc()
    yield elements.InputBytes(matched.path, data)


class MatchListedFn(beam.DoFn):
  """A line of an --input-list file -> FileMetadata.

  A path that matches nothing is a dead letter (the rest of the list still runs).
  """

  def __init__(self, list_file: str):
    self._list_file = list_file

  def process(self, line):
    """Yields the FileMetadata of the path on ``line`` (nothing for a blank or '#' comment line)."""
    path = listed_path(self._list_file, line)
    if path is None:
      return
    try:
      matched = filesystems.FileSystems.match([escape_glob(path)])[0].metadata_list
    except Exception as e:  # Beam raises BeamIOError for a path that does not exist
      matched, error = [], f'{type(e).__name__}: {e}'
    else:
      error = 'no such file'
    if not matched:
      yield beam_outputs.dead_letter(path, 'not_found', error)
    yield from matched


def note_sequence_name(path: str, index: int) -> str:
  """The input name of a TFRecord file's ``index``-th NoteSequence."""
  return f'{path}#{index}'


def note_sequence_place(name: str) -> tuple[str, int]:
  """The TFRecord file and the index of the NoteSequence named ``name``.

  The inverse of :func:`note_sequence_name`.
  """
  path, _, index = name.rpartition('#')
  return path, int(index)


def note_sequence_records(tf, path: str):
  """Yields the serialized records of a TFRecord file (.gz: GZIP) in order.

  ``tf`` is TensorFlow, imported by the caller on a worker (Beam's driver never needs it).

  Raises:
    tf.errors.DataLossError: at a truncated or corrupt record.
  """
  compression = 'GZIP' if path.lower().endswith('.gz') else ''
  for record in tf.data.TFRecordDataset(path, compression_type=compression):
    yield record.numpy()


class ReadNoteSequencesFn(beam.DoFn):
  """A TFRecord file of NoteSequence protos -> InputBytes(path#index, serialized NoteSequence).

  A corrupt record ends the readable part of its file: it becomes one dead letter, and the
  records before it are kept.
  """

  def setup(self):
    """Imports TensorFlow on the worker."""
    import tensorflow as tf  # imported on workers only: Beam's driver never needs it.
    self._tf = tf

  def process(self, metadata):
    """Yields the InputBytes of each record of the file, and a dead letter where it is corrupt."""
    path = metadata.path
    index = 0
    try:
      for record in note_sequence_records(self._tf, path):
        yield elements.InputBytes(note_sequence_name(path, index), record)
        index += 1
    except Exception as e:  # tf.errors.DataLossError for a truncated or corrupt file
      # TF prefixes the message with the graph node that raised it: noise for the reader.
      message = re.sub(r'\{\{.*?\}\}', '', str(e)).strip()
      yield beam_outputs.dead_letter(note_sequence_name(path, index), 'corrupt_tfrecord',
                                     f'{type(e).__name__}: {message}')


class ReadInputs(beam.PTransform):
  """The job's inputs -> their bytes, the dead letters of those not read, and a digest per input.

  Applied to the pipeline; ``config`` is a :class:`beam_pipelines.preprocess.PreprocessConfig`.
  Outputs a dict of PCollections:

  * ``midi``: the :class:`~beam_pipelines.elements.InputBytes` of every MIDI file matched by
    ``--input`` or listed in ``--input-list`` (other files that a folder or glob matches are
    not inputs);
  * ``note_sequences`` (only with ``--note-sequences``): the ``InputBytes`` of each record,
    named ``path#index``; the records of one file are read and parsed by one worker, since
    shuffling them would carry every note;
  * ``dead_letter``: inputs that were never read (``not_found``, ``too_large``,
    ``unreadable``, ``corrupt_tfrecord``);
  * ``input_digests``: one hex digest per input, of its bytes if read and of its name if not;
    their number is the run's count of inputs, their sorted concatenation its fingerprint.
  """

  def __init__(self, config):
    super().__init__()
    self._config = config

  def expand(self, pbegin):
    """Matches and reads every kind of input the config names; see the class docstring."""
    config = self._config
    patterns = [pattern for spec in config.input for pattern in input_patterns(spec)]
    matched = [pbegin | 'Patterns' >> beam.Create(patterns) | 'Match' >> fileio.MatchAll()]
    unread = []
    if config.input_list:
      listed = (pbegin
                | 'ReadInputList' >> beam.io.ReadFromText(config.input_list)
                | 'MatchListed' >> beam.ParDo(MatchListedFn(config.input_list)).with_outputs(
                    beam_outputs.TAG, main='files'))
      matched.append(listed.files)
      unread.append(listed[beam_outputs.TAG])
    files = (matched
             | 'AllMatched' >> beam.Flatten()
             | 'OnlyMidi' >> beam.Filter(lambda m: m.path.lower().endswith(constants.MIDI_SUFFIXES))
             # Only packed batches of paths and sizes cross the shuffle that spreads the reads
             # over workers.
             | 'PathAndSize' >> beam.Map(lambda m: elements.MatchedFile(m.path, m.size_in_bytes))
             | 'Batch' >> beam.BatchElements(min_batch_size=PATHS_PER_BATCH,
                                             max_batch_size=PATHS_PER_BATCH)
             | 'Pack' >> beam.Map(pack_paths)
             | 'Reshuffle' >> beam.Reshuffle()
             | 'Unpack' >> beam.FlatMap(unpack_paths))
    read = files | 'Read' >> beam.ParDo(ReadFileFn(config.max_file_bytes)).with_outputs(
        beam_outputs.TAG, main='files')
    outputs = {MIDI: read.files}
    unread.append(read[beam_outputs.TAG])
    if config.note_sequences:
      sequences = (pbegin
                   | 'NoteSequencePatterns' >> beam.Create(list(config.note_sequences))
                   | 'MatchNoteSequences' >> fileio.MatchAll()
                   | 'ReshuffleNoteSequenceFiles' >> beam.Reshuffle()
                   | 'ReadNoteSequences' >> beam.ParDo(ReadNoteSequencesFn()).with_outputs(
                       beam_outputs.TAG, main='records'))
      outputs[NOTE_SEQUENCES] = sequences.records
      unread.append(sequences[beam_outputs.TAG])
    outputs[beam_outputs.TAG] = unread | 'AllUnread' >> beam.Flatten()
    read_inputs = [outputs[kind] for kind in (MIDI, NOTE_SEQUENCES) if kind in outputs]
    outputs['input_digests'] = (
        (read_inputs | 'AllRead' >> beam.Flatten()
         | 'DigestRead' >> beam.Map(lambda read: hashlib.md5(read.data).hexdigest()),
         outputs[beam_outputs.TAG]
         | 'DigestUnread' >> beam.Map(lambda d: hashlib.md5(d['input'].encode()).hexdigest()))
        | 'AllDigests' >> beam.Flatten())
    return outputs


class ReadFileAgainFn(beam.DoFn):
  """A MIDI Survivor -> SurvivorBytes, or on ``lost`` a Lost if it can no longer be read."""

  def process(self, survivor: elements.Survivor):
    """Yields the survivor's SurvivorBytes, or on ``lost`` a Lost if it can no longer be read."""
    try:
      data = read_bytes(survivor.input.name)
    except Exception as e:  # the file vanished or became unreadable during the run
      yield beam.pvalue.TaggedOutput(
          'lost', elements.Lost(survivor, 'unreadable', f'{type(e).__name__}: {e}'))
      return
    yield elements.SurvivorBytes(survivor, data)


class ReadNoteSequencesAgainFn(beam.DoFn):
  """(TFRecord path, its Survivors) -> a SurvivorBytes per survivor, or a Lost on ``lost``.

  A SurvivorBytes holds the serialized NoteSequence; a Lost goes to ``lost`` for each survivor
  it can no longer read. The file is read once, in order, for all its survivors.
  """

  def setup(self):
    """Imports TensorFlow on the worker."""
    import tensorflow as tf  # imported on workers only: Beam's driver never needs it.
    self._tf = tf

  def process(self, element):
    """Yields the file's survivors' SurvivorBytes, and on ``lost`` a Lost for each not read."""
    path, survivors = element
    wanted = {note_sequence_place(survivor.input.name)[1]: survivor for survivor in survivors}
    detail = 'the file has fewer records than when it was first read'
    try:
      for index, record in enumerate(note_sequence_records(self._tf, path)):
        if index in wanted:
          yield elements.SurvivorBytes(wanted.pop(index), record)
    except Exception as e:  # tf.errors.DataLossError: the file changed during the run
      detail = f'{type(e).__name__}: {e}'
    for survivor in wanted.values():
      yield beam.pvalue.TaggedOutput('lost', elements.Lost(survivor, 'unreadable', detail))


class ReadAgain(beam.PTransform):
  """The dedup's survivors -> their bytes, read a second time.

  The first read's bytes are parsed and dropped once their fingerprint is known, so the dedup
  shuffles fingerprints and names only; each surviving input is read (and parsed) again after
  it, in the stage that writes its chunks. Applied to :class:`~beam_pipelines.elements.Survivor`
  elements, of kind :data:`MIDI` or, if ``note_sequences``, :data:`NOTE_SEQUENCES`; outputs a
  dict: ``pieces``, a ``SurvivorBytes`` each, and ``lost``, a ``Lost`` for each that can no
  longer be read (it changed or vanished during the run).
  """

  def __init__(self, note_sequences: bool):
    super().__init__()
    # Without NoteSequence inputs, no worker imports TensorFlow (about 400 MB) to read them.
    self._note_sequences = note_sequences

  def expand(self, survivors):
    """Reads each MIDI survivor alone, and NoteSequence survivors grouped by their TFRecord file."""
    if not self._note_sequences:
      files = survivors | 'ReadFiles' >> beam.ParDo(ReadFileAgainFn()).with_outputs(
          'lost', main='pieces')
      return {'pieces': files.pieces, 'lost': files.lost}
    by_kind = survivors | 'ByKind' >> beam.Partition(
        lambda survivor, _: int(survivor.input.kind == NOTE_SEQUENCES), 2)
    files = by_kind[0] | 'ReadFiles' >> beam.ParDo(ReadFileAgainFn()).with_outputs(
        'lost', main='pieces')
    sequences = (by_kind[1]
                 | 'ByTFRecordFile' >> beam.Map(
                     lambda survivor: (note_sequence_place(survivor.input.name)[0], survivor)
                 ).with_output_types(tuple[str, elements.Survivor])
                 | 'GroupByFile' >> beam.GroupByKey()
                 | 'ReadNoteSequences' >> beam.ParDo(ReadNoteSequencesAgainFn()).with_outputs(
                     'lost', main='pieces'))
    return {output: (files[output], sequences[output]) | f'All{output.title()}' >> beam.Flatten()
            for output in ('pieces', 'lost')}


def matching_files(pattern: str) -> list[str]:
  """Paths matching ``pattern``; none (rather than an error) where nothing exists."""
  try:
    return [m.path for m in filesystems.FileSystems.match([pattern])[0].metadata_list]
  except Exception:  # Beam raises BeamIOError where a literal path does not exist
    return []


def check_inputs(config) -> int:
  """Fails early, before anything is written, on inputs that cannot give a single piece.

  ``config`` is a :class:`beam_pipelines.preprocess.PreprocessConfig`. Returns the number of
  inputs found: MIDI files matched, paths listed, and NoteSequence files (one each, however many
  sequences a file holds).

  Raises:
    FileNotFoundError: an --input or --note-sequences entry matches no file, the --input-list
      file does not exist, or no input names any file at all.
  """
  if not (config.input or config.input_list or config.note_sequences):
    raise FileNotFoundError('no input: give --input, --input-list or --note-sequences')
  midi_files = 0
  for spec in config.input:
    matched = [p for pattern in input_patterns(spec) for p in matching_files(pattern)]
    if not matched:
      raise FileNotFoundError(f'--input {spec} matches no file')
    midi_files += sum(p.lower().endswith(constants.MIDI_SUFFIXES) for p in matched)
  if config.input and not midi_files and not (config.input_list or config.note_sequences):
    raise FileNotFoundError(f'no .mid or .midi file matches --input {" ".join(config.input)}')
  listed = 0
  if config.input_list:
    if not filesystems.FileSystems.exists(config.input_list):
      raise FileNotFoundError(f'--input-list {config.input_list} does not exist')
    with filesystems.FileSystems.open(config.input_list) as f:
      listed = sum(listed_path(config.input_list, line.decode(errors='replace')) is not None
                   for line in f)
  sequence_files = 0
  for pattern in config.note_sequences:
    matched = matching_files(pattern)
    if not matched:
      raise FileNotFoundError(f'--note-sequences {pattern} matches no file')
    sequence_files += len(matched)
  return midi_files + listed + sequence_files
