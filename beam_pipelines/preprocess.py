r"""Apache Beam job: MIDI files -> deduplicated, split, chunked TFRecords + info.json.

    python -m beam_pipelines.preprocess --input 'corpus/**/*.mid' --output data/ \
        [--input-list paths.txt] [--note-sequences 'maestro/*.tfrecord'] \
        [--window-length 64] [Beam pipeline options, e.g. --runner DataflowRunner ...]

The job is four named transforms and the shared dead-letter writer, wired by
:func:`build_pipeline`:

* :class:`beam_pipelines.inputs.ReadInputs`: match every input and read its bytes;
* :class:`ParseAndDedup`: parse (in a child process, :mod:`partita.isolation`) and keep each
  piece's notes once;
* :class:`WriteSplits`: split by content hash, cut overlapping chunks, write shards;
* :class:`beam_pipelines.outputs.WriteDeadLetters`: every rejected input, with its reason;
* :class:`beam_pipelines.info.WriteInfo`: info.json and the COMPLETED marker, once every shard
  and dead letter is written.

Output layout (the contract in ``partita.contract``; dead letters in ``partita.failures``)::

    OUTPUT/train|validation|test/<split>-SSSSS-of-NNNNN.tfrecord.gz   chunks as tf.train.Example
    OUTPUT/dead_letter/dead_letters-SSSSS-of-NNNNN.jsonl               {input, reason, detail}
    OUTPUT/info.json                                                   features, counts, statistics
    OUTPUT/COMPLETED                                                   written last

Every input (a MIDI file, a listed path, a NoteSequence) ends up as exactly one of: a written
piece, a duplicate of a written piece (same notes), or a dead letter with a reason.
``info.json`` records the three counts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys

import apache_beam as beam
from apache_beam import metrics
from apache_beam.io import filesystem, filesystems
from apache_beam.options import pipeline_options

from beam_pipelines import info as info_lib
from beam_pipelines import inputs
from beam_pipelines import outputs as beam_outputs
from partita import config_tree, constants, contract, failures
from partita import isolation as isolation_lib
from partita import notes as notes_lib

INPUTS = 'inputs (at least one; any mix; local or gs://)'
NOTES = 'which notes'
LIMITS = 'limits (inputs beyond them become dead letters)'


def int_list(text: str) -> tuple[int, ...]:
  """'0-7,40' -> (0, 1, 2, 3, 4, 5, 6, 7, 40)."""
  values = []
  for item in text.split(','):
    low, _, high = item.partition('-')
    values += range(int(low), int(high or low) + 1)
  return tuple(values)


def split_ratios(text: str) -> tuple[tuple[str, float], ...]:
  """'train=0.8,validation=0.1,test=0.1' -> (('train', 0.8), ...)."""
  ratios = []
  for item in text.split(','):
    name, _, weight = item.partition('=')
    ratios.append((name, float(weight) if weight else -1.0))
  return tuple(ratios)


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
  """Options of one preprocessing run, each with its command-line flag; stored verbatim in
  info.json.

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
      'each sequence is one input; repeatable', repeat=True, metavar='GLOB', group=INPUTS)
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
  # Parse in a child process with these limits (see partita.isolation); False parses in-process.
  isolate_parser: bool = config_tree.option(
      True, 'parse in the worker process itself: a little faster, but a parser crash then '
      'fails the job instead of one file', flag='--no-isolation', sets=False, group=LIMITS)
  parse_timeout_seconds: float = config_tree.option(
      20.0, 'seconds one file may take to parse', flag='--parse-timeout', group=LIMITS)
  parse_memory_mb: int = config_tree.option(4096, 'memory one parse may use', group=LIMITS)

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
    if any(not 0 <= p < constants.PITCHES for p in self.programs):
      raise ValueError('--programs: General MIDI programs are 0-127')

  def parse_options(self) -> notes_lib.ParseOptions:
    return notes_lib.ParseOptions(min_notes=self.window_length + 1, max_notes=self.max_notes,
                                  apply_sustain=self.apply_sustain, programs=self.programs,
                                  tracks=self.tracks, include_drums=self.include_drums)

  def isolation_options(self) -> isolation_lib.IsolationOptions | None:
    if not self.isolate_parser:
      return None
    return isolation_lib.IsolationOptions(timeout_seconds=self.parse_timeout_seconds,
                                          memory_bytes=self.parse_memory_mb * 2**20)


class ParsePieceFn(beam.DoFn):
  """(path, bytes) -> (fingerprint, (path, notes)); rejected inputs become dead letters.

  ``parse`` is :func:`partita.notes.parse_midi` or :func:`partita.notes.parse_note_sequence`.
  With ``isolation`` it runs in a child process (:mod:`partita.isolation`), so a parser crash,
  hang or memory blow-up costs one file.
  """

  def __init__(self, parse, options: notes_lib.ParseOptions,
               isolation: isolation_lib.IsolationOptions | None = None):
    self._parse = parse
    self._options = options
    self._isolation = isolation
    self._parsed = metrics.Metrics.counter('parse', 'pieces')
    self._notes = metrics.Metrics.counter('parse', 'notes')

  def setup(self):
    self._parser = isolation_lib.ParserProcess(self._isolation) if self._isolation else None

  def process(self, element):
    path, data = element
    try:
      if self._parser:
        piece = self._parser.parse(self._parse, data, self._options)
      else:
        piece = self._parse(data, self._options)
    except failures.RejectionError as e:
      yield beam_outputs.dead_letter(path, e.reason, e.detail)
      return
    except Exception as e:  # a bug on one odd file must cost that file, not the job
      yield beam_outputs.dead_letter(path, 'internal_error', f'{type(e).__name__}: {e}')
      return
    self._parsed.inc()
    self._notes.inc(len(piece['pitch']))
    yield notes_lib.content_fingerprint(piece), (path, piece)

  def teardown(self):
    if self._parser:
      self._parser.close()


class KeepFirstPathFn(beam.CombineFn):
  """Among pieces with the same notes, keeps the one with the smallest path; counts copies."""

  def create_accumulator(self):
    return None, 0

  def add_input(self, accumulator, element):
    return self.merge_accumulators([accumulator, (element, 1)])

  def merge_accumulators(self, accumulators):
    kept, count = None, 0
    for candidate, n in accumulators:
      count += n
      if candidate is not None and (kept is None or candidate[0] < kept[0]):
        kept = candidate
    return kept, count

  def extract_output(self, accumulator):
    return accumulator


class ParseAndDedup(beam.PTransform):
  """Inputs read -> one ``(fingerprint, ((path, notes), copies))`` per distinct piece, and the
  dead letters of inputs that are no piece.

  Applied to :class:`beam_pipelines.inputs.ReadInputs`' outputs: ``midi`` is parsed with
  :func:`partita.notes.parse_midi`, ``note_sequences`` (if present) with
  :func:`partita.notes.parse_note_sequence`, crash-isolated as ``config`` says. Pieces with the
  same notes are kept once, under the smallest path; ``copies`` counts all of them. Outputs a
  dict: ``pieces`` and ``dead_letter``.
  """

  def __init__(self, config: PreprocessConfig):
    super().__init__()
    self._config = config

  def expand(self, read):
    parsers = {'midi': ('ParseMidi', notes_lib.parse_midi),
               'note_sequences': ('ParseNoteSequences', notes_lib.parse_note_sequence)}
    parsed = []
    for kind, (label, parse) in parsers.items():
      if kind in read:
        parse_fn = ParsePieceFn(parse, self._config.parse_options(),
                                self._config.isolation_options())
        parsed.append(read[kind] | label >> beam.ParDo(parse_fn).with_outputs(
            beam_outputs.TAG, main='pieces'))
    return {
        'pieces': ([p.pieces for p in parsed]
                   | 'AllPieces' >> beam.Flatten()
                   | 'Dedup' >> beam.CombinePerKey(KeepFirstPathFn())),
        beam_outputs.TAG: ([p[beam_outputs.TAG] for p in parsed]
                           | 'AllRejected' >> beam.Flatten()),
    }


class SplitAndChunkFn(beam.DoFn):
  """(fingerprint, ((path, notes), copies)) -> per-split serialized tf.train.Example chunks.

  Also emits per-piece statistics on the ``stats`` output.
  """

  def __init__(self, config: PreprocessConfig):
    self._config = config
    self._duplicates = metrics.Metrics.counter('dedup', 'duplicates')

  def process(self, element):
    fingerprint, ((path, piece), copies) = element
    if copies > 1:
      self._duplicates.inc(copies - 1)
    split = notes_lib.split_for(fingerprint, dict(self._config.split_ratios))
    chunks = contract.chunks(piece, self._config.window_length, self._config.stride)
    for chunk in chunks:
      yield beam.pvalue.TaggedOutput(split, contract.serialize_chunk(chunk))
    stats = info_lib.piece_stats(piece, copies, len(chunks), self._config.window_length)
    yield beam.pvalue.TaggedOutput('stats', (split, stats))


class WriteSplits(beam.PTransform):
  """Distinct pieces -> chunks in TFRecord shards, one folder per split.

  Outputs a dict: ``shards`` (the paths of the shards written) and ``stats`` (split, the
  :func:`beam_pipelines.info.piece_stats` of its pieces summed).
  """

  def __init__(self, config: PreprocessConfig):
    super().__init__()
    self._config = config

  def expand(self, pieces):
    config = self._config
    chunked = pieces | 'SplitAndChunk' >> beam.ParDo(SplitAndChunkFn(config)).with_outputs(
        'stats', *contract.SPLITS)
    suffix = '.tfrecord.gz' if config.compress else '.tfrecord'
    compression = (filesystem.CompressionTypes.GZIP if config.compress
                   else filesystem.CompressionTypes.UNCOMPRESSED)
    shards = [chunked[split] | f'Write{split.title()}' >> beam.io.WriteToTFRecord(
        filesystems.FileSystems.join(config.output, split, split), file_name_suffix=suffix,
        compression_type=compression) for split in contract.SPLITS]
    return {'shards': shards | 'AllShards' >> beam.Flatten(),
            'stats': chunked.stats | 'SumPerSplit' >> beam.CombinePerKey(info_lib.SumStatsFn())}


def build_pipeline(pipeline: beam.Pipeline, config: PreprocessConfig) -> beam.PCollection:
  """Adds the preprocessing job to ``pipeline``; returns the PCollection of the final counts."""
  read = pipeline | 'ReadInputs' >> inputs.ReadInputs(config)
  parsed = read | 'ParseAndDedup' >> ParseAndDedup(config)
  written = parsed['pieces'] | 'WriteSplits' >> WriteSplits(config)
  rejected = ((read[beam_outputs.TAG], parsed[beam_outputs.TAG])
              | 'AllDeadLetters' >> beam.Flatten())
  dead_letter_files = rejected | 'WriteDeadLetters' >> beam_outputs.WriteDeadLetters(config.output)
  return ({'split_stats': written['stats'], 'dead_letters': rejected,
           'input_digests': read['input_digests'],
           'written_files': ((written['shards'], dead_letter_files)
                             | 'AllOutputs' >> beam.Flatten())}
          | 'WriteInfo' >> info_lib.WriteInfo(config))


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

  Raises:
    FileNotFoundError: see :func:`inputs.check_inputs` (nothing is written).
  """
  inputs.check_inputs(config)
  clear_previous_output(config.output)
  options = pipeline_options.PipelineOptions(pipeline_args or [])
  with beam.Pipeline(options=options) as pipeline:
    build_pipeline(pipeline, config)
  with filesystems.FileSystems.open(
      filesystems.FileSystems.join(config.output, contract.INFO_FILE)) as f:
    return json.load(f)


def print_summary(info: dict, out=None) -> None:
  """The accounting of every input, then per-split sizes, for the console."""
  out = out or sys.stdout
  counts = info['counts']
  print(f"inputs: {counts['files_in']} = pieces written {counts['pieces_written']}"
        f" + duplicates {counts['duplicates']} + dead letters {counts['dead_letters']}", file=out)
  for reason, count in counts['dead_letter_reasons'].items():
    print(f'  dead letter {reason}: {count}', file=out)
  for split in contract.SPLITS:
    s = info['splits'][split]
    print(f"  {split:<10} {s['pieces']:>6} pieces {s['notes']:>9} notes {s['windows']:>9} windows"
          f" in {len(s['files'])} shard(s)", file=out)
  if not counts['pieces_written']:
    print(f'no piece was written: every input is a dead letter (reasons in '
          f'{failures.DEAD_LETTER_DIR}/) or a duplicate', file=out)


def argument_parser() -> argparse.ArgumentParser:
  """The command's flags (declared on :class:`PreprocessConfig`); unrecognised flags are left
  for Beam."""
  parser = argparse.ArgumentParser(
      description='Turn a corpus of MIDI files (and/or NoteSequence TFRecords) into '
      'train/validation/test TFRecords of note chunks (pitch, step, duration, velocity), an '
      'info.json describing them, dead letters for every rejected input, and a COMPLETED marker. '
      'Pieces with the same notes are kept once; the split is a hash of the notes. Unrecognised '
      'flags are Apache Beam pipeline options (e.g. --runner DataflowRunner --project P '
      '--region R --temp_location gs://... --setup_file ./setup.py).')
  parser.add_argument('--config', metavar='YAML',
                      help='preset of options (the names of PreprocessConfig); flags override it')
  parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                      help='override one option, e.g. --set max_notes=100000 (repeatable)')
  config_tree.add_flags(parser, PreprocessConfig)
  return parser


def parse_args(argv: list[str] | None) -> tuple[PreprocessConfig, list[str]]:
  """The run's config and the Beam pipeline options from the command line; exits on a bad
  flag."""
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
  logging.getLogger().setLevel(logging.WARNING)
  config, pipeline_args = parse_args(argv)
  try:
    info = run(config, pipeline_args)
  except FileNotFoundError as e:
    sys.exit(f'error: {e}')
  print_summary(info)
  print(f'wrote {config.output}')


if __name__ == '__main__':
  main()
