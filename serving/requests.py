"""Requests of the Beam generation job (``serving.beam_generate``) and their prime windows.

How a manifest line or a matched prime file becomes a ``serving.generation_request.Request``
(:class:`ReadRequests`), and its prime window (:class:`ReadPrimes`).

A manifest is a JSON-lines file with one request per line (blank lines are skipped), e.g.::

    {"name": "bach-1", "prime": "primes/bwv846.mid", "num_notes": 512, "temperature": 0.9}
    {"prime": "gs://bucket/primes/op10.mid", "prime_from": 30, "top_p": 0.95, "seed": 7}
    {"name": "from-nothing", "prime": null, "seed": 3}

Fields: ``name`` (the output file stem; by default made from the prime's file name),
``prime`` (a MIDI path, local or ``gs://``, relative paths being relative to the manifest's
folder; null or absent: a neutral start, as ``serving.generate --no-prime``, which then needs a
``name``), ``prime_from`` (seconds), ``composer`` (or ``label``: one of the model's labels, as
``serving.generate --composer``; absent or null: unconditional), ``program``, ``seconds``
(instead of ``num_notes``: generate until the continuation lasts this long, as
``serving.generate --seconds``), and the sampling parameters ``num_notes``, ``temperature``,
``top_k``, ``top_p``, ``label_guidance``, ``tempo`` and ``seed`` (the request's
:class:`serving.sampling.Sampling`, written flat in the line). Absent fields take the command's
values (a line's ``num_notes`` replaces a default ``--seconds``, and a line may not
give both); unknown fields are refused, so that a misspelt parameter never silently falls back.
A field that may be absent in a request may be null (``prime``, ``composer``, ``seconds``).
A request's notes depend only on its prime, parameters and seed: requests with the same three
give the same piece.
With a glob of prime files instead, each file is a request named after its path below the
glob's folder (``a/x.mid`` -> ``a_x``).

A request that cannot be served is a dead letter (``beam_pipelines.outputs``): ``bad_json``,
``bad_request`` or ``bad_name`` here, as :func:`parse_request` rejects it; ``unknown_label``
for a label the model does not know; ``prime_not_found``,
``prime_unreadable``, ``prime_too_large``, the MIDI parser's reasons or ``prime_too_short``
for its prime.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import NamedTuple

import apache_beam as beam
from apache_beam import metrics
from apache_beam.io import fileio, filesystem, filesystems

from beam_pipelines import outputs as beam_outputs
from partita import failures
from serving import generation_request, validation
from serving import primes as primes_lib

# Primes are short MIDI files; a bigger "prime" is a mistake, not music to read in full.
MAX_PRIME_BYTES = 64 * 2**20
# The part of a bad manifest line kept as its dead letter's input.
MAX_LINE_IN_DEAD_LETTER = 1000


def parse_request(line: str, defaults: generation_request.Request,
                  manifest_dir: str) -> generation_request.Request:
  """A manifest line -> a checked Request, absent fields taken from ``defaults``.

  The fields are taken as ``generation_request.from_fields`` takes them; a relative prime is
  relative to ``manifest_dir``.

  Raises:
    failures.RejectionError: reasons ``bad_json``, ``bad_request`` (unknown field, wrong type,
      value out of range) or ``bad_name`` (an unsafe or underivable name).
  """
  try:
    fields = json.loads(line)
  except ValueError as e:
    raise failures.RejectionError('bad_json', f'not JSON: {e}') from e
  if not isinstance(fields, dict):
    raise failures.RejectionError('bad_json', 'a request must be a JSON object')
  request = generation_request.from_fields(fields, defaults)
  prime = request.prime
  if prime is not None and '://' not in prime and not prime.startswith('/'):
    prime = filesystems.FileSystems.join(manifest_dir, prime)
  name = request.name
  if 'name' not in fields:
    if prime is None:
      raise failures.RejectionError('bad_name', 'a request without a prime needs a name')
    name = validation.name_from_path(prime)
  return dataclasses.replace(request, name=name, prime=prime)


def name_for_match(path: str, root: str) -> str:
  """Output name of a globbed prime: its path below ``root`` (the glob's folder), folders joined.

  Folders are joined by ``_``, so ``a/x.mid`` and ``b/x.mid`` do not collide.

  Raises:
    failures.RejectionError: ``bad_name``, no usable name is left.
  """
  relative = path[len(root):] if path.startswith(root) else path
  return validation.name_from_path(relative.strip('/').replace('/', '_'))


def glob_root(pattern: str) -> str:
  """The folder part of a glob before its first wildcard (``a/b/**/*.mid`` -> ``a/b/``)."""
  wildcard = re.search(r'[*?\[]', pattern)
  prefix = pattern[:wildcard.start()] if wildcard else pattern
  return prefix[:prefix.rfind('/') + 1]


class RequestFromLineFn(beam.DoFn):
  """Manifest line -> Request, or a dead letter (input: the line)."""

  def __init__(self, defaults: generation_request.Request, manifest_dir: str):
    self._defaults = defaults
    self._manifest_dir = manifest_dir

  def process(self, line: str):
    """Counts the line as a request; yields its Request or dead letter (none for a blank line)."""
    if not line.strip():
      return
    metrics.Metrics.counter('generate', 'requests_in').inc()
    try:
      yield parse_request(line, self._defaults, self._manifest_dir)
    except failures.RejectionError as e:
      yield beam_outputs.dead_letter(line[:MAX_LINE_IN_DEAD_LETTER], e.reason, e.detail)


class RequestFromMatchFn(beam.DoFn):
  """Matched prime file -> Request with the flags' parameters, or a dead letter.

  The dead letter's input is the path.
  """

  def __init__(self, defaults: generation_request.Request, root: str):
    self._defaults = defaults
    self._root = root

  def process(self, metadata):
    """Counts the file as a request; yields its Request, or a dead letter for an unusable name."""
    metrics.Metrics.counter('generate', 'requests_in').inc()
    try:
      name = name_for_match(metadata.path, self._root)
    except failures.RejectionError as e:
      yield beam_outputs.dead_letter(metadata.path, e.reason, e.detail)
      return
    yield dataclasses.replace(self._defaults, name=name, prime=metadata.path)


class ReadRequests(beam.PTransform):
  """The manifest's lines, or the files matching the primes glob -> requests.

  Applied to the pipeline, with exactly one of ``manifest`` and ``primes_glob``. Outputs a dict:
  ``requests`` (checked :class:`Request` objects) and ``dead_letter``.
  """

  def __init__(self, defaults: generation_request.Request, manifest: str | None = None,
               primes_glob: str | None = None):
    super().__init__()
    self._defaults = defaults
    self._manifest = manifest
    self._primes_glob = primes_glob

  def expand(self, pbegin):
    """Reads the manifest's lines or matches the primes glob, then makes each one a request."""
    if self._manifest:
      sources = pbegin | 'ReadManifest' >> beam.io.ReadFromText(self._manifest)
      to_request = RequestFromLineFn(self._defaults,
                                     filesystems.FileSystems.split(self._manifest)[0])
    else:
      sources = pbegin | 'MatchPrimes' >> fileio.MatchFiles(self._primes_glob)
      to_request = RequestFromMatchFn(self._defaults, glob_root(self._primes_glob))
    parsed = sources | 'ToRequest' >> beam.ParDo(to_request).with_outputs(
        beam_outputs.TAG, main='requests')
    return {'requests': parsed.requests, beam_outputs.TAG: parsed[beam_outputs.TAG]}


class Primed(NamedTuple):
  """A request and the window its piece continues (note arrays by feature name)."""
  request: generation_request.Request
  prime: dict


class ReadPrimeFn(beam.DoFn):
  """Request -> :class:`Primed`, or a dead letter.

  The dead letter's reason is unknown_label (its label is not the model's), prime_not_found,
  prime_unreadable, prime_too_large, the parser's reason (not_midi, parse_error, ...) or
  prime_too_short.
  """

  def __init__(self, info: dict):
    self._info = info

  def process(self, request: generation_request.Request):
    """Checks the request's label and reads its prime window; yields both, or a dead letter."""
    window_length = self._info['window_length']
    try:
      validation.label_id(self._info['labels'], request.label)
    except failures.RejectionError as e:
      yield beam_outputs.dead_letter(request.name, e.reason, e.detail)
      return
    if request.prime is None:
      yield Primed(request, primes_lib.neutral_window(self._info, window_length))
      return
    try:
      with filesystems.FileSystems.open(
          request.prime, compression_type=filesystem.CompressionTypes.UNCOMPRESSED) as f:
        data = f.read(MAX_PRIME_BYTES + 1)
    except Exception as e:  # each filesystem raises its own
      if _exists(request.prime):
        yield beam_outputs.dead_letter(request.name, 'prime_unreadable', f'{request.prime}: {e}')
      else:
        yield beam_outputs.dead_letter(request.name, 'prime_not_found',
                                       f'{request.prime} does not exist')
      return
    if len(data) > MAX_PRIME_BYTES:
      yield beam_outputs.dead_letter(request.name, 'prime_too_large',
                                     f'{request.prime}: over {MAX_PRIME_BYTES} bytes')
      return
    try:
      yield Primed(request, primes_lib.window_from_midi(data, window_length, request.prime_from,
                                                        source=request.prime))
    except failures.RejectionError as e:
      yield beam_outputs.dead_letter(request.name, e.reason, e.detail)


def _exists(path: str) -> bool:
  try:
    return filesystems.FileSystems.exists(path)
  except Exception:  # an unreachable filesystem's own error: the path is not there for us
    return False


class ReadPrimes(beam.PTransform):
  """Requests -> :class:`Primed`; outputs a dict: ``primed`` and ``dead_letter``.

  ``info`` is the export's ``info.json``: its window length, its labels (a request's label must
  be one), and the statistics of the neutral start for requests without a prime.
  """

  def __init__(self, info: dict):
    super().__init__()
    self._info = info

  def expand(self, requests):
    """Reads every request's prime window."""
    read = requests | 'Read' >> beam.ParDo(ReadPrimeFn(self._info)).with_outputs(
        beam_outputs.TAG, main='primed')
    return {'primed': read.primed, beam_outputs.TAG: read[beam_outputs.TAG]}
