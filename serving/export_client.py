r"""The export's client: load an export written by ``trainer.task`` and run its ``generate``.

The ``generate`` signature runs for a number of notes or for a duration.

Every generation path goes through here: the command ``serving.generate``, the Beam job's model
handler (``serving.model_handler``), ``evaluation.evaluate`` and ``evaluation.conditioning``, and
the benchmarks. The export is all it needs: the model, and the dataset contract and default primes
in its assets/. The sampling loop runs inside the graph; its parameters are a
:class:`serving.sampling.Sampling`.

**Generating for a duration** (:func:`generate_for_seconds`, ``--seconds S``): notes are generated
in rounds (each round one ``generate`` call for the whole batch, continuing from the last window
of the previous one), then each continuation is cut to the notes starting before S seconds, with
any note still sounding at S shortened to end there. Round ``r > 0`` draws with seeds derived
from each sample's seed and ``r`` (see :func:`round_seed`), so the result depends only on the
inputs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys

import numpy as np

from partita import constants, export_contract, originality
from partita import labels as labels_lib
from serving import critic as critic_lib
from serving import sampling as sampling_lib
from serving import validation

# Notes per --seconds round, beyond the count the training data's mean step predicts: some
# slack so that one round usually suffices.
ROUND_SLACK = 1.25
ROUND_EXTRA_NOTES = 16


@dataclasses.dataclass
class Export:
  """A loaded export: the SavedModel, and the dataset contract, primes and choosers of its assets.

  ``training_runs`` (the originality guard's table) is None for an export from before the guard;
  ``critic`` is None until ``python -m evaluation.critic`` has fitted one.
  """
  model: object
  info: dict
  bundled_primes: dict[str, np.ndarray]
  training_runs: originality.RunTable | None = None
  critic: critic_lib.Critic | None = None

  @property
  def window_length(self) -> int:
    """The number of notes in a prime window."""
    return self.info['window_length']


def load_export(export_dir: str) -> Export:
  """Loads an export written by ``trainer.task`` (local or ``gs://``) and checks it can serve.

  Raises:
    failures.RejectionError: ``bad_request``: no SavedModel there, its assets are missing, it
      cannot be loaded, it lacks the ``generate`` or ``predict_next`` function or one of the
      arguments this version passes them (``export_contract.ARGUMENTS``: an export of an older
      version), or its windows are not the length its ``info.json`` says.
  """
  import tensorflow as tf  # deferred: `--help` and argument errors should not wait for TF.
  assets = os.path.join(export_dir, export_contract.ASSETS_DIR)
  if not tf.io.gfile.exists(os.path.join(export_dir, export_contract.SAVED_MODEL_FILE)):
    raise validation.bad_request(
        f'{export_dir} is not a SavedModel export (no {export_contract.SAVED_MODEL_FILE})')
  try:
    with tf.io.gfile.GFile(os.path.join(assets, export_contract.ASSET_INFO)) as f:
      info = json.load(f)
    with tf.io.gfile.GFile(os.path.join(assets, export_contract.ASSET_PRIMES)) as f:
      bundled = {name: np.asarray(values) for name, values in json.load(f).items()}
    window_length = int(info['window_length'])
    runs_path = os.path.join(assets, export_contract.ASSET_TRAINING_RUNS)
    training_runs = None
    if tf.io.gfile.exists(runs_path):
      with tf.io.gfile.GFile(runs_path, 'rb') as f:
        training_runs = originality.from_bytes(f.read())
    critic_path = os.path.join(assets, export_contract.ASSET_CRITIC)
    critic = None
    if tf.io.gfile.exists(critic_path):
      with tf.io.gfile.GFile(critic_path) as f:
        critic = critic_lib.Critic.from_json(f.read())
  except (OSError, tf.errors.NotFoundError, ValueError, KeyError, TypeError) as e:
    raise validation.bad_request(
        f'{export_dir} lacks the assets written by trainer.task: {e}') from e
  try:
    model = tf.saved_model.load(export_dir)
  except Exception as e:  # a corrupt or foreign SavedModel raises many kinds of error
    raise validation.bad_request(f'{export_dir}: cannot load the SavedModel: '
                                 f'{type(e).__name__}: {str(e)[:300]}') from e
  for function in (export_contract.GENERATE, export_contract.PREDICT_NEXT):
    if not hasattr(model, function):
      raise validation.bad_request(
          f'{export_dir} has no `{function}` function: not a partita export')
  arguments = {function: {spec.name: spec for spec in tf.nest.flatten(
      getattr(model, function).concrete_functions[0].structured_input_signature)}
               for function in (export_contract.GENERATE, export_contract.PREDICT_NEXT)}
  for function, specs in arguments.items():
    missing = [name for name in export_contract.ARGUMENTS[function] if name not in specs]
    if missing:
      raise validation.bad_request(
          f'{export_dir} is incompatible: its {function} takes no {", ".join(missing)}, which '
          'this version passes; export it again with this version (rerunning its trainer.task '
          'command resumes from its last checkpoint and exports)')
  export_window = arguments[export_contract.GENERATE]['pitch'].shape[-1]
  if export_window != window_length:
    raise validation.bad_request(
        f'{export_dir} is incompatible: its model takes windows of {export_window} notes but '
        f'its {export_contract.ASSET_INFO} says {window_length}')
  return Export(model, info, bundled, training_runs, critic)


def generate(model, primes: dict[str, np.ndarray], sampling: sampling_lib.Sampling,
             seeds: list[int] | None = None, rows: int | None = None,
             labels: list[int] | None = None) -> dict[str, np.ndarray]:
  """Runs the export's in-graph sampling loop on a batch of primes ``[batch, window]``.

  Returns ``[batch, sampling.num_notes]`` arrays.

  ``seeds``: one per row; by default ``sampling.seed + row``
  (``export_contract.row_seeds``). ``labels``: one label id per row (``partita.labels``); by
  default the unconditional id. A row's notes depend only on its prime, the sampling
  parameters, its label and its seed, not on the other rows. ``rows``: pad the call to this
  many rows (copies of the first), because the CPU's matrix kernels choose their order of
  summation by batch size: calls of one size give every row bit-identical times, calls of
  different sizes may differ in the last bits of a time (pitches agreed in every test).
  """
  import tensorflow as tf
  batch = len(primes['pitch'])
  if seeds is None:
    seeds = export_contract.row_seeds(sampling.seed, batch)
  if labels is None:
    labels = [labels_lib.UNCONDITIONAL_ID] * batch
  if rows is not None and rows > batch:
    primes = {name: np.concatenate([values, np.repeat(values[:1], rows - batch, axis=0)])
              for name, values in primes.items()}
    seeds = list(seeds) + [seeds[0]] * (rows - batch)
    labels = list(labels) + [labels[0]] * (rows - batch)
  windows = {name: tf.constant(primes[name], tf.int32 if name == 'pitch' else tf.float32)
             for name in constants.NOTE_FEATURES}
  outputs = getattr(model, export_contract.GENERATE)(
      **windows, num_notes=tf.constant(sampling.num_notes, tf.int32),
      temperature=tf.constant(sampling.temperature, tf.float32),
      top_k=tf.constant(sampling.top_k, tf.int32), top_p=tf.constant(sampling.top_p, tf.float32),
      label_guidance=tf.constant(sampling.label_guidance, tf.float32),
      tempo=tf.constant(sampling.tempo, tf.float32), seed=tf.constant(seeds, tf.int64),
      label=tf.constant(labels, tf.int32))
  return {name: values.numpy()[:batch] for name, values in outputs.items()}


def round_seed(seed: int, round_index: int) -> int:
  """The seed of ``--seconds`` round ``round_index``.

  ``seed`` itself for round 0 (so a piece starts as a ``--num-notes`` one with the same seed
  does), then a hash of both, so no two rounds repeat each other's random draws.
  """
  if round_index == 0:
    return seed
  digest = hashlib.sha256(f'{seed}:{round_index}'.encode()).digest()
  return int.from_bytes(digest[:8], 'little') & export_contract.MAX_SEED


def generate_for_seconds(export: Export, primes: dict[str, np.ndarray], seconds: float,
                         sampling: sampling_lib.Sampling, seeds: list[int] | None = None,
                         rows: int | None = None,
                         labels: list[int] | None = None) -> list[dict[str, np.ndarray]]:
  """Generates continuations lasting ``seconds`` (see the module docstring).

  One notes dict per prime, of varying lengths. ``sampling.num_notes`` is not used: the rounds
  choose their counts. ``seeds``, ``rows`` and ``labels`` as for :func:`generate`; a row's
  continuation depends only on its own prime, parameters, label and seed (rounds that other rows
  still need are cut off it).

  A sample that has not reached ``seconds`` within MAX_GENERATED_NOTES notes (a model predicting
  near-zero steps) is returned as it is, with a printed warning.
  """
  most = export_contract.MAX_GENERATED_NOTES
  step_mean = max(float(export.info['timing']['step']['mean']), 1e-3)
  per_round = int(min(most, math.ceil(ROUND_SLACK * seconds / step_mean) + ROUND_EXTRA_NOTES))
  window = {name: np.asarray(values) for name, values in primes.items()}
  if seeds is None:
    seeds = export_contract.row_seeds(sampling.seed, len(window['pitch']))
  rounds = []
  total = 0
  while total < most:
    count = min(per_round, most - total)
    rounds.append(generate(export.model, window, dataclasses.replace(sampling, num_notes=count),
                           [round_seed(seed, len(rounds)) for seed in seeds], rows, labels))
    total += count
    steps = np.concatenate([r['step'] for r in rounds], axis=1).astype(np.float64)
    if np.all(steps.sum(axis=1) >= seconds):  # every sample has a note starting at or after S
      break
    window = {name: np.concatenate([window[name], rounds[-1][name]], axis=1)[
        :, -export.window_length:] for name in window}
  generated = {name: np.concatenate([r[name] for r in rounds], axis=1) for name in window}
  continuations = []
  for sample in range(len(steps)):
    onset = np.cumsum(steps[sample])
    keep = onset < seconds
    if keep.all():
      print(f'warning: sample {sample} lasts only {onset[-1]:.1f} s after {len(onset)} notes '
            f'(the limit); written as it is', file=sys.stderr)
    notes = {name: values[sample][keep] for name, values in generated.items()}
    notes['duration'] = np.minimum(notes['duration'], seconds - onset[keep]).astype(np.float32)
    continuations.append(notes)
  return continuations
