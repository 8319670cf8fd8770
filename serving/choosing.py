"""Generation that chooses: candidates per piece, the originality guard, the critic's pick.

Both writers (``serving.generate`` and the Beam job's ``serving.model_handler``) generate
through :func:`generate_and_choose`. For each requested piece it draws ``request.candidates``
candidates in the same batch, candidate ``c`` from the seed :func:`candidate_seed` derives from
the piece's (candidate 0 keeps it, so one candidate is exactly the piece generated without
choosing), then:

1. **the originality guard** (``partita.originality``) rejects a candidate that repeats more than
   ``request.copy_limit`` consecutive pitches of a training piece, transposed or not, by the
   table in the export's assets (``copy_limit`` 0 turns it off);
2. **the critic** (``serving.critic``, from the export's assets) scores the others, and the
   highest score is kept (the first candidate on a tie). One candidate left needs no critic.

The result is a :class:`Choice` per piece: the kept continuation and every candidate's seed,
score and rejection, which the page and the summary show. A piece whose every candidate is
rejected has no continuation: its writer reports it as a ``copies_training`` dead letter.
"""

from __future__ import annotations

from collections.abc import Sequence
import hashlib
import math
from typing import NamedTuple

import numpy as np

from partita import export_contract, originality
from serving import critic as critic_lib
from serving import export_client, generation_request, validation

# The dead-letter reason of a piece whose every candidate copies a training piece.
COPIES_TRAINING = 'copies_training'


class Candidate(NamedTuple):
  """One candidate of a piece: its seed, its critic score (None: unscored) and any rejection."""
  seed: int
  score: float | None
  rejection: str | None


class Choice(NamedTuple):
  """A piece's candidates and the one kept (None, with ``continuation`` None: all rejected)."""
  continuation: dict[str, np.ndarray] | None
  kept: int | None
  candidates: tuple[Candidate, ...]

  def rejection(self) -> str:
    """Why no candidate was kept, in words (for the dead letter)."""
    reasons = '; '.join(f'candidate {i}: {c.rejection}' for i, c in enumerate(self.candidates))
    return f'every candidate was rejected: {reasons}'

  def summary(self) -> str:
    """The choice in a few words, for the page: which candidate was kept and how it scored."""
    rejected = sum(c.rejection is not None for c in self.candidates)
    kept = self.candidates[self.kept]
    score = '' if kept.score is None else f', critic score {kept.score:+.2f}'
    others = [c.score for i, c in enumerate(self.candidates)
              if i != self.kept and c.score is not None]
    runners_up = (f' (runners-up {", ".join(f"{s:+.2f}" for s in sorted(others, reverse=True))})'
                  if others else '')
    return (f'candidate {self.kept} of {len(self.candidates)}{score}{runners_up}; '
            f'{rejected} rejected as copies')



def candidate_counts(choices: Sequence[Choice]) -> dict[str, int]:
  """The summaries' accounting of candidates: how many were drawn and rejected as copies."""
  candidates = [candidate for choice in choices for candidate in choice.candidates]
  return {'drawn': len(candidates),
          'rejected_as_copies': sum(c.rejection is not None for c in candidates)}


def add_counts(first: dict[str, int], second: dict[str, int]) -> dict[str, int]:
  """Two :func:`candidate_counts` added up."""
  return {name: first.get(name, 0) + second.get(name, 0) for name in first.keys() | second}


def candidate_seed(seed: int, candidate: int) -> int:
  """The seed of candidate ``candidate`` of a piece seeded ``seed``.

  ``seed`` itself for candidate 0, then a hash of both, so that no two candidates of any pieces
  repeat each other's draws (consecutive pieces have consecutive seeds).
  """
  if candidate == 0:
    return seed
  digest = hashlib.sha256(f'candidate:{seed}:{candidate}'.encode()).digest()
  return int.from_bytes(digest[:8], 'little') & export_contract.MAX_SEED


def generate_and_choose(export: export_client.Export, primes: dict[str, np.ndarray],
                        requests: Sequence[generation_request.Request],
                        label_ids: Sequence[int], rows: int | None = None) -> list[Choice]:
  """One :class:`Choice` per request, from its prime (``primes``: ``[requests, window]``).

  The requests share their parameters (``Request.batch_key``) but for their seeds, labels and
  copy limits. ``rows``: pad each ``generate`` call to ``rows`` times the candidates per piece
  (``export_client.generate``).

  Raises:
    failures.RejectionError: ``bad_request``, the export lacks the guard's table or the critic
      that the requests need, or a copy limit is below its table's.
  """
  first = requests[0]
  count = first.candidates
  seeds = [candidate_seed(request.sampling.seed, c) for request in requests for c in range(count)]
  repeated = {name: np.repeat(values, count, axis=0) for name, values in primes.items()}
  labels = list(np.repeat(label_ids, count))
  padded = None if rows is None else rows * count
  if first.seconds is None:
    generated = export_client.generate(export.model, repeated, first.sampling, seeds, padded,
                                       labels)
    drawn = [{name: values[row] for name, values in generated.items()}
             for row in range(len(seeds))]
  else:
    drawn = export_client.generate_for_seconds(export, repeated, first.seconds, first.sampling,
                                               seeds, padded, labels)
  per_row = [request for request in requests for _ in range(count)]
  rejections = [_rejection(export, request, notes)
                for request, notes in zip(per_row, drawn, strict=True)]
  scores = [None] * len(drawn)
  if count > 1:
    critic = _critic(export)
    scored = [row for row, rejection in enumerate(rejections) if rejection is None]
    if scored:
      pieces = [drawn[row] for row in scored]
      likelihood = critic_lib.pitch_log_likelihood(
          export.model, {name: values[scored] for name, values in repeated.items()}, pieces,
          [labels[row] for row in scored])
      features = critic.features(pieces, [per_row[row].label for row in scored], likelihood)
      for row, score in zip(scored, critic.scores(features), strict=True):
        scores[row] = float(score)
  choices = []
  for piece in range(len(requests)):
    rows_of_piece = range(piece * count, (piece + 1) * count)
    candidates = tuple(Candidate(seeds[row], scores[row], rejections[row])
                       for row in rows_of_piece)
    allowed = [c for c, candidate in enumerate(candidates) if candidate.rejection is None]
    if not allowed:
      choices.append(Choice(None, None, candidates))
      continue
    # max keeps the first of equal scores; an unscored lone candidate wins by default.
    kept = max(allowed, key=lambda c: -np.inf if candidates[c].score is None
               else candidates[c].score)
    choices.append(Choice(drawn[piece * count + kept], kept, candidates))
  return choices


def temperature_note(export: export_client.Export,
                     request: generation_request.Request) -> str | None:
  """A note when ``request``'s candidates are drawn at another temperature than the critic saw.

  A critic learns what sets the model's pieces apart at the temperature it was fitted at, and
  may choose worse pieces at another. None: one candidate, no critic, or the same temperature.
  """
  if request.candidates < 2 or export.critic is None:
    return None
  fitted = export.critic.fit.get('temperature', critic_lib.DEFAULT_TEMPERATURE)
  drawn = request.sampling.temperature
  if math.isclose(fitted, drawn):
    return None
  return (f'the critic was fitted at temperature {fitted:g} and the candidates are drawn at '
          f'{drawn:g}; it may choose worse pieces: fit it again with `python -m '
          f'evaluation.critic ... --temperature {drawn:g}`')


def _rejection(export: export_client.Export, request: generation_request.Request,
               continuation: dict[str, np.ndarray]) -> str | None:
  """Why the guard rejects ``continuation`` (None: it does not, or it is off)."""
  if not request.copy_limit:
    return None
  if export.training_runs is None:
    raise validation.bad_request(
        f'the export has no {export_contract.ASSET_TRAINING_RUNS} for the originality guard: '
        'export it again with this version, or pass copy_limit 0 to turn the guard off')
  table = export.training_runs
  if request.copy_limit < table.run_length - 1:
    raise validation.must_be('copy_limit', f"0 (off) or at least the export's table limit, "
                             f'{table.run_length - 1}', request.copy_limit)
  longest = originality.longest_match(continuation['pitch'], table)
  if longest <= request.copy_limit:
    return None
  return (f'repeats {longest} consecutive pitches of a training piece (transposed or not; the '
          f'limit is {request.copy_limit})')


def _critic(export: export_client.Export) -> critic_lib.Critic:
  if export.critic is None:
    raise validation.bad_request(
        f'choosing among candidates needs the critic, and the export has no '
        f'{export_contract.ASSET_CRITIC}: fit it with `python -m evaluation.critic --data '
        'DATA_DIR --model EXPORT_DIR`, or ask for 1 candidate')
  if mismatch := export.critic.mismatch():
    raise validation.bad_request(
        f"the export's {export_contract.ASSET_CRITIC} was fitted by an older version: "
        f'{mismatch}; fit it again with `python -m evaluation.critic --data DATA_DIR --model '
        'EXPORT_DIR`, or ask for 1 candidate')
  return export.critic
