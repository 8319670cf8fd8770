"""What a generation request may ask for, and safe output names; shared by the command and the
Beam job so that both refuse the same requests with the same messages.

Requests are checked before any model is loaded or file written: a bad request costs nothing and
leaves no partial output. Every refusal is a :class:`partita.failures.RejectionError`: reason
``bad_request`` (a :class:`GenerationError`) for a parameter, ``bad_name`` for an output name.
"""

from __future__ import annotations

import math
import re

from partita import failures

# The export's own limit on notes per call (trainer.export.MAX_GENERATED_NOTES; the graph asserts
# it too). It is also the limit on notes per piece, --seconds included.
MAX_NUM_NOTES = 10_000
MAX_SECONDS = 3_600.0
PITCHES = 128
MAX_SEED = 2**63 - 1  # the export's seed is an int64
MAX_NAME_LENGTH = 100
_SAFE_NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9._-]*')
MIDI_SUFFIXES = ('.mid', '.midi')


class GenerationError(failures.RejectionError):
  """A request that cannot be served as asked: a rejection with reason ``bad_request``.

  The commands raise it with only a message for their own checks, and exit with status 2 on any
  :class:`partita.failures.RejectionError`.
  """

  def __init__(self, detail: str):
    super().__init__('bad_request', detail)

  def __reduce__(self):
    # Exception pickles as type(self)(*args); args are (reason, detail) here.
    return type(self), (self.detail,)


def check_sampling(temperature: float, top_k: int, top_p: float, seed: int,
                   program: int) -> None:
  """Raises GenerationError naming the first sampling parameter out of range."""
  if not (math.isfinite(temperature) and temperature > 0):
    raise GenerationError(f'temperature must be > 0, got {temperature}')
  if not 1 <= top_k <= PITCHES:
    raise GenerationError(f'top-k must be in 1..{PITCHES}, got {top_k}')
  if not 0 < top_p <= 1:
    raise GenerationError(f'top-p must be in (0, 1], got {top_p}')
  if not 0 <= seed <= MAX_SEED:
    raise GenerationError(f'seed must be in 0..2**63-1, got {seed}')
  if not 0 <= program <= 127:
    raise GenerationError(f'program must be a General MIDI program 0..127, got {program}')


def check_length(num_notes: int | None, seconds: float | None) -> None:
  """Raises GenerationError unless exactly one of a note count and a duration is in range."""
  if (num_notes is None) == (seconds is None):
    raise GenerationError('give either a number of notes or a duration in seconds')
  if num_notes is not None and not 1 <= num_notes <= MAX_NUM_NOTES:
    raise GenerationError(f'num-notes must be in 1..{MAX_NUM_NOTES}, got {num_notes}')
  if seconds is not None and not (math.isfinite(seconds) and 0 < seconds <= MAX_SECONDS):
    raise GenerationError(f'seconds must be in (0, {MAX_SECONDS:g}], got {seconds}')


def check_prime_from(seconds: float) -> None:
  """Raises GenerationError unless ``seconds`` is a valid time to take a prime window from."""
  if not (math.isfinite(seconds) and seconds >= 0):
    raise GenerationError('the prime start time (--prime-from, prime_from) must be >= 0 seconds, '
                          f'got {seconds}')


def check_name(name: str) -> str:
  """Returns ``name`` if it is safe as an output file stem; else raises RejectionError
  (``bad_name``).

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
  """A safe output stem made from an untrusted file path: its file name without a MIDI suffix,
  with every unsafe character replaced by ``_`` (``../../etc/x.mid`` -> ``x``).

  Raises:
    failures.RejectionError: ``bad_name``: nothing usable is left (e.g. the name is only dots).
  """
  base = re.split(r'[/\\]', path.rstrip('/\\'))[-1]
  if base.lower().endswith(MIDI_SUFFIXES):
    base = base[:base.rfind('.')]
  cleaned = re.sub(r'[^A-Za-z0-9._-]', '_', base).lstrip('._-')[:MAX_NAME_LENGTH]
  if not cleaned:
    raise failures.RejectionError('bad_name',
                                  f'cannot make an output name from {path!r}; give one explicitly')
  return check_name(cleaned)
