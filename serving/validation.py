"""How serving refuses a request, and safe output names.

Shared by the command, the Beam job and the evaluation so that all refuse the same requests
with the same messages.

Requests are checked before any model is loaded or file written: a bad request costs nothing and
leaves no partial output. Every refusal is a :class:`partita.failures.RejectionError`: reason
``bad_request`` (made by :func:`bad_request`) for a parameter, worded by :func:`must_be` where one
value is refused; ``bad_name`` for an output name; ``unknown_label`` for a label the model does not
know. The values a request may hold are checked by ``serving.generation_request.Request.check``
and ``serving.sampling.Sampling.check``; the export's graph asserts the same ranges, as the last
line of defence.
"""

from __future__ import annotations

import re

from partita import constants, failures
from partita import labels as labels_lib

MAX_NAME_LENGTH = 100
_SAFE_NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9._-]*')


def bad_request(detail: str) -> failures.RejectionError:
  """The rejection of a request that cannot be served as asked (reason ``bad_request``).

  The commands print its detail and exit with status 2.
  """
  return failures.RejectionError('bad_request', detail)


def must_be(field: str, allowed: str, value: object) -> failures.RejectionError:
  """The one wording of a refused value, whichever path it came by.

  A flag, a manifest line or a library call: ``FIELD must be ALLOWED, got VALUE``, the field by
  its request name, as manifest lines, ``generation.yaml`` and the graph's assertions name it.
  """
  return bad_request(f'{field} must be {allowed}, got {value!r}')


def label_id(labels: dict, name: str | None) -> int:
  """The id to generate the label ``name`` with, from an export's ``info['labels']``.

  A ``name`` of None gives the unconditional id.

  Raises:
    failures.RejectionError: ``unknown_label``, the model has no such label; the detail names
      the ones it has.
  """
  if name is None:
    return labels_lib.UNCONDITIONAL_ID
  try:
    return labels_lib.requested_id(labels, name)
  except KeyError as e:
    raise failures.RejectionError('unknown_label', e.args[0]) from e


def check_name(name: str) -> str:
  """Returns ``name`` if it is safe as an output file stem; else raises RejectionError.

  The rejection's reason is ``bad_name``.

  Safe means letters, digits, ``.``, ``_`` and ``-``, starting with a letter or digit, at most
  MAX_NAME_LENGTH characters: no separators, so no path traversal (``../x``) and no absolute
  paths, and no hidden files (the writers' temporaries start with a dot).
  """
  if not (isinstance(name, str) and len(name) <= MAX_NAME_LENGTH and _SAFE_NAME.fullmatch(name)):
    raise failures.RejectionError(
        'bad_name', f'output name {name!r} is not safe: use at most {MAX_NAME_LENGTH} letters, '
        'digits, ".", "_" or "-", starting with a letter or digit')
  return name


def name_from_path(path: str) -> str:
  """A safe output stem made from an untrusted file path.

  Its file name without a MIDI suffix, with every unsafe character replaced by ``_``
  (``../../etc/x.mid`` -> ``x``).

  Raises:
    failures.RejectionError: ``bad_name``: nothing usable is left (e.g. the name is only dots).
  """
  base = re.split(r'[/\\]', path.rstrip('/\\'))[-1]
  if base.lower().endswith(constants.MIDI_SUFFIXES):
    base = base[:base.rfind('.')]
  cleaned = re.sub(r'[^A-Za-z0-9._-]', '_', base).lstrip('._-')[:MAX_NAME_LENGTH]
  if not cleaned:
    raise failures.RejectionError('bad_name',
                                  f'cannot make an output name from {path!r}; give one explicitly')
  return check_name(cleaned)
