"""The sampling parameters of a generation: one type for every path that calls ``generate``.

:class:`Sampling` holds the scalar arguments of the export's ``generate`` signature
(``export_contract.GENERATE_PARAMETERS``, passed by name). Every request
(``serving.generation_request.Request``: the command's, the Beam job's) holds one, and
``evaluation.evaluate`` makes its own; all hand it to ``serving.export_client.generate``. Its
fields are declared with ``config_tree.option``, so both commands get the same flags with the same
help from ``config_tree.add_flags``, and :meth:`Sampling.check` refuses the same values with the
same messages on every path.

What the export does not take is the request's: the output's General MIDI program (a property of
the written file, not of the notes), the label by name, the prime's start and the length in
seconds (generation in rounds until a duration, ``serving.export_client.generate_for_seconds``).
"""

from __future__ import annotations

import dataclasses
import math

from partita import config_tree, constants, export_contract
from serving import validation

# The heading of the sampling flags in both commands' --help.
FLAG_GROUP = "sampling (the export's generate signature)"


@dataclasses.dataclass(frozen=True)
class Sampling:
  """How to draw notes from the model; the same parameters and seed give the same notes."""
  num_notes: int = config_tree.option(
      256, f'generated notes per piece, 1..{export_contract.MAX_GENERATED_NOTES}',
      group=FLAG_GROUP)
  temperature: float = config_tree.option(
      1.0, '> 0, for every part of a note (step, pitch, duration); lower is more '
      'conservative, 1 samples the model\'s own distribution', group=FLAG_GROUP)
  top_k: int = config_tree.option(
      constants.PITCHES, f'sample among the k likeliest pitches, 1..{constants.PITCHES}; '
      f'{constants.PITCHES} keeps them all', group=FLAG_GROUP)
  top_p: float = config_tree.option(
      1.0, 'nucleus sampling: the likeliest pitches holding this probability mass, in (0, 1]',
      group=FLAG_GROUP)
  label_guidance: float = config_tree.option(
      1.0, f'how strongly the label (--composer) steers every part, '
      f'0..{export_contract.MAX_LABEL_GUIDANCE:g}: 1 samples the model given the label, 0 '
      'ignores it, above 1 exaggerates what the label changes (classifier-free guidance; '
      'twice the work per note)', group=FLAG_GROUP)
  tempo: float = config_tree.option(
      0.0, f'quarter notes per minute of the continuation, '
      f'{export_contract.MIN_TEMPO:g}..{export_contract.MAX_TEMPO:g}; 0 keeps the prime\'s '
      '(with no prime: the training pieces\' typical tempo). A prime without a grid (a '
      'performance) keeps its timing in seconds whatever the tempo', group=FLAG_GROUP)
  seed: int = config_tree.option(
      0, 'a piece\'s seed: the same prime, parameters and seed give the same music '
      '(serving.generate gives sample i the seed + i)', group=FLAG_GROUP)

  def check(self) -> None:
    """Raises ``failures.RejectionError`` (``bad_request``) naming the first parameter out of range.

    It is raised before any model is loaded.
    """
    limits = export_contract
    within = {
        'num_notes': 1 <= self.num_notes <= limits.MAX_GENERATED_NOTES,
        'temperature': math.isfinite(self.temperature) and self.temperature > 0,
        'top_k': 1 <= self.top_k <= constants.PITCHES,
        'top_p': 0 < self.top_p <= 1,
        'label_guidance': 0 <= self.label_guidance <= limits.MAX_LABEL_GUIDANCE,
        'tempo': self.tempo == 0 or (math.isfinite(self.tempo)
                                     and limits.MIN_TEMPO <= self.tempo <= limits.MAX_TEMPO),
        'seed': 0 <= self.seed <= limits.MAX_SEED,
    }
    for field, ok in within.items():
      if not ok:
        raise validation.must_be(field, limits.ALLOWED[field], getattr(self, field))

  def description(self, seconds: float | None = None) -> str:
    """The parameters in words, for the pages.

    ``seconds``, where given, is the length instead of ``num_notes``.
    """
    length = f'{seconds:g} s' if seconds is not None else f'{self.num_notes} notes'
    guidance = (f', label guidance {self.label_guidance:g}' if self.label_guidance != 1
                else '')
    guidance += f', tempo {self.tempo:g}' if self.tempo else ''
    return (f'{length}, temperature {self.temperature:g}, top-k {self.top_k}, top-p '
            f'{self.top_p:g}{guidance}, seed {self.seed}')
