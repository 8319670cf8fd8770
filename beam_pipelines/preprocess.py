r"""Apache Beam job: MIDI files -> deduplicated, split, chunked TFRecords + info.json.

    python -m beam_pipelines.preprocess --input 'corpus/**/*.mid' --output data/ \
        [--input-list paths.txt] [--note-sequences 'maestro/*.tfrecord'] \
        [--window-length 64] [Beam pipeline options, e.g. --runner DataflowRunner ...]

The job is seven named transforms and the shared dead-letter writer, wired by
:func:`build_pipeline`:

* :class:`beam_pipelines.inputs.ReadInputs`: match every input and read its bytes;
* :class:`ParseAndDedup`: parse (in a child process, :mod:`partita.isolation`) and keep each
  piece once, deciding on fingerprints and names alone; unless ``--near-duplicates off``, the
  parse also sketches each piece (256 bytes, :mod:`partita.near_duplicates`);
* :class:`beam_pipelines.families.FindFamilies` and
  :class:`~beam_pipelines.families.AssignFamilies` (``same-split`` or ``keep-one``): group
  near-duplicate pieces into families on their sketches, give each survivor its family's id,
  which draws its split, and under ``keep-one`` keep only each family's longest member;
* :class:`beam_pipelines.inputs.ReadAgain`: read each surviving input a second time;
* :class:`WriteSplits`: load each survivor's piece where its first parse kept it (a local run)
  or parse it again (in-process when its bytes are the ones the isolated first parse accepted),
  split by its family's content hash, cut overlapping chunks, write shards;
* :class:`beam_pipelines.outputs.WriteDeadLetters`: every rejected input, with its reason;
* :class:`beam_pipelines.info.WriteInfo`: info.json and the COMPLETED marker, once every shard
  and dead letter is written.

Why no notes cross the shuffle: what crosses a shuffle is what a runner must hold (the
DirectRunner, in memory) or pay to move (Dataflow). Deciding the dedup on 16-byte fingerprints
and names, then reading the survivors again in the stage that writes their chunks, keeps the
shuffle at about 200 bytes a file (mostly its path, once: the reads are spread over workers in
packed batches of paths; the near-duplicate search adds its sketch table's 330) instead of ten
bytes a note. That stage needs each survivor's notes again. A local run (every worker on this
machine, :func:`beam_pipelines.runner.runs_here`) keeps each parsed piece in a temporary folder
of its own (:mod:`partita.kept_pieces`: about 13 bytes a note on disk, removed when the job
ends) and loads it; elsewhere the survivor is parsed again, about a millisecond a file, with no
child process: an 8-byte digest of the bytes travels with each survivor, and bytes the isolated
first parse accepted parse the same way.

Output layout (the contract in ``partita.contract``; dead letters in ``partita.failures``)::

    OUTPUT/train|validation|test/<split>-SSSSS-of-NNNNN.tfrecord.gz   chunks as tf.train.Example
    OUTPUT/dead_letter/dead_letters-SSSSS-of-NNNNN.jsonl               {input, reason, detail}
    OUTPUT/info.json                                                   features, counts, statistics
    OUTPUT/COMPLETED                                                   written last

Every input (a MIDI file, a listed path, a NoteSequence) ends up as exactly one of: a written
piece, a duplicate of a written piece (same notes), a near-duplicate that ``keep-one`` dropped
for a longer member of its family, or a dead letter with a reason (a survivor that changed or
vanished between its two reads is a dead letter, ``changed_during_run`` or ``unreadable``, and
its copies stay duplicates). ``info.json`` records the four counts.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import logging
import re
import shutil
import sys
import tempfile

import apache_beam as beam
from apache_beam import coders, metrics
from apache_beam.io import filesystems
from apache_beam.utils import windowed_value

from beam_pipelines import elements, families, inputs, runner, tfrecord_sink
from beam_pipelines import info as info_lib
from beam_pipelines import outputs as beam_outputs
from partita import config_tree, constants, contract, failures, kept_pieces
from partita import isolation as isolation_lib
from partita import labels as labels_lib
from partita import notes as notes_lib

INPUTS = 'inputs (at least one; any mix; local or gs://)'
NOTES = 'which notes'
LABELS = ('labels (a composer, or another label: the first source that knows a piece\'s wins, '
          'in this order; a piece none knows is "unknown")')
LIMITS = 'limits (inputs beyond them become dead letters)'


def int_list(text: str) -> tuple[int, ...]:
  """'0-7,40' -> (0, 1, 2, 3, 4, 5, 6, 7, 40)."""
  values = []
  for item in text.split(','):
    low, _, high = item.partition('-')
    values += range(int(low), int(high or low) + 1)
  return tuple(values)


def comma_list(text: str) -> tuple[str, ...]:
  """'a, b' -> ('a', 'b')."""
  return tuple(item.strip() for item in text.split(',') if item.strip())


def split_ratios(text: str) -> tuple[tuple[str, float], ...]:
  """'train=0.8,validation=0.1,test=0.1' -> (('train', 0.8), ...)."""
  ratios = []
  for item in text.split(','):
    name, _, weight = item.partition('=')
    ratios.append((name, float(weight) if weight else -1.0))
  return tuple(ratios)


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
  """Options of one preprocessing run, each with its command-line flag.

  They are stored verbatim in info.json.

  The inputs are any mix of MIDI globs, folders or files (``input``), a text file listing MIDI
  paths (``input_list``) and globs of TFRecord files of NoteSequence protos
  (``note_sequences``); a single string is accepted for ``input``.
  """
  input: tuple[str, ...] = config_tree.option(
      (), 'MIDI glob (quote it), folder (searched recursively for .mid/.midi in any case) or '
      'single file; repeatable', repeat=True, metavar='GLOB|FOLDER|FILE', group=INPUTS)
  output: str = config_tree.option('', 'output folder, local or gs:// (required)')
  input_list: str = config_tree.option(
      '', 'text file with one MIDI path per line (blank and # lines skipped; relative paths are '
      'relative to the list file); paths that do not exist become dead letters', metavar='FILE',
      group=INPUTS)
  note_sequences: tuple[str, ...] = config_tree.option(
      (), 'TFRecord files of NoteSequence protos (Magenta, MAESTRO); .gz files are read as GZIP; '
      "each sequence is one input; repeatable; needs the project's notesequence extra",
      repeat=True, metavar='GLOB', group=INPUTS)
  window_length: int = config_tree.option(64, 'input notes per training window')
  # Chunks overlap by window_length notes, so disk holds (stride + window_length) / stride
  # copies of each note.
  stride: int = config_tree.option(192, 'windows per stored chunk')
  split_ratios: tuple[tuple[str, float], ...] = config_tree.option(
      (('train', 0.8), ('validation', 0.1), ('test', 0.1)),
      'split ratios by content fingerprint', flag='--split', parse=split_ratios,
      metavar='NAME=WEIGHT,...')
  compress: bool = config_tree.option(True, 'write plain .tfrecord', flag='--no-compress',
                                      sets=False)
  max_file_bytes: int = config_tree.option(16 * 2**20, 'bytes per input file', group=LIMITS)
  max_notes: int = config_tree.option(2_000_000, 'notes per piece', group=LIMITS)
  apply_sustain: bool = config_tree.option(True, 'ignore the sustain pedal', flag='--no-sustain',
                                           sets=False, group=NOTES)
  programs: tuple[int, ...] = config_tree.option(
      (), 'keep only tracks with these General MIDI programs (0-127), e.g. 0-7,40-43; default: '
      'all', parse=int_list, metavar='LIST', group=NOTES)
  tracks: tuple[int, ...] = config_tree.option(
      (), 'keep only these tracks, counted from 0 (one per MIDI track, program and channel; '
      'NoteSequence instrument numbers); default: all', parse=int_list, metavar='LIST',
      group=NOTES)
  include_drums: bool = config_tree.option(
      False, 'keep drum tracks (channel 10), which are dropped by default', sets=True,
      group=NOTES)
  label_name: str = config_tree.option(
      'composer', 'what the labels are; names the CSV column and the NoteSequence field read',
      group=LABELS)
  label_csv: str = config_tree.option(
      '', 'metadata CSV with a path column and a column named --label-name (relative paths are '
      'relative to the CSV)', metavar='FILE', group=LABELS)
  label_csv_path_column: str = config_tree.option(
      '', f"the CSV's path column (default: the first of {', '.join(labels_lib.CSV_PATH_COLUMNS)})",
      metavar='COLUMN', group=LABELS)
  label_note_sequences: bool = config_tree.option(
      True, "ignore NoteSequence inputs' own field (composers for --label-name composer, else "
      'the field of that name in sequence_metadata)', flag='--no-label-note-sequences',
      sets=False, group=LABELS)
  label_regex: str = config_tree.option(
      '', "regular expression over each file's name; its group named label (or its first group) "
      "is the label, e.g. '^([^-]+)-' for composer-title.mid", metavar='REGEX', group=LABELS)
  label_from_folder: bool = config_tree.option(
      False, 'the first folder below an --input folder names the label (corpus/chopin/...)',
      sets=True, group=LABELS)
  unknown_labels: tuple[str, ...] = config_tree.option(
      labels_lib.DEFAULT_UNKNOWN_NAMES, 'label values that mean unknown', parse=comma_list,
      metavar='NAME,...', group=LABELS)
  min_label_pieces: int = config_tree.option(
      20, 'training pieces a label needs for an id of its own; rarer labels share "other"',
      group=LABELS)
  # Parse in a child process with these limits (see partita.isolation); False parses in-process.
  isolate_parser: bool = config_tree.option(
      True, 'parse in the worker process itself: a little faster, but a parser crash then '
      'fails the job instead of one file', flag='--no-isolation', sets=False, group=LIMITS)
  parse_timeout_seconds: float = config_tree.option(
      20.0, 'seconds one file may take to parse', flag='--parse-timeout', group=LIMITS)
  parse_memory_mb: int = config_tree.option(4096, 'memory one parse may use', group=LIMITS)
  near_duplicates: str = config_tree.option(
      families.SAME_SPLIT, 'what to do with near-duplicate pieces (a transposed copy, another '
      'tempo, an excerpt, a voice left out: see partita.near_duplicates): same-split puts each '
      'family of them in one split, drawn from a hash of its id; keep-one also keeps only its '
      'longest member and counts the others as near-duplicates; off splits every piece by its '
      'own notes (no search)',
      metavar='{' + ','.join(families.MODES) + '}')

  def __post_init__(self):
    if isinstance(self.input, str):
      object.__setattr__(self, 'input', (self.input,))
    if isinstance(self.note_sequences, str):
      object.__setattr__(self, 'note_sequences', (self.note_sequences,))

  def check(self) -> None:
    """Raises ValueError naming the first option that cannot work."""
    if not (self.input or self.input_list or self.note_sequences):
      raise ValueError('give at least one of --input, --input-list, --note-sequences')
    if not self.output:
      raise ValueError('--output is required')
    for name, weight in self.split_ratios:
      if name not in contract.SPLITS or weight < 0:
        given = f'{name}={weight:g}' if weight >= 0 else name
        raise ValueError(f'--split: expected NAME=WEIGHT with NAME in {contract.SPLITS}, got '
                         f'{given!r}')
    if self.window_length < 1 or self.stride < 1:
      raise ValueError('--window-length and --stride must be positive')
    if any(not 0 <= p < constants.PROGRAMS for p in self.programs):
      raise ValueError('--programs: General MIDI programs are 0-127')
    if self.label_regex:
      try:
        re.compile(self.label_regex)
      except re.error as e:
        raise ValueError(f'--label-regex: {e}') from e
    if self.min_label_pieces < 1:
      raise ValueError('--min-label-pieces must be at least 1')
    if self.near_duplicates not in families.MODES:
      raise ValueError(f'--near-duplicates: expected one of {", ".join(families.MODES)}, got '
                       f'{self.near_duplicates!r}')
    if self.note_sequences and not notes_lib.note_seq_installed():
      raise ValueError(f'--note-sequences: {notes_lib.NOTE_SEQ_MISSING}')

  def parse_options(self) -> notes_lib.ParseOptions:
    """The parser's options: the checks and track selection this run asks for."""
    return notes_lib.ParseOptions(min_notes=self.window_length + 1, max_notes=self.max_notes,
                                  apply_sustain=self.apply_sustain, programs=self.programs,
                                  tracks=self.tracks, include_drums=self.include_drums)

  def isolation_options(self) -> isolation_lib.IsolationOptions | None:
    """The parser's child-process limits, or None when the parser runs in the worker itself."""
    if not self.isolate_parser:
      return None
    return isolation_lib.IsolationOptions(timeout_seconds=self.parse_timeout_seconds,
                                          memory_bytes=self.parse_memory_mb * 2**20)


# How each kind of input (beam_pipelines.inputs) is parsed, and the label of its parse step.
# The dedup's key: the first 16 bytes of a piece's sha256 content fingerprint. A collision among
# 10^9 pieces has a chance near 10^-21, and half the bytes of the whole digest cross the shuffle.
FINGERPRINT_BYTES = 16
# The parse's output of PieceSketches for the near-duplicate search.
SKETCHES = 'sketches'
# The survivor carries a digest of its input's bytes this long: a second read that finds the
# same bytes parses them in-process, since the isolated first parse already accepted them.
INPUT_DIGEST_BYTES = 8

PARSERS = {inputs.MIDI: ('ParseMidi', notes_lib.parse_midi),
           inputs.NOTE_SEQUENCES: ('ParseNoteSequences', notes_lib.parse_note_sequence)}


def input_digest(data: bytes) -> bytes:
  """The digest of an input's bytes that tells its second read whether they changed."""
  return hashlib.blake2b(data, digest_size=INPUT_DIGEST_BYTES).digest()


class IsolatedParsingFn(beam.DoFn):
  """Base of the two DoFns that parse, in a child process or in the worker itself.

  With ``isolation``, each instance parses in one long-lived child process
  (:mod:`partita.isolation`), so a parser crash, hang or memory blow-up costs one file; without,
  in the worker itself. The child starts at the first isolated parse.
  """

  def __init__(self, options: notes_lib.ParseOptions,
               isolation: isolation_lib.IsolationOptions | None = None):
    self._options = options
    self._isolation = isolation

  def setup(self):
    """Makes the worker's parser process, if isolated; its child starts at the first parse."""
    self._parser = isolation_lib.ParserProcess(self._isolation) if self._isolation else None

  def parse(self, parse, data: bytes, known_safe: bool = False):
    """``parse(data, options)``, in the child if isolated and the bytes are not ``known_safe``.

    ``known_safe`` bytes were already parsed without harm. Raises RejectionError as ``parse`` does.
    """
    if self._parser and not known_safe:
      return self._parser.parse(parse, data, self._options)
    return parse(data, self._options)

  def teardown(self):
    """Stops the child process, if any."""
    if self._parser:
      self._parser.close()


@beam.typehints.with_output_types(tuple[bytes, elements.Copy])
class ParsePieceFn(IsolatedParsingFn):
  """InputBytes -> (fingerprint, Copy), and its PieceSketch on :data:`SKETCHES` if ``sketched``.

  Rejected inputs become dead letters.

  ``parse`` is :func:`partita.notes.parse_midi` or :func:`partita.notes.parse_note_sequence`,
  ``kind`` the matching kind of input (:data:`beam_pipelines.inputs.MIDI` by default). Only
  the piece's fingerprint, number of notes and (if ``sketched``) near-duplicate sketch come
  back from the parse, not its notes (the key is its first :data:`FINGERPRINT_BYTES` raw
  bytes): the dedup and the near-duplicate search need nothing else, and :class:`WriteSplits`
  parses the surviving inputs again; the copy's digest is :func:`input_digest` of the bytes,
  so that it knows whether they changed. Its label is the input's label name, or
  :data:`partita.labels.UNKNOWN`: from ``sources``, after the NoteSequence's own
  ``label_field`` (if given) for NoteSequence inputs.

  Isolated, the child parses one input while the outputs of the input before it go
  downstream (:meth:`partita.isolation.ParserProcess.parse_next`), so the worker's thread and
  the child work at the same time; the last input of a bundle is answered in
  :meth:`finish_bundle`.

  With ``worker_process`` (an attribute too: the runner started the worker for this job
  alone), the worker's objects alive at the parse's set-up, its modules' above all, leave the
  garbage collector's sight (:func:`beam_pipelines.runner.freeze_long_lived`): the parse is
  the job's first DoFn with a set-up, in every worker.
  """

  def __init__(self, parse, options: notes_lib.ParseOptions,
               isolation: isolation_lib.IsolationOptions | None = None, kind: str = inputs.MIDI,
               sources: labels_lib.LabelSources | None = None, label_field: str = '',
               sketched: bool = False, kept_folder: str = '', worker_process: bool = False):
    super().__init__(options, isolation)
    self.worker_process = worker_process
    self._fingerprint = functools.partial(notes_lib.fingerprint_size_and_sketch, parse, sketched)
    self._kept_folder = kept_folder
    self._kind = kind
    self._sources = sources or labels_lib.LabelSources()
    self._label_field = label_field if kind == inputs.NOTE_SEQUENCES else ''
    self._parsed = metrics.Metrics.counter('parse', 'pieces')
    self._notes = metrics.Metrics.counter('parse', 'notes')

  def setup(self):
    """Makes the parser process; in a worker of the job's own, freezes its objects first."""
    if self.worker_process:
      runner.freeze_long_lived()
    super().setup()

  def start_bundle(self):
    """Drops the answer to an input that a failed bundle left in flight."""
    # A failed bundle may have left an input in flight: its outputs belong to that bundle,
    # which the runner retries, not to this one.
    if self._parser:
      self._parser.finish()

  def process(self, read: elements.InputBytes, timestamp=beam.DoFn.TimestampParam,
              window=beam.DoFn.WindowParam):
    """Yields the outputs of ``read``; isolated, starts it and yields those of the input before."""
    # The input in its window, and the digest of its bytes (its copy's, and its kept piece's).
    context = (windowed_value.WindowedValue(read, timestamp, (window,)), input_digest(read.data))
    fingerprint = self._fingerprint
    if self._kept_folder:
      fingerprint = functools.partial(fingerprint, keep=functools.partial(
          kept_pieces.keep, self._kept_folder, context[1]))
    if not self._parser:
      yield from self.outputs(context, self.outcome(fingerprint, read.data))
      return
    done = self._parser.parse_next(fingerprint, read.data, self._options, context)
    if done:
      yield from self.outputs(*done)

  def finish_bundle(self):
    """Yields the outputs of the bundle's last input, which the child answers now."""
    done = self._parser and self._parser.finish()
    if done:
      yield from self.outputs(*done)

  def outcome(self, fingerprint, data: bytes):
    """The in-process ``fingerprint``'s fingerprint, size and sketch, or its RejectionError."""
    try:
      return fingerprint(data, self._options)
    except failures.RejectionError as e:
      return e
    except Exception as e:  # a bug on one odd file must cost that file, not the job
      return failures.RejectionError('internal_error', f'{type(e).__name__}: {e}')

  def outputs(self, context: tuple[windowed_value.WindowedValue, bytes], outcome):
    """The outputs for one input (in its window, which may not be the current element's).

    ``context`` is the input in its window and the :func:`input_digest` of its bytes.
    """
    windowed, digest = context
    read = windowed.value
    if isinstance(outcome, failures.RejectionError):
      letter = beam_outputs.dead_letter(read.name, outcome.reason, outcome.detail)
      yield beam.pvalue.TaggedOutput(letter.tag, windowed.with_value(letter.value))
      return
    fingerprint, num_notes, sketch, place = outcome
    self._parsed.inc()
    self._notes.inc(num_notes)
    key = bytes.fromhex(fingerprint)[:FINGERPRINT_BYTES]
    parsed = elements.Input(read.name, self._kind, digest, place)
    yield windowed.with_value((key, elements.Copy(parsed, self.label(read.name, read.data))))
    if sketch:
      yield beam.pvalue.TaggedOutput(SKETCHES, windowed.with_value(elements.PieceSketch(
          key, read.name, num_notes, sketch.shingles, sketch.minhash)))

  def label(self, name: str, data: bytes) -> str:
    """The label name of the input ``name`` with bytes ``data``, or ``partita.labels.UNKNOWN``."""
    # The proto already parsed in the (isolated) parse above, so decoding it here is safe.
    own = notes_lib.note_sequence_label(data, self._label_field) if self._label_field else ''
    return (self._sources.known(own) or self._sources.from_name(name)
            or labels_lib.UNKNOWN)


@beam.typehints.with_input_types(elements.Copy)
@beam.typehints.with_output_types(elements.Kept)
class KeepFirstPathFn(beam.CombineFn):
  """Copies of one piece -> :class:`~beam_pipelines.elements.Kept`.

  Keeps the input with the smallest name; counts copies; labels the piece with the label of the
  smallest-named copy that has one (an unknown copy never overrides a known one) and flags a
  conflict when the copies carry two different known labels.
  """

  def create_accumulator(self):
    """No copy yet."""
    return elements.DedupAccumulator(None, 0, None, False)

  def add_input(self, accumulator, element):
    """Adds one copy."""
    single = elements.DedupAccumulator(element, 1, None, False)
    return self.merge_accumulators([accumulator, single])

  def merge_accumulators(self, accumulators):
    """Keeps the smallest-named copy and labelled copy of all, sums the copies, flags conflicts."""
    smallest, copies, labelled, conflict, labels = None, 0, None, False, set()
    for accumulator in accumulators:
      copies += accumulator.copies
      conflict |= accumulator.conflict
      candidate = accumulator.smallest
      if candidate is not None and (smallest is None
                                    or candidate.input.name < smallest.input.name):
        smallest = candidate
      candidate_labelled = accumulator.labelled or self.own_label(candidate)
      if candidate_labelled is not None:
        labels.add(candidate_labelled.label)
        if labelled is None or candidate_labelled.name < labelled.name:
          labelled = candidate_labelled
    if labelled is not None and labelled == self.own_label(smallest):
      labelled = None
    return elements.DedupAccumulator(smallest, copies, labelled, conflict or len(labels) > 1)

  @staticmethod
  def own_label(copy: elements.Copy | None) -> elements.NameAndLabel | None:
    """The name and label of a copy whose label is known, else None."""
    if copy is None or copy.label == labels_lib.UNKNOWN:
      return None
    return elements.NameAndLabel(copy.input.name, copy.label)

  def extract_output(self, accumulator):
    """The verdict: the smallest-named copy's input, the copies, the winning label, the conflict."""
    labelled = accumulator.labelled or self.own_label(accumulator.smallest)
    smallest = accumulator.smallest or elements.Copy(None, labels_lib.UNKNOWN)
    return elements.Kept(smallest.input, accumulator.copies,
                         labelled.label if labelled else labels_lib.UNKNOWN, accumulator.conflict)

  def get_accumulator_coder(self):
    """The accumulator's RowCoder (registered in ``beam_pipelines.elements``), not a pickler."""
    return coders.registry.get_coder(elements.DedupAccumulator)


def as_survivor(fingerprint: bytes, kept: elements.Kept) -> elements.Survivor:
  """The dedup's verdict on the piece with ``fingerprint``, as the piece's survivor."""
  return elements.Survivor(fingerprint, kept.input, kept.copies, kept.label, kept.conflict)


class ParseAndDedup(beam.PTransform):
  """Inputs read -> one :class:`~beam_pipelines.elements.Survivor` per distinct piece.

  And the dead letters of inputs that are no piece.

  Applied to :class:`beam_pipelines.inputs.ReadInputs`' outputs: each kind of input present
  is parsed as :data:`PARSERS` says, crash-isolated as ``config`` says, and labelled from the
  sources ``config`` names. Inputs with the same notes are kept once, under the smallest name
  (:class:`KeepFirstPathFn`, which also says which label wins), and counted. Only
  fingerprints, names, labels and digests of bytes cross the dedup's shuffle
  (:func:`build_pipeline` reads and parses each survivor again), so it does not grow with the
  notes. Outputs a dict: ``survivors``, ``sketches`` (unless near-duplicates are off, a
  PieceSketch per parsed input that has one, straight from the parse: they join the search's
  tables in the parse's own stage, not the dedup's shuffle) and ``dead_letter``.
  ``kept_folder`` and ``worker_processes`` are :class:`ParsePieceFn`'s ``kept_folder`` and
  ``worker_process``.
  """

  def __init__(self, config: PreprocessConfig, kept_folder: str = '',
               worker_processes: bool = False):
    super().__init__()
    self._config = config
    self._kept_folder = kept_folder
    self._worker_processes = worker_processes

  def expand(self, read):
    """Parses each kind of input, deduplicates the pieces and flattens the dead letters."""
    config = self._config
    sources = inputs.label_sources(config)
    label_field = ''
    if config.label_note_sequences:
      label_field = 'composers' if config.label_name == 'composer' else config.label_name
    parsed = []
    for kind, (step_label, parse) in PARSERS.items():
      if kind in read:
        parse_fn = ParsePieceFn(parse, config.parse_options(), config.isolation_options(), kind,
                                sources, label_field, config.near_duplicates != families.OFF,
                                self._kept_folder, self._worker_processes)
        parsed.append(read[kind] | step_label >> beam.ParDo(parse_fn).with_outputs(
            beam_outputs.TAG, SKETCHES, main='pieces'))
    kept = ([p.pieces for p in parsed]
            | 'AllPieces' >> beam.Flatten()
            | 'Dedup' >> beam.CombinePerKey(KeepFirstPathFn()))
    return {
        'survivors': kept | 'Survivors' >> beam.MapTuple(as_survivor).with_output_types(
            elements.Survivor),
        'sketches': ([p[SKETCHES] for p in parsed]
                     | 'AllSketches' >> beam.Flatten().with_output_types(elements.PieceSketch)),
        beam_outputs.TAG: ([p[beam_outputs.TAG] for p in parsed]
                           | 'AllRejected' >> beam.Flatten()),
    }


class SplitAndChunkFn(IsolatedParsingFn):
  """SurvivorBytes -> (its split, its chunks), and statistics on ``stats``; or a Lost on ``lost``.

  The chunks (tf.train.Example) go out as one run of framed records
  (:func:`beam_pipelines.tfrecord_sink.framed`), for
  :class:`beam_pipelines.tfrecord_sink.WriteShards`.

  With ``kept_folder``, the survivor's notes are those its first parse kept there
  (:mod:`partita.kept_pieces`) when its bytes are unchanged. Otherwise its bytes are parsed
  again, as its kind's :data:`PARSERS` entry: in-process when they are the bytes that the
  (isolated) first parse accepted, since the same bytes parse the same way; isolated as
  ``config`` says when they changed. One whose notes no longer have its fingerprint, or that no
  longer parses, goes to ``lost`` as a Lost. The Beam counters ``write/pieces_kept`` and
  ``write/pieces_parsed_again`` say which.
  """

  def __init__(self, config: PreprocessConfig, kept_folder: str = ''):
    super().__init__(config.parse_options(), config.isolation_options())
    self._config = config
    self._kept_folder = kept_folder
    self._loaded = metrics.Metrics.counter('write', 'pieces_kept')
    self._parsed_again = metrics.Metrics.counter('write', 'pieces_parsed_again')

  def process(self, read_again: elements.SurvivorBytes):
    """Yields the survivor's split and chunks, and its statistics on ``stats``; or a Lost."""
    survivor = read_again.survivor
    parse = PARSERS[survivor.input.kind][1]
    unchanged = input_digest(read_again.data) == survivor.input.digest
    piece = None
    if unchanged and self._kept_folder:
      piece = kept_pieces.load(self._kept_folder, survivor.input.kept, survivor.input.digest)
    try:
      if piece is None:
        piece = self.parse(parse, read_again.data, known_safe=unchanged)
        self._parsed_again.inc()
      else:
        self._loaded.inc()
    except failures.RejectionError as e:
      yield beam.pvalue.TaggedOutput('lost', elements.Lost(survivor, e.reason, e.detail))
      return
    except Exception as e:  # a bug on one odd file must cost that file, not the job
      yield beam.pvalue.TaggedOutput('lost', elements.Lost(survivor, 'internal_error',
                                                           f'{type(e).__name__}: {e}'))
      return
    # Unchanged bytes hold the notes that the dedup fingerprinted; changed ones must prove it.
    if (not unchanged and bytes.fromhex(notes_lib.content_fingerprint(piece))[:FINGERPRINT_BYTES]
        != survivor.fingerprint):
      yield beam.pvalue.TaggedOutput('lost', elements.Lost(
          survivor, 'changed_during_run', 'its notes changed after the dedup read them'))
      return
    split = notes_lib.split_for(families.split_key(survivor), dict(self._config.split_ratios))
    chunks = contract.serialized_chunks(piece, self._config.window_length, self._config.stride,
                                        survivor.label)
    yield split, tfrecord_sink.framed(chunks)
    stats = info_lib.piece_stats(piece, survivor.copies, len(chunks), self._config.window_length,
                                 survivor.label, survivor.conflict)
    yield beam.pvalue.TaggedOutput('stats', (split, stats))


class AccountLostFn(beam.DoFn):
  """Lost -> its dead letter, and on ``stats`` its copies as duplicates.

  So every input stays accounted for.
  """

  def __init__(self, split_ratios: dict[str, float]):
    self._split_ratios = split_ratios

  def process(self, lost: elements.Lost):
    """Yields the dead letter, and the lost piece's statistics on ``stats``."""
    survivor = lost.survivor
    yield beam_outputs.dead_letter(survivor.input.name, lost.reason, lost.detail)
    split = notes_lib.split_for(families.split_key(survivor), self._split_ratios)
    yield beam.pvalue.TaggedOutput('stats', (split, info_lib.lost_piece_stats(survivor.copies)))


@beam.typehints.with_input_types(elements.Survivor)
@beam.typehints.with_output_types(elements.Survivor)
class CountDuplicatesFn(beam.DoFn):
  """Counts every survivor's other copies, and the survivors whose copies disagree on their label.

  The counts are Beam metrics: ``dedup/duplicates`` and ``dedup/label_conflicts``.
  """

  def __init__(self):
    self._duplicates = metrics.Metrics.counter('dedup', 'duplicates')
    self._conflicts = metrics.Metrics.counter('dedup', 'label_conflicts')

  def process(self, survivor: elements.Survivor):
    """Counts the survivor and yields it unchanged."""
    self._duplicates.inc(survivor.copies - 1)
    self._conflicts.inc(int(survivor.conflict))
    yield survivor


class WriteSplits(beam.PTransform):
  """Survivors and their bytes -> chunks in TFRecord shards, one folder per split.

  Applied to :class:`beam_pipelines.inputs.ReadAgain`'s outputs. Outputs a dict: ``shards`` (the
  paths of the shards written), ``stats`` (split, the :func:`beam_pipelines.info.piece_stats` of
  its pieces summed) and ``dead_letter`` (the survivors lost since the dedup; their copies stay
  counted as duplicates).
  """

  def __init__(self, config: PreprocessConfig, kept_folder: str = ''):
    super().__init__()
    self._config = config
    self._kept_folder = kept_folder

  def expand(self, read_again):
    """Chunks the survivors, writes each split's shards and accounts for the lost survivors."""
    config = self._config
    chunked = read_again['pieces'] | 'SplitAndChunk' >> beam.ParDo(
        SplitAndChunkFn(config, self._kept_folder)).with_outputs('stats', 'lost', main='chunks')
    lost = ((read_again['lost'], chunked.lost)
            | 'AllLost' >> beam.Flatten()
            | 'AccountLost' >> beam.ParDo(AccountLostFn(dict(config.split_ratios))).with_outputs(
                beam_outputs.TAG, 'stats'))
    shards = chunked.chunks | 'WriteShards' >> tfrecord_sink.WriteShards(
        config.output, contract.SPLITS, config.compress)
    # Each stream is summed where it is made, before any Flatten: a Flatten of two stages'
    # outputs is materialised by the DirectRunner, which would hold every piece's statistics.
    sums = [chunked.stats | 'SumPerSplit' >> beam.CombinePerKey(info_lib.SumStatsFn()),
            lost.stats | 'SumLostPerSplit' >> beam.CombinePerKey(info_lib.SumStatsFn())]
    return {'shards': shards,
            'stats': (sums
                      | 'AllSums' >> beam.Flatten()
                      | 'MergePerSplit' >> beam.CombinePerKey(info_lib.SumStatsFn())),
            beam_outputs.TAG: lost[beam_outputs.TAG]}


def build_pipeline(pipeline: beam.Pipeline, config: PreprocessConfig, kept_folder: str = '',
                   worker_processes: bool = False) -> beam.PCollection:
  """Adds the preprocessing job to ``pipeline``; returns the PCollection of the final counts.

  With ``kept_folder`` (a folder every worker of the job sees), the first parse keeps each piece
  there and the writing stage loads it rather than parsing again (:mod:`partita.kept_pieces`).
  ``worker_processes``: the runner starts processes for this job alone to run its DoFns
  (:func:`beam_pipelines.runner.worker_processes`), whose parse freezes their objects.
  """
  read = pipeline | 'ReadInputs' >> inputs.ReadInputs(config)
  parsed = read | 'ParseAndDedup' >> ParseAndDedup(config, kept_folder, worker_processes)
  survivors = parsed['survivors'] | 'CountDuplicates' >> beam.ParDo(CountDuplicatesFn())
  searched = config.near_duplicates != families.OFF
  if searched:
    found = parsed['sketches'] | 'FindFamilies' >> families.FindFamilies()
    assigned = survivors | 'AssignFamilies' >> families.AssignFamilies(
        found, config.near_duplicates, dict(config.split_ratios))
    survivors = assigned['survivors']
  written = (survivors
             | 'ReadAgain' >> inputs.ReadAgain(bool(config.note_sequences))
             | 'WriteSplits' >> WriteSplits(config, kept_folder))
  rejected = ((read[beam_outputs.TAG], parsed[beam_outputs.TAG], written[beam_outputs.TAG])
              | 'AllDeadLetters' >> beam.Flatten())
  dead_letter_files = rejected | 'WriteDeadLetters' >> beam_outputs.WriteDeadLetters(config.output)
  outputs = {'split_stats': written['stats'], 'dead_letters': rejected,
             'input_digests': read['input_digests'],
             'written_files': ((written['shards'], dead_letter_files)
                               | 'AllOutputs' >> beam.Flatten())}
  if searched:
    outputs['families_found'] = found
    outputs['split_stats'] = ((written['stats'], assigned['stats'])
                              | 'WrittenAndDropped' >> beam.Flatten()
                              | 'SumSplits' >> beam.CombinePerKey(info_lib.SumStatsFn()))
  return outputs | 'WriteInfo' >> info_lib.WriteInfo(config)


def clear_previous_output(output: str) -> None:
  """Deletes what an earlier run left in ``output`` so no stale shard survives a rerun.

  The completion marker goes first: from here on the folder never looks complete until the
  new run writes its marker last. Folders are cleared file by file, which also works on object
  stores (gs://), where a folder is only a name prefix.
  """
  names = (contract.COMPLETED_MARKER, contract.INFO_FILE, failures.DEAD_LETTER_DIR,
           *contract.SPLITS)
  for name in names:
    path = filesystems.FileSystems.join(output, name)
    inside = inputs.matching_files(inputs.escape_glob(path) + '/**')
    if inside:
      filesystems.FileSystems.delete(inside)
    if filesystems.FileSystems.exists(path):
      filesystems.FileSystems.delete([path])


def run(config: PreprocessConfig, pipeline_args: list[str] | None = None) -> dict:
  """Runs the job to completion and returns the contents of the info.json it wrote.

  With no runner flags in ``pipeline_args``, the local runner uses every core for a large corpus
  and this process for a small one (``beam_pipelines.runner.local_mode``), and says which.

  Raises:
    FileNotFoundError: see :func:`inputs.check_inputs` (nothing is written).
  """
  found = inputs.check_inputs(config)
  mode = runner.local_mode(pipeline_args, found, runner.usable_cores(), runner.usable_memory())
  options = runner.pipeline_options([*(pipeline_args or ()), *mode.args])
  print(mode.reason, flush=True)
  clear_previous_output(config.output)
  # A local job's processes share this machine's disk: each piece is parsed once.
  kept_folder = (tempfile.mkdtemp(prefix='partita-parsed-') if runner.runs_here(options)
                 else '')
  try:
    with beam.Pipeline(options=options) as pipeline:
      build_pipeline(pipeline, config, kept_folder, runner.worker_processes(options))
  finally:
    if kept_folder:
      kept_pieces.close(kept_folder)
      shutil.rmtree(kept_folder, ignore_errors=True)
  with filesystems.FileSystems.open(
      filesystems.FileSystems.join(config.output, contract.INFO_FILE)) as f:
    return json.load(f)


def print_summary(info: dict, out=None) -> None:
  """The accounting of every input, then per-split sizes, for the console."""
  out = out or sys.stdout
  counts = info['counts']
  print(f"inputs: {counts['files_in']} = pieces written {counts['pieces_written']}"
        f" + duplicates {counts['duplicates']} + near-duplicates {counts['near_duplicates']}"
        f" + dead letters {counts['dead_letters']}", file=out)
  found = info['near_duplicates']
  if found['mode'] != families.OFF:
    print(f"  near-duplicates ({found['mode']}): {found['families']} families of "
          f"{found['pieces_in_families']} pieces (largest {found['largest_family']}), "
          f"{found['dropped']} dropped", file=out)
  for reason, count in counts['dead_letter_reasons'].items():
    print(f'  dead letter {reason}: {count}', file=out)
  for split in contract.SPLITS:
    s = info['splits'][split]
    print(f"  {split:<10} {s['pieces']:>6} pieces {s['notes']:>9} notes {s['windows']:>9} windows"
          f" in {len(s['files'])} shard(s)", file=out)
  if not counts['pieces_written']:
    print(f'no piece was written: every input is a dead letter (reasons in '
          f'{failures.DEAD_LETTER_DIR}/), a duplicate or a near-duplicate', file=out)


def argument_parser() -> argparse.ArgumentParser:
  """The command's flags (declared on :class:`PreprocessConfig`).

  Unrecognised flags are left for Beam.
  """
  parser = argparse.ArgumentParser(
      description='Turn a corpus of MIDI files (and/or NoteSequence TFRecords) into '
      'train/validation/test TFRecords of note chunks (pitch, step, duration, velocity), an '
      'info.json describing them, dead letters for every rejected input, and a COMPLETED marker. '
      'Pieces with the same notes are kept once; the split is a hash of the notes, and '
      'near-duplicates such as a transposed copy, another tempo or an excerpt share one split, '
      "drawn from their family's id (--near-duplicates, default same-split). Unrecognised "
      'flags are Apache Beam pipeline options (e.g. --runner DataflowRunner --project P '
      '--region R --temp_location gs://... --setup_file ./setup.py). With none of --runner, '
      '--direct_running_mode, --direct_num_workers, a local run uses one worker process per '
      f'core from {runner.MULTI_PROCESSING_INPUTS:,} inputs on, and this process below, and '
      'prints which. A local run parses each file once: it keeps each parsed piece in a '
      'temporary folder (under TMPDIR, about 13 bytes a note) until it ends.')
  parser.add_argument('--config', metavar='YAML',
                      help='preset of options (the names of PreprocessConfig); flags override it')
  parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                      help='override one option, e.g. --set max_notes=100000 (repeatable)')
  config_tree.add_flags(parser, PreprocessConfig)
  return parser


def parse_args(argv: list[str] | None) -> tuple[PreprocessConfig, list[str]]:
  """The run's config and the Beam pipeline options from the command line.

  Exits on a bad flag.
  """
  parser = argument_parser()
  args, pipeline_args = parser.parse_known_args(argv)
  try:
    config = config_tree.load(PreprocessConfig, args.config, args.set,
                              config_tree.flag_updates(args))
    config.check()
  except (ValueError, OSError) as e:
    parser.error(str(e))
  return config, pipeline_args


def main(argv: list[str] | None = None) -> None:
  """The ``python -m beam_pipelines.preprocess`` command: runs the job, prints its summary."""
  logging.getLogger().setLevel(logging.WARNING)
  config, pipeline_args = parse_args(argv)
  try:
    info = run(config, pipeline_args)
  except FileNotFoundError as e:
    sys.exit(f'error: {e}')
  print_summary(info)
  print(f'wrote {config.output}')


if __name__ == '__main__':
  # This process runs one job and exits: the modules just imported need no collecting, and
  # neither it nor the processes it starts (Beam's workers, the parser children) should keep
  # memory that grows with the corpus.
  runner.freeze_long_lived()
  runner.limit_malloc()
  main()
