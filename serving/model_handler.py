"""The Beam job's RunInference model handler: an export's ``generate`` signature as a model.

:class:`PieceModelHandler` loads the export once per worker process (RunInference shares it
between the process's threads) and turns a batch of ``serving.requests.Primed`` (a request and
its prime) that share their parameters (see ``Request.batch_key``; each row keeps its own seed)
into one ``generate`` call, or one ``serving.export_client.generate_for_seconds`` run for
requests with ``seconds``, through ``serving.choosing`` (each request's candidates are rows of
the same call; the guard and the critic choose among them). Every call is padded to
``batch_size`` rows (times the candidates per request): the CPU's matrix
kernels pick their order of summation by batch size, so a fixed size keeps a request's times
bit-identical in any batch, on any runner (``serving.export_client.generate``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from apache_beam.ml.inference import base as inference
import numpy as np

from partita import constants
from serving import choosing, export_client, validation
from serving import requests as requests_lib

# The namespace of RunInference's metrics for this handler (num_inferences,
# inference_batch_latency_micro_secs, load_model_latency_milli_secs, ...).
METRICS_NAMESPACE = 'partita_generate'


class PieceModelHandler(inference.ModelHandler):
  """Batches of ``serving.requests.Primed`` -> PredictionResult(example, inference=Choice).

  Each request's ``serving.choosing.Choice``: its candidates and the continuation kept.
  """

  def __init__(self, export_dir: str, batch_size: int):
    super().__init__()
    self._export_dir = export_dir
    self._batch_size = batch_size

  def should_skip_batching(self) -> bool:
    """True: RunInference gets batches already made."""
    # The job batches by Request.batch_key before RunInference (beam_generate.GeneratePieces),
    # since one generate call takes one set of parameters; RunInference's own batching is not
    # keyed.
    return True

  def load_model(self) -> export_client.Export:
    """Loads the export (once per worker process)."""
    return export_client.load_export(self._export_dir)

  def run_inference(self, batch: Sequence[requests_lib.Primed], model: export_client.Export,
                    inference_args: dict | None = None) -> Iterable[inference.PredictionResult]:
    """Generates every request of ``batch``.

    They share their parameters but for the seed and the label.
    """
    requests = [primed.request for primed in batch]
    keys = {request.batch_key() for request in requests}
    if len(keys) != 1:
      raise ValueError(f'a batch must share its parameters, got {sorted(keys)}')
    primes = {name: np.stack([primed.prime[name] for primed in batch])
              for name in constants.NOTE_FEATURES}
    # Each row its own label, like its seed (ReadPrimes refused the labels the model lacks).
    labels = [validation.label_id(model.info['labels'], request.label) for request in requests]
    choices = choosing.generate_and_choose(model, primes, requests, labels, self._batch_size)
    return [inference.PredictionResult(example, choice)
            for example, choice in zip(batch, choices, strict=True)]

  def get_metrics_namespace(self) -> str:
    """The namespace of this handler's RunInference metrics."""
    return METRICS_NAMESPACE
