r"""Apache Beam job: generate thousands of pieces from an export, local or on Dataflow.

    python -m serving.beam_generate --model MODEL_DIR/export --out OUT \
        (--manifest requests.jsonl | --primes 'primes/**/*.mid') [--batch-size 64] \
        [--num-notes 256] [--temperature 1.0] [--top-k 128] [--top-p 1.0] [--seed 0] \
        [--program 0] [--prime-from 0] [Beam pipeline options, e.g. --runner DataflowRunner ...]

Requests come from a manifest, a JSON-lines file with one request per line (blank lines are
skipped), for example::

    {"name": "bach-1", "prime": "primes/bwv846.mid", "num_notes": 512, "temperature": 0.9}
    {"prime": "gs://bucket/primes/op10.mid", "prime_from": 30, "top_p": 0.95, "seed": 7}
    {"name": "from-nothing", "prime": null, "seed": 3}

or from a glob of prime MIDI files, one request per file with the flags' parameters. Fields:
``name`` (the output file stem; by default made from the prime's file name, for a glob from its
path below the glob's folder), ``prime`` (a MIDI path, local or ``gs://``, relative paths being
relative to the manifest's folder; null or absent: a neutral start, as ``serving.generate
--no-prime``, which then needs a ``name``), ``prime_from`` (seconds), ``num_notes``,
``temperature``, ``top_k``, ``top_p``, ``seed``, ``program``; absent fields take the flags'
values and unknown fields are refused (a misspelt parameter must not silently fall back).

Steps: parse and check requests -> read each prime's first window (from ``prime_from``) ->
refuse duplicate names -> group requests with identical sampling parameters and seed into
batches -> generate each batch with one call of the export's in-graph ``generate`` signature
(the model is loaded once per worker process and shared by its threads) -> write
``OUT/NAME.mid`` and ``OUT/NAME.png``, each under a temporary name renamed into place.

A request that cannot be served — bad JSON, a parameter out of range, an unsafe name, a missing,
unreadable, non-MIDI or too short prime, a name used twice — goes to
``OUT/dead_letter/dead_letters-*.jsonl`` with its reason, and the others complete.
``OUT/summary.json`` (also printed) accounts for every request:
``requests_in = written + dead_letters``, with the count per reason.

Batches, and why the same manifest gives byte-identical files: the export draws one seed's
random numbers per batch row, so a request's notes depend on its row. Batches are therefore
formed deterministically rather than by bundle: requests sharing (num_notes, temperature, top_k,
top_p, seed) are split into ``ceil(count / batch_size)`` buckets by a hash of their name, each
bucket sorted by name and cut into batches of at most ``--batch-size``. Any runner, worker count
or bundling gives the same batches for the same manifest and ``--batch-size``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import re
import sys
import uuid
import zlib

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.utils import shared
import numpy as np

from partita import midi_io
from serving import generate as generate_lib
from serving import primes as primes_lib
from serving import validation
from serving.validation import GenerationError

DEAD_LETTER_DIR = 'dead_letter'
SUMMARY_FILE = 'summary.json'
# Primes are short MIDI files; a bigger "prime" is a mistake, not music to read in full.
MAX_PRIME_BYTES = 64 * 2**20
FIELDS = ('name', 'prime', 'prime_from', 'num_notes', 'temperature', 'top_k', 'top_p', 'seed',
          'program')


@dataclasses.dataclass(frozen=True)
class Request:
  """One piece to generate; ``prime`` None means a neutral start."""
  name: str
  prime: str | None = None
  prime_from: float = 0.0
  num_notes: int = 256
  temperature: float = 1.0
  top_k: int = 128
  top_p: float = 1.0
  seed: int = 0
  program: int = 0

  def check(self) -> None:
    """Raises GenerationError if a parameter is out of range or the name is unsafe."""
    validation.check_name(self.name)
    validation.check_length(self.num_notes, None)
    validation.check_sampling(self.temperature, self.top_k, self.top_p, self.seed, self.program)
    validation.check_prime_from(self.prime_from)

  def batch_key(self) -> str:
    """Requests with the same key can share a ``generate`` call (JSON: a deterministic key)."""
    return json.dumps([self.num_notes, self.temperature, self.top_k, self.top_p, self.seed])


class RequestError(GenerationError):
  """A request that cannot be served, with a reason code for its dead letter."""

  def __init__(self, reason: str, message: str):
    super().__init__(message)
    self.reason = reason


def parse_request(line: str, defaults: Request, manifest_dir: str) -> Request:
  """A manifest line -> a checked Request, absent fields taken from ``defaults``.

  Raises:
    RequestError: reasons ``bad_json``, ``bad_request`` (unknown field, wrong type, value out of
      range) or ``bad_name`` (an unsafe or underivable name).
  """
  try:
    fields = json.loads(line)
  except ValueError as e:
    raise RequestError('bad_json', f'not JSON: {e}') from e
  if not isinstance(fields, dict):
    raise RequestError('bad_json', 'a request must be a JSON object')
  unknown = sorted(set(fields) - set(FIELDS))
  if unknown:
    raise RequestError('bad_request', f'unknown fields {unknown}; known: {list(FIELDS)}')
  for field in ('num_notes', 'top_k', 'seed', 'program'):
    if field in fields and (not isinstance(fields[field], int) or isinstance(fields[field], bool)):
      raise RequestError('bad_request', f'{field} must be an integer, got {fields[field]!r}')
  for field in ('prime_from', 'temperature', 'top_p'):
    value = fields.get(field, 0.0)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
      raise RequestError('bad_request', f'{field} must be a number, got {value!r}')
  prime = fields.get('prime')
  if prime is not None and (not isinstance(prime, str) or not prime):
    raise RequestError('bad_request', f'prime must be a MIDI path or null, got {prime!r}')
  if prime is not None and '://' not in prime and not prime.startswith('/'):
    prime = FileSystems.join(manifest_dir, prime)
  name = fields.get('name')
  try:
    if name is None:
      if prime is None:
        raise GenerationError('a request without a prime needs a name')
      name = validation.name_from_path(prime)
    overrides = {key: value for key, value in fields.items() if key not in ('name', 'prime')}
    request = dataclasses.replace(defaults, **overrides, name=name, prime=prime)
    validation.check_name(request.name)
  except GenerationError as e:
    raise RequestError('bad_name', str(e)) from e
  try:
    request.check()
  except GenerationError as e:
    raise RequestError('bad_request', str(e)) from e
  return request


def _dead_letter(request: str, reason: str, error: str) -> beam.pvalue.TaggedOutput:
  Metrics.counter('dead_letter', reason).inc()
  return beam.pvalue.TaggedOutput(
      'dead_letter', {'request': request, 'reason': reason, 'error': error})


class ParseManifestLineFn(beam.DoFn):
  """Manifest line -> Request, or a dead letter."""

  def __init__(self, defaults: Request, manifest_dir: str):
    self._defaults = defaults
    self._manifest_dir = manifest_dir

  def process(self, line: str):
    if not line.strip():
      return
    Metrics.counter('generate', 'requests_in').inc()
    try:
      yield parse_request(line, self._defaults, self._manifest_dir)
    except RequestError as e:
      yield _dead_letter(line[:1000], e.reason, str(e))


def name_for_match(path: str, root: str) -> str:
  """Output name of a globbed prime: its path below ``root`` (the glob's folder), folders joined
  by ``_``, so ``a/x.mid`` and ``b/x.mid`` do not collide."""
  relative = path[len(root):] if path.startswith(root) else path
  return validation.name_from_path(relative.strip('/').replace('/', '_'))


class RequestFromMatchFn(beam.DoFn):
  """Matched prime file -> Request with the flags' parameters, or a dead letter."""

  def __init__(self, defaults: Request, root: str):
    self._defaults = defaults
    self._root = root

  def process(self, metadata):
    Metrics.counter('generate', 'requests_in').inc()
    try:
      yield dataclasses.replace(self._defaults, name=name_for_match(metadata.path, self._root),
                                prime=metadata.path)
    except GenerationError as e:
      yield _dead_letter(metadata.path, 'bad_name', str(e))


class ReadPrimeFn(beam.DoFn):
  """Request -> (Request, prime window), or a dead letter: prime_not_found, prime_unreadable,
  prime_too_large, the parser's reason (not_midi, parse_error, ...) or prime_too_short."""

  def __init__(self, info: dict):
    self._info = info

  def process(self, request: Request):
    window_length = self._info['window_length']
    if request.prime is None:
      yield request, primes_lib.neutral_window(self._info, window_length)
      return
    try:
      with FileSystems.open(request.prime, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        data = f.read(MAX_PRIME_BYTES + 1)
    except Exception as e:  # pylint: disable=broad-except  # each filesystem raises its own
      if _exists(request.prime):
        yield _dead_letter(request.name, 'prime_unreadable', f'{request.prime}: {e}')
      else:
        yield _dead_letter(request.name, 'prime_not_found', f'{request.prime} does not exist')
      return
    if len(data) > MAX_PRIME_BYTES:
      yield _dead_letter(request.name, 'prime_too_large',
                         f'{request.prime}: over {MAX_PRIME_BYTES} bytes')
      return
    try:
      yield request, primes_lib.window_from_midi(data, window_length, request.prime_from,
                                                 source=request.prime)
    except primes_lib.PrimeError as e:
      yield _dead_letter(request.name, e.reason, str(e))


def _exists(path: str) -> bool:
  try:
    return FileSystems.exists(path)
  except Exception:  # pylint: disable=broad-except
    return False


def refuse_duplicates(item):
  """(name, [(Request, prime), ...]) -> the one item, or dead letters for every copy."""
  name, items = item
  items = list(items)
  if len(items) == 1:
    yield items[0]
    return
  for _ in items:
    yield _dead_letter(name, 'duplicate_name',
                       f'{len(items)} requests are named {name!r}; names must be unique')


def bucket_key(item, group_sizes: dict[str, int], batch_size: int) -> tuple[str, int]:
  """(batch key, bucket): about ``batch_size`` requests per bucket, chosen by name hash."""
  request = item[0]
  key = request.batch_key()
  buckets = max(1, math.ceil(group_sizes[key] / batch_size))
  return key, zlib.crc32(request.name.encode()) % buckets


class _SharedExport:
  """Holds a loaded export for apache_beam.utils.shared (which needs a weak-referenceable
  object)."""

  def __init__(self, export: generate_lib.Export):
    self.export = export


class GenerateBatchesFn(beam.DoFn):
  """(key, [(Request, prime), ...]) -> (Request, prime, continuation) per request, in batches of
  at most ``batch_size`` rows, sorted by name; a batch that fails becomes dead letters."""

  def __init__(self, export_dir: str, batch_size: int, shared_handle: shared.Shared):
    self._export_dir = export_dir
    self._batch_size = batch_size
    self._shared_handle = shared_handle
    self._export = None

  def setup(self):
    # One load per worker process, shared by its DoFn instances and threads.
    self._export = self._shared_handle.acquire(
        lambda: _SharedExport(generate_lib.load_export(self._export_dir))).export

  def process(self, keyed):
    _, items = keyed
    items = sorted(items, key=lambda item: item[0].name)
    for start in range(0, len(items), self._batch_size):
      batch = items[start:start + self._batch_size]
      first = batch[0][0]
      primes = {name: np.stack([prime[name] for _, prime in batch])
                for name in midi_io.NOTE_KEYS}
      try:
        generated = generate_lib.generate(self._export.model, primes, first.num_notes,
                                          first.temperature, first.top_k, first.top_p,
                                          first.seed)
      except Exception as e:  # pylint: disable=broad-except  # costs this batch, not the job
        for request, _ in batch:
          yield _dead_letter(request.name, 'generation_error', f'{type(e).__name__}: {e}')
        continue
      Metrics.counter('generate', 'batches').inc()
      for row, (request, prime) in enumerate(batch):
        yield request, prime, {name: values[row] for name, values in generated.items()}


def write_atomically(path: str, data: bytes) -> None:
  """Writes ``data`` to ``path`` (local or ``gs://``) under a temporary name, then renames it,
  so a reader never sees a partial file."""
  directory, name = FileSystems.split(path)
  temporary = FileSystems.join(directory, f'.{name}.{uuid.uuid4().hex}.tmp')
  try:
    with FileSystems.create(temporary, compression_type=CompressionTypes.UNCOMPRESSED) as f:
      f.write(data)
    FileSystems.rename([temporary], [path])
  except BaseException:
    if FileSystems.exists(temporary):
      FileSystems.delete([temporary])
    raise


class WritePieceFn(beam.DoFn):
  """(Request, prime, continuation) -> OUT/NAME.mid and OUT/NAME.png; yields the name, or a
  dead letter (write_error)."""

  def __init__(self, out: str):
    self._out = out

  def process(self, generated):
    request, prime, continuation = generated
    shown_prime = None
    source = 'no prime (neutral start)'
    if request.prime is not None:
      shown_prime = dict(prime, step=[0.0, *prime['step'][1:]])  # the piece starts at the prime
      source = f'primed with {request.prime}'
    try:
      midi = midi_io.midi_bytes(shown_prime, continuation, request.program)
      png = midi_io.piano_roll_png(shown_prime, continuation, f'{request.name}: {source}')
      # The MIDI last: where it exists, the piece is complete.
      write_atomically(FileSystems.join(self._out, request.name + '.png'), png)
      write_atomically(FileSystems.join(self._out, request.name + '.mid'), midi)
    except Exception as e:  # pylint: disable=broad-except
      yield _dead_letter(request.name, 'write_error', f'{type(e).__name__}: {e}')
      return
    Metrics.counter('generate', 'written').inc()
    yield request.name


def build_pipeline(pipeline: beam.Pipeline, export_dir: str, info: dict, out: str,
                   defaults: Request, batch_size: int, manifest: str | None = None,
                   primes_glob: str | None = None):
  """Adds the job's steps to ``pipeline``; returns the PCollection of the summary's one write."""
  if manifest:
    manifest_dir = FileSystems.split(manifest)[0]
    parsed = (pipeline
              | 'ReadManifest' >> beam.io.ReadFromText(manifest)
              | 'ParseRequests' >> beam.ParDo(
                  ParseManifestLineFn(defaults, manifest_dir)).with_outputs(
                      'dead_letter', main='requests'))
  else:
    parsed = (pipeline
              | 'MatchPrimes' >> fileio.MatchFiles(primes_glob)
              | 'RequestPerPrime' >> beam.ParDo(
                  RequestFromMatchFn(defaults, glob_root(primes_glob))).with_outputs(
                      'dead_letter', main='requests'))
  read = parsed.requests | 'ReadPrimes' >> beam.ParDo(ReadPrimeFn(info)).with_outputs(
      'dead_letter', main='primed')
  unique = (read.primed
            | 'ByName' >> beam.Map(lambda item: (item[0].name, item))
            | 'GroupByName' >> beam.GroupByKey()
            | 'RefuseDuplicates' >> beam.FlatMap(refuse_duplicates).with_outputs(
                'dead_letter', main='unique'))
  group_sizes = (unique.unique
                 | 'BatchKey' >> beam.Map(lambda item: (item[0].batch_key(), 1))
                 | 'CountPerKey' >> beam.CombinePerKey(sum))
  generated = (unique.unique
               | 'Bucket' >> beam.Map(lambda item, sizes: (bucket_key(item, sizes, batch_size),
                                                            item),
                                      sizes=beam.pvalue.AsDict(group_sizes))
               | 'GroupIntoBuckets' >> beam.GroupByKey()
               | 'Generate' >> beam.ParDo(GenerateBatchesFn(
                   export_dir, batch_size, shared.Shared())).with_outputs(
                       'dead_letter', main='generated'))
  written = generated.generated | 'Write' >> beam.ParDo(WritePieceFn(out)).with_outputs(
      'dead_letter', main='written')

  dead_letters = ((parsed.dead_letter, read.dead_letter, unique.dead_letter,
                   generated.dead_letter, written.dead_letter)
                  | 'AllDeadLetters' >> beam.Flatten())
  dead_letter_files = (dead_letters
                       | 'DeadLetterJson' >> beam.Map(json.dumps)
                       | 'WriteDeadLetters' >> beam.io.WriteToText(
                           FileSystems.join(out, DEAD_LETTER_DIR, 'dead_letters'),
                           file_name_suffix='.jsonl'))
  counts = (((parsed.requests, parsed.dead_letter)
             | 'AllRequests' >> beam.Flatten()
             | 'CountIn' >> beam.Map(lambda _: ('requests_in', 1))),
            written.written | 'CountWritten' >> beam.Map(lambda _: ('written', 1)),
            dead_letters | 'CountReasons' >> beam.Map(lambda d: ('dead_letter:' + d['reason'], 1)))
  totals = counts | 'AllCounts' >> beam.Flatten() | 'Sum' >> beam.CombinePerKey(sum)
  return (pipeline
          | 'Once' >> beam.Create([None])
          | 'WriteSummary' >> beam.Map(_write_summary, out,
                                       totals=beam.pvalue.AsDict(totals),
                                       files=beam.pvalue.AsList(dead_letter_files)))


def _write_summary(_, out: str, totals: dict[str, int], files: list[str]) -> dict:
  """Writes OUT/summary.json once every piece and dead letter is written (``files`` makes this
  step wait for the dead-letter files)."""
  reasons = {key.split(':', 1)[1]: count for key, count in sorted(totals.items())
             if key.startswith('dead_letter:')}
  summary = {'requests_in': totals.get('requests_in', 0), 'written': totals.get('written', 0),
             'dead_letters': sum(reasons.values()), 'dead_letter_reasons': reasons,
             'dead_letter_files': sorted(files)}
  write_atomically(FileSystems.join(out, SUMMARY_FILE), json.dumps(summary, indent=1).encode())
  return summary


def glob_root(pattern: str) -> str:
  """The folder part of a glob before its first wildcard (``a/b/**/*.mid`` -> ``a/b/``)."""
  wildcard = re.search(r'[*?\[]', pattern)
  prefix = pattern[:wildcard.start()] if wildcard else pattern
  return prefix[:prefix.rfind('/') + 1]


def run(export_dir: str, out: str, defaults: Request, batch_size: int = 64,
        manifest: str | None = None, primes_glob: str | None = None,
        pipeline_args: list[str] | None = None) -> dict:
  """Checks the job's own arguments and the export, runs the job, returns the summary.

  Raises:
    GenerationError: the defaults are out of range, the batch size is not positive, the
      manifest does not exist or the glob matches nothing, or the export cannot serve (see
      ``serving.generate.load_export``). Nothing is written then.
  """
  if (manifest is None) == (primes_glob is None):
    raise GenerationError('give either a manifest or a glob of prime MIDI files')
  if batch_size < 1:
    raise GenerationError(f'batch-size must be >= 1, got {batch_size}')
  try:
    dataclasses.replace(defaults, name='defaults').check()
  except GenerationError as e:
    raise GenerationError(f'bad default: {e}') from e
  if manifest and not FileSystems.exists(manifest):
    raise GenerationError(f'manifest {manifest} does not exist')
  if primes_glob and not FileSystems.match([primes_glob])[0].metadata_list:
    raise GenerationError(f'no file matches {primes_glob}')
  info = generate_lib.load_export(export_dir).info
  with beam.Pipeline(options=PipelineOptions(pipeline_args or [])) as pipeline:
    build_pipeline(pipeline, export_dir, info, out, defaults, batch_size, manifest, primes_glob)
  with FileSystems.open(FileSystems.join(out, SUMMARY_FILE)) as f:
    return json.load(f)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      description='Beam job generating many pieces from an export: one request per manifest '
      'line (JSON: name, prime, prime_from, num_notes, temperature, top_k, top_p, seed, '
      'program; absent fields take the flags below) or per file of a glob of prime MIDI files. '
      'Writes OUT/NAME.mid and OUT/NAME.png per request, dead letters with reasons in '
      'OUT/dead_letter/, and OUT/summary.json. Unrecognised flags are Beam pipeline options '
      '(e.g. --runner DataflowRunner --project P --region R --temp_location gs://B/tmp '
      '--setup_file ./setup.py).')
  parser.add_argument('--model', required=True, help='export folder, local or gs://')
  parser.add_argument('--out', required=True, help='output folder, local or gs://')
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument('--manifest', help='JSON-lines file of requests, local or gs://')
  source.add_argument('--primes', metavar='GLOB',
                      help="prime MIDI files (quote the glob), one request each")
  parser.add_argument('--batch-size', type=int, default=64,
                      help='most requests per generate call (requests with identical '
                      'parameters and seed share calls; default %(default)s)')
  parser.add_argument('--num-notes', type=int, default=256,
                      help=f'notes per piece, 1..{validation.MAX_NUM_NOTES} (default %(default)s)')
  parser.add_argument('--temperature', type=float, default=1.0, help='> 0 (default %(default)s)')
  parser.add_argument('--top-k', type=int, default=128, help='1..128 (default 128: all pitches)')
  parser.add_argument('--top-p', type=float, default=1.0, help='in (0, 1] (default %(default)s)')
  parser.add_argument('--seed', type=int, default=0,
                      help='same seed, same music (default %(default)s)')
  parser.add_argument('--program', type=int, default=0,
                      help='General MIDI program 0..127 (default 0: piano)')
  parser.add_argument('--prime-from', type=float, default=0.0, metavar='SECONDS',
                      help='take each prime window from the notes starting at or after this time '
                      '(default 0)')
  args, pipeline_args = parser.parse_known_args(argv)
  defaults = Request(name='', prime_from=args.prime_from, num_notes=args.num_notes,
                     temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                     seed=args.seed, program=args.program)
  try:
    summary = run(args.model, args.out, defaults, args.batch_size, args.manifest, args.primes,
                  pipeline_args)
  except GenerationError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  reasons = ', '.join(f'{reason} {count}' for reason, count in
                      summary['dead_letter_reasons'].items())
  print(f"requests in: {summary['requests_in']} = written {summary['written']} + dead letters "
        f"{summary['dead_letters']}" + (f' ({reasons})' if reasons else ''))
  print(f"outputs in {args.out}; dead letters in {FileSystems.join(args.out, DEAD_LETTER_DIR)}")
  return 0


if __name__ == '__main__':
  logging.getLogger().setLevel(logging.WARNING)
  sys.exit(main())
