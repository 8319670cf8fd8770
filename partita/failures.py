"""What the project calls a failure of one input: a rejection with a reason, and its dead letter.

Every stage refuses inputs the same way. A function that cannot use an input (a MIDI file, a
generation request, a prime) raises :class:`RejectionError` with a short stable ``reason`` code,
which the Beam jobs count, and a ``detail`` for the reader. The jobs turn each one into a
dead-letter record of a single shape (:func:`dead_letter_record`), written as JSON lines to
``OUT/dead_letter/dead_letters-SSSSS-of-NNNNN.jsonl`` by the preprocessing and the generation
job alike (with :mod:`beam_pipelines.outputs`).

No Beam and no TensorFlow here: the parser, its child process and the commands import it.
"""

from __future__ import annotations

# The folder of every job's dead letters, and the prefix of their files inside it.
DEAD_LETTER_DIR = 'dead_letter'
DEAD_LETTER_PREFIX = 'dead_letters'
DEAD_LETTER_SUFFIX = '.jsonl'


class RejectionError(Exception):
  """An input that cannot be used.

  ``reason`` is a short stable code (``not_midi``, ``bad_request``, ``prime_too_short``...) for
  counting; ``detail`` says what was wrong with this input, and is the exception's message.
  """

  def __init__(self, reason: str, detail: str):
    # Both go to Exception's args, so the exception pickles and unpickles unchanged.
    super().__init__(reason, detail)
    self.reason = reason
    self.detail = detail

  def __str__(self) -> str:
    return self.detail


def dead_letter_record(input_name: str, reason: str, detail: str) -> dict[str, str]:
  """The dead letter of one input: ``{'input', 'reason', 'detail'}``.

  ``input_name`` names the input as the job received it: a file path (``path#index`` for a
  record of a TFRecord file), a request's name, or the manifest line itself when the line did
  not give a usable name.
  """
  return {'input': input_name, 'reason': reason, 'detail': detail}
