r"""Apache Beam job: generate thousands of pieces from an export, local or on Dataflow.

    python -m serving.beam_generate --model MODEL_DIR/export --out OUT \
        (--manifest requests.jsonl | --primes 'primes/**/*.mid') [--batch-size 64] \
        [--num-notes 256] [--temperature 1.0] [--top-k 128] [--top-p 1.0] [--seed 0] \
        [--program 0] [--prime-from 0] [Beam pipeline options, e.g. --runner DataflowRunner ...]

Requests come from a manifest of JSON lines or from a glob of prime MIDI files (the format is in
:mod:`serving.requests`); absent parameters take the flags', the sampling flags being those of
:class:`serving.sampling.Sampling`, as in ``serving.generate``. The job is named transforms
wired by :func:`build_pipeline`:

* :class:`serving.requests.ReadRequests`: manifest lines or matched files -> checked requests;
* :class:`serving.requests.ReadPrimes`: each request's prime window (its MIDI file's first
  window from ``prime_from``, or a neutral start);
* :class:`RefuseDuplicateNames`: a name used twice refuses every request of that name;
* :class:`GenerateInBatches`: requests with the same ``Sampling`` (parameters and seed) share calls
  of the export's in-graph ``generate`` signature (the model is loaded once per worker process
  and shared by its threads);
* :class:`WritePieces`: ``OUT/NAME.mid`` and ``OUT/NAME.png``, each written atomically;
* :class:`beam_pipelines.outputs.WriteDeadLetters` and :class:`WriteSummary`.

A request that cannot be served — bad JSON, a parameter out of range, an unsafe name, a missing,
unreadable, non-MIDI or too short prime, a name used twice — goes to
``OUT/dead_letter/dead_letters-*.jsonl`` as ``{input, reason, detail}`` (the input being the
request's name, or the manifest line when it gave no usable name), and the others complete.
``OUT/summary.json`` (also printed) accounts for every request:
``requests_in = written + dead_letters``, with the count per reason.

Batches, and why the same manifest gives byte-identical files: the export draws one seed's
random numbers per batch row, so a request's notes depend on its row. Batches are therefore
formed deterministically rather than by bundle: requests sharing a ``Sampling`` (num_notes,
temperature, top_k, top_p, seed) are split into ``ceil(count / batch_size)`` buckets by a hash
of their name, each bucket sorted by name and cut into batches of at most ``--batch-size``. Any
runner, worker count or bundling gives the same batches for the same manifest and
``--batch-size``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
import zlib

import apache_beam as beam
from apache_beam import metrics
from apache_beam.io import filesystems
from apache_beam.options import pipeline_options
from apache_beam.utils import shared
import numpy as np

from beam_pipelines import outputs as beam_outputs
from partita import config_tree, constants, failures, midi_io
from serving import generate as generate_lib
from serving import requests as requests_lib
from serving import sampling as sampling_lib
from serving import validation

SUMMARY_FILE = 'summary.json'


def refuse_duplicates(named):
  """(name, [(Request, prime), ...]) -> the one item, or dead letters for every copy."""
  name, items = named
  items = list(items)
  if len(items) == 1:
    yield items[0]
    return
  for _ in items:
    yield beam_outputs.dead_letter(
        name, 'duplicate_name', f'{len(items)} requests are named {name!r}; names must be unique')


class RefuseDuplicateNames(beam.PTransform):
  """(Request, prime) -> the same, for names used once; every request of a name used twice is a
  dead letter (``duplicate_name``), since either would overwrite the other's files. Outputs a
  dict: ``unique`` and ``dead_letter``."""

  def expand(self, primed):
    unique = (primed
              | 'ByName' >> beam.Map(lambda item: (item[0].name, item))
              | 'GroupByName' >> beam.GroupByKey()
              | 'Refuse' >> beam.FlatMap(refuse_duplicates).with_outputs(
                  beam_outputs.TAG, main='unique'))
    return {'unique': unique.unique, beam_outputs.TAG: unique[beam_outputs.TAG]}


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
      primes = {name: np.stack([prime[name] for _, prime in batch])
                for name in constants.NOTE_FEATURES}
      try:
        # One key, one Sampling: every request of the batch shares its first one's.
        generated = generate_lib.generate(self._export.model, primes, batch[0][0].sampling)
      except Exception as e:  # pylint: disable=broad-except  # costs this batch, not the job
        for request, _ in batch:
          yield beam_outputs.dead_letter(request.name, 'generation_error',
                                         f'{type(e).__name__}: {e}')
        continue
      metrics.Metrics.counter('generate', 'batches').inc()
      for row, (request, prime) in enumerate(batch):
        yield request, prime, {name: values[row] for name, values in generated.items()}


class GenerateInBatches(beam.PTransform):
  """(Request, prime) -> (Request, prime, continuation), in the deterministic batches of the
  module docstring. Outputs a dict: ``generated`` and ``dead_letter`` (``generation_error``)."""

  def __init__(self, export_dir: str, batch_size: int):
    super().__init__()
    self._export_dir = export_dir
    self._batch_size = batch_size

  def expand(self, primed):
    batch_size = self._batch_size
    group_sizes = (primed
                   | 'BatchKey' >> beam.Map(lambda item: (item[0].batch_key(), 1))
                   | 'CountPerKey' >> beam.CombinePerKey(sum))
    generated = (primed
                 | 'Bucket' >> beam.Map(
                     lambda item, sizes: (bucket_key(item, sizes, batch_size), item),
                     sizes=beam.pvalue.AsDict(group_sizes))
                 | 'GroupIntoBuckets' >> beam.GroupByKey()
                 | 'Generate' >> beam.ParDo(GenerateBatchesFn(
                     self._export_dir, batch_size, shared.Shared())).with_outputs(
                         beam_outputs.TAG, main='generated'))
    return {'generated': generated.generated, beam_outputs.TAG: generated[beam_outputs.TAG]}


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
      path = filesystems.FileSystems.join(self._out, request.name)
      beam_outputs.write_atomically(path + '.png', png)
      beam_outputs.write_atomically(path + '.mid', midi)
    except Exception as e:  # pylint: disable=broad-except
      yield beam_outputs.dead_letter(request.name, 'write_error', f'{type(e).__name__}: {e}')
      return
    metrics.Metrics.counter('generate', 'written').inc()
    yield request.name


class WritePieces(beam.PTransform):
  """(Request, prime, continuation) -> ``OUT/NAME.mid`` and ``OUT/NAME.png``, each written
  atomically, the MIDI last. Outputs a dict: ``written`` (names) and ``dead_letter``."""

  def __init__(self, out: str):
    super().__init__()
    self._out = out

  def expand(self, generated):
    written = generated | 'Write' >> beam.ParDo(WritePieceFn(self._out)).with_outputs(
        beam_outputs.TAG, main='written')
    return {'written': written.written, beam_outputs.TAG: written[beam_outputs.TAG]}


def write_summary(unused_element, out: str, requests_in: int, written: int,
                  reasons: dict[str, int], files: list[str]) -> dict:
  """Writes and returns OUT/summary.json: the accounting of every request."""
  reasons = dict(sorted(reasons.items()))
  summary = {'requests_in': requests_in, 'written': written,
             'dead_letters': sum(reasons.values()), 'dead_letter_reasons': reasons,
             'dead_letter_files': sorted(files)}
  beam_outputs.write_atomically(filesystems.FileSystems.join(out, SUMMARY_FILE),
                     json.dumps(summary, indent=1).encode())
  return summary


class WriteSummary(beam.PTransform):
  """Writes OUT/summary.json once every piece and dead letter is written; outputs the summary.

  Applied to a dict of PCollections: ``requests_in`` (one element per request read),
  ``written`` (one per piece written), ``dead_letters`` (every dead-letter record) and
  ``dead_letter_files`` (waiting for them is what makes the summary come last).
  """

  def __init__(self, out: str):
    super().__init__()
    self._out = out

  def expand(self, outputs):
    requests_in = outputs['requests_in'] | 'CountIn' >> beam.combiners.Count.Globally()
    written = outputs['written'] | 'CountWritten' >> beam.combiners.Count.Globally()
    reasons = outputs['dead_letters'] | 'CountReasons' >> beam_outputs.CountByReason()
    return (outputs['written'].pipeline
            | 'Once' >> beam.Create([None])
            | 'Write' >> beam.Map(write_summary, self._out,
                                  requests_in=beam.pvalue.AsSingleton(requests_in),
                                  written=beam.pvalue.AsSingleton(written),
                                  reasons=beam.pvalue.AsDict(reasons),
                                  files=beam.pvalue.AsList(outputs['dead_letter_files'])))


def build_pipeline(pipeline: beam.Pipeline, export_dir: str, info: dict, out: str,
                   defaults: requests_lib.Request, batch_size: int, manifest: str | None = None,
                   primes_glob: str | None = None) -> beam.PCollection:
  """Adds the job's steps to ``pipeline``; returns the PCollection of the summary."""
  read = pipeline | 'ReadRequests' >> requests_lib.ReadRequests(defaults, manifest, primes_glob)
  primed = read['requests'] | 'ReadPrimes' >> requests_lib.ReadPrimes(info)
  unique = primed['primed'] | 'RefuseDuplicateNames' >> RefuseDuplicateNames()
  generated = unique['unique'] | 'GenerateInBatches' >> GenerateInBatches(export_dir, batch_size)
  written = generated['generated'] | 'WritePieces' >> WritePieces(out)
  rejected = ([step[beam_outputs.TAG] for step in (read, primed, unique, generated, written)]
              | 'AllDeadLetters' >> beam.Flatten())
  dead_letter_files = rejected | 'WriteDeadLetters' >> beam_outputs.WriteDeadLetters(out)
  requests_in = (read['requests'], read[beam_outputs.TAG]) | 'AllRequests' >> beam.Flatten()
  return ({'requests_in': requests_in, 'written': written['written'], 'dead_letters': rejected,
           'dead_letter_files': dead_letter_files}
          | 'WriteSummary' >> WriteSummary(out))


def run(export_dir: str, out: str, defaults: requests_lib.Request, batch_size: int = 64,
        manifest: str | None = None, primes_glob: str | None = None,
        pipeline_args: list[str] | None = None) -> dict:
  """Checks the job's own arguments and the export, runs the job, returns the summary.

  Raises:
    failures.RejectionError: ``bad_request``: the defaults are out of range, the batch size is
      not positive, the manifest does not exist or the glob matches nothing, or the export
      cannot serve (see ``serving.generate.load_export``). Nothing is written then.
  """
  if (manifest is None) == (primes_glob is None):
    raise validation.bad_request('give either a manifest or a glob of prime MIDI files')
  if batch_size < 1:
    raise validation.bad_request(f'batch-size must be >= 1, got {batch_size}')
  try:
    dataclasses.replace(defaults, name='defaults').check()
  except failures.RejectionError as e:
    raise validation.bad_request(f'bad default: {e}') from e
  if manifest and not filesystems.FileSystems.exists(manifest):
    raise validation.bad_request(f'manifest {manifest} does not exist')
  if primes_glob and not filesystems.FileSystems.match([primes_glob])[0].metadata_list:
    raise validation.bad_request(f'no file matches {primes_glob}')
  info = generate_lib.load_export(export_dir).info
  options = pipeline_options.PipelineOptions(pipeline_args or [])
  with beam.Pipeline(options=options) as pipeline:
    build_pipeline(pipeline, export_dir, info, out, defaults, batch_size, manifest, primes_glob)
  # The job's resolved settings beside its outputs, as serving.generate saves its own; each
  # request's own parameters are its manifest line.
  resolved = {'model': export_dir, 'manifest': manifest, 'primes': primes_glob,
              'batch_size': batch_size, 'defaults': config_tree.to_dict(defaults)}
  beam_outputs.write_atomically(
      filesystems.FileSystems.join(out, generate_lib.GENERATION_FILE),
      config_tree.yaml_dump(resolved).encode())
  with filesystems.FileSystems.open(filesystems.FileSystems.join(out, SUMMARY_FILE)) as f:
    return json.load(f)


def argument_parser() -> argparse.ArgumentParser:
  """The command's flags; unrecognised flags are left for Beam."""
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
                      help='most requests per generate call (requests with the same sampling '
                      'share calls; default %(default)s)')
  config_tree.add_flags(parser, sampling_lib.Sampling)
  parser.add_argument('--program', type=int, default=requests_lib.Request.program,
                      help=f'General MIDI program 0..{constants.PROGRAMS - 1} '
                      '(default %(default)s: piano)')
  parser.add_argument('--prime-from', type=float, default=requests_lib.Request.prime_from,
                      metavar='SECONDS', help='take each prime window from the notes starting '
                      'at or after this time (default %(default)s)')
  return parser


def main(argv: list[str] | None = None) -> int:
  args, pipeline_args = argument_parser().parse_known_args(argv)
  sampling = config_tree.load(sampling_lib.Sampling, updates=config_tree.flag_updates(args))
  defaults = requests_lib.Request(name='', prime_from=args.prime_from, sampling=sampling,
                                  program=args.program)
  try:
    summary = run(args.model, args.out, defaults, args.batch_size, args.manifest, args.primes,
                  pipeline_args)
  except failures.RejectionError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  reasons = ', '.join(f'{reason} {count}' for reason, count in
                      summary['dead_letter_reasons'].items())
  print(f"requests in: {summary['requests_in']} = written {summary['written']} + dead letters "
        f"{summary['dead_letters']}" + (f' ({reasons})' if reasons else ''))
  dead_letter_dir = filesystems.FileSystems.join(args.out, failures.DEAD_LETTER_DIR)
  print(f'outputs in {args.out}; dead letters in {dead_letter_dir}')
  return 0


if __name__ == '__main__':
  logging.getLogger().setLevel(logging.WARNING)
  sys.exit(main())
