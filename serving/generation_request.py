"""A generation request: one type for the command, the Beam job and its manifest lines.

It is made by one function from whatever gave its fields, and checked in one place.

A :class:`Request` is what one piece is generated from: its :class:`serving.sampling.Sampling`
(the export's parameters) and what the export does not take: the length in seconds instead of
notes (``serving.export_client.generate_for_seconds``), the label by name, where in the prime
file its window starts, and the General MIDI program of the written file. A Beam request also
has its name (the output file stem) and prime file; ``serving.generate`` names its pieces and
chooses their primes by its own flags, and gives every piece its request with the piece's name
and seed.

:func:`from_fields` makes a request from the fields given (a manifest line's, or the flags typed,
:func:`from_flags`) over defaults. The fields are flat, the sampling's beside the request's own
(:data:`FIELDS`); each given value must have its field's type (an integer is a number too, so
``1`` and ``1.0`` are the same request); ``num_notes`` and ``seconds`` exclude each other, and a
given ``num_notes`` replaces a default ``seconds``; ``composer`` is ``label``'s common name.
:meth:`Request.check` then refuses values out of range. Every refusal is worded by
``serving.validation``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import typing

from partita import config_tree, constants, export_contract, originality
from serving import sampling as sampling_lib
from serving import validation

MAX_SECONDS = 3_600.0
SAMPLING_FIELDS = tuple(field.name for field in dataclasses.fields(sampling_lib.Sampling))
# ``composer`` is the common name of the one label field.
LABEL_FIELDS = ('label', 'composer')
# A request's fields as a manifest line writes them.
FIELDS = ('name', 'prime', 'prime_from', *SAMPLING_FIELDS, 'seconds', 'program', *LABEL_FIELDS,
          'candidates', 'copy_limit')
# The request's own flags, beside the sampling's.
_FLAG_FIELDS = ('seconds', 'label', 'program', 'prime_from', 'candidates', 'copy_limit')
# Candidates drawn per piece at most: each is a row of the generate call.
MAX_CANDIDATES = 64
# A value of the wrong type is refused as not being one of these.
_KINDS = {int: 'an integer', float: 'a number', str: 'a non-empty string'}


@dataclasses.dataclass(frozen=True)
class Request:
  """One piece to generate; ``prime`` None means a neutral start."""
  name: str = ''
  prime: str | None = None
  prime_from: float = 0.0  # seconds into the prime file
  sampling: sampling_lib.Sampling = dataclasses.field(default_factory=sampling_lib.Sampling)
  program: int = 0  # the General MIDI program of the written piece
  seconds: float | None = None  # when set, replaces the sampling's num_notes
  label: str | None = None  # one of the model's labels (a composer); None: unconditional
  # Candidates drawn for the piece, the critic keeping the best (serving.choosing).
  candidates: int = 1
  # The originality guard: a candidate repeating more than this many consecutive pitches of a
  # training piece is rejected; 0: no guard.
  copy_limit: int = originality.DEFAULT_LIMIT

  def check(self) -> None:
    """Raises RejectionError (``bad_request``) for a parameter out of range.

    Names are checked where they are made: a name given, or one made from a path, is always safe.
    """
    self.sampling.check()
    if self.seconds is not None and not (
        math.isfinite(self.seconds) and 0 < self.seconds <= MAX_SECONDS):
      raise validation.must_be('seconds', f'in (0, {MAX_SECONDS:g}]', self.seconds)
    if not 0 <= self.program < constants.PROGRAMS:
      raise validation.must_be('program', f'a General MIDI program 0..{constants.PROGRAMS - 1}',
                               self.program)
    if not (math.isfinite(self.prime_from) and self.prime_from >= 0):
      raise validation.must_be('prime_from', '>= 0 seconds', self.prime_from)
    if not 1 <= self.candidates <= MAX_CANDIDATES:
      raise validation.must_be('candidates', f'1..{MAX_CANDIDATES}', self.candidates)
    if self.copy_limit < 0:
      raise validation.must_be('copy_limit', '>= 0 pitches (0: no guard)', self.copy_limit)

  def batch_key(self) -> str:
    """Requests that can share a ``generate`` call: the same parameters but for the seed.

    Each row has its own seed. As JSON, a deterministic key for any runner.
    """
    sampling = self.sampling
    length = ('seconds', self.seconds) if self.seconds is not None else (
        'num_notes', sampling.num_notes)
    return json.dumps([*length, sampling.temperature, sampling.top_k, sampling.top_p,
                       sampling.label_guidance, sampling.tempo, self.candidates])


_TYPES = {**typing.get_type_hints(sampling_lib.Sampling), **typing.get_type_hints(Request),
          'composer': str | None}


def from_fields(given: dict, defaults: Request) -> Request:
  """The checked request that ``given`` makes of ``defaults``.

  ``given`` is field -> value, flat, as :data:`FIELDS`.

  Raises:
    failures.RejectionError: ``bad_request`` (an unknown field, a value of the wrong type,
      ``num_notes`` with ``seconds``, ``label`` with ``composer``, a value out of range) or
      ``bad_name`` (an unsafe name).
  """
  unknown = sorted(set(given) - set(FIELDS))
  if unknown:
    raise validation.bad_request(f'unknown fields {unknown}; known: {list(FIELDS)}')
  values = {field: _typed(field, value) for field, value in given.items()}
  if values.get('seconds') is not None and 'num_notes' in values:
    raise validation.bad_request('give num_notes or seconds, not both')
  if 'num_notes' in values:
    values.setdefault('seconds', None)  # a length in notes replaces a default in seconds
  labels = [field for field in LABEL_FIELDS if field in values]
  if len(labels) > 1:
    raise validation.bad_request('give label or composer, not both')
  if labels:
    values['label'] = values.pop(labels[0])
  sampling = dataclasses.replace(
      defaults.sampling, **{field: values.pop(field) for field in SAMPLING_FIELDS
                            if field in values})
  request = dataclasses.replace(defaults, sampling=sampling, **values)
  request.check()
  return request


def _typed(field: str, value: object) -> object:
  """``value`` as ``field``'s type (an integer as a float for a number field).

  Raises a ``bad_request`` rejection for a value of another type, ``bad_name`` for an unsafe name.
  """
  if field == 'name':
    return validation.check_name(value)
  kind = _TYPES[field]
  nullable = type(None) in typing.get_args(kind)
  if value is None and nullable:
    return None
  base = typing.get_args(kind)[0] if nullable else kind
  if base is str and isinstance(value, str) and value.strip():
    return value
  numeric = not isinstance(value, bool)  # True is an int to Python, never a number here
  if base is int and numeric and isinstance(value, int):
    return value
  if base is float and numeric and isinstance(value, (int, float)):
    return float(value)
  raise validation.must_be(field, _KINDS[base] + (' or null' if nullable else ''), value)


def add_flags(parser: argparse.ArgumentParser) -> None:
  """A request's flags, the same in both commands.

  The sampling's (``Sampling``'s own), ``--seconds``, ``--composer`` (alias ``--label``),
  ``--program`` and ``--prime-from``. A flag not typed leaves nothing on the namespace, so only
  what was typed overrides the defaults.
  """
  config_tree.add_flags(parser, sampling_lib.Sampling)
  parser.add_argument('--seconds', type=float, default=argparse.SUPPRESS,
                      help=f'instead of --num-notes: generate until each continuation lasts '
                      f'this long, in (0, {MAX_SECONDS:g}], and cut it there (at most '
                      f'{export_contract.MAX_GENERATED_NOTES} notes)')
  parser.add_argument('--composer', '--label', dest='label', metavar='NAME',
                      default=argparse.SUPPRESS,
                      help='generate in the style of this label of the model (a composer; '
                      'serving.generate --list-labels lists them); default: unconditional')
  parser.add_argument('--program', type=int, default=argparse.SUPPRESS,
                      help=f'General MIDI program of the written pieces, '
                      f'0..{constants.PROGRAMS - 1} (default {Request.program}: piano)')
  parser.add_argument('--candidates', type=int, default=argparse.SUPPRESS, metavar='N',
                      help='draw N candidates per piece, each from its own seed derived from the '
                      "piece's, and keep the one the export's critic scores highest, "
                      f'1..{MAX_CANDIDATES} (default {Request.candidates}: no choice, no critic '
                      'needed)')
  parser.add_argument('--copy-limit', type=int, default=argparse.SUPPRESS, metavar='PITCHES',
                      help='reject a candidate repeating more than this many consecutive pitches '
                      "of a training piece, transposed or not (the export's table; default "
                      f'{Request.copy_limit}, 0: no guard); a piece with every candidate '
                      'rejected is reported, not written')
  parser.add_argument('--prime-from', type=float, default=argparse.SUPPRESS, metavar='SECONDS',
                      help='take each prime window from the notes starting at or after this time '
                      f'in its MIDI file (seconds, default {Request.prime_from:g})')


def from_flags(args: argparse.Namespace) -> Request:
  """The request the flags of :func:`add_flags` typed make, over the defaults.

  Raises as :func:`from_fields`.
  """
  given = config_tree.flag_updates(args)
  given.update({field: getattr(args, field) for field in _FLAG_FIELDS if hasattr(args, field)})
  return from_fields(given, Request())
