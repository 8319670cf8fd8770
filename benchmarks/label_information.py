r"""How much can a label tell a next-pitch model? The same count model with and without it.

    python benchmarks/label_information.py --data /tmp/bench-data/cm26 [--orders 1,3,5]

For each order, fits the interpolated Kneser-Ney n-gram of ``partita.baselines`` on every
training target (as ``evaluation.evaluate`` fits its baselines) and one more per label on that
label's training pieces alone. The labelled prediction is ``(1 - w) * global + w * label's``,
with ``w`` in 0, 0.1, ..., 1 chosen on the validation split's labelled targets; the gain is the
global model's test pitch NLL minus the labelled prediction's, over the test targets of pieces
with a known label (``other`` included: the labelled windows over which
``evaluation.conditioning`` measures the network's gain). A count model reads only the last
``order - 1`` pitches, so this says what the label adds to that much context for a model that
memorises its training pieces; the network's own gain is in its evaluation report. Prints one
line per order.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402

from partita import baselines, contract  # noqa: E402
from partita import dataset as dataset_lib  # noqa: E402
from partita import labels as labels_lib  # noqa: E402

WEIGHTS = np.linspace(0.0, 1.0, 11)
QUERIES_PER_CALL = 20_000  # [queries, 128] float64 distributions per call: 20 MB


def targets_by_label(chunks: list[dict], window_length: int, order: int,
                     label_ids: set[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
  """Each labelled chunk's targets and their contexts, concatenated per label id.

  The targets are the notes after the chunk's first window, their contexts the ``order - 1``
  pitches before each: ``{id: (contexts, targets)}``.
  """
  found = {}
  for chunk in chunks:
    label = int(chunk[contract.LABEL_FEATURE])
    pitch = chunk['pitch'].astype(np.int64)
    if label not in label_ids or len(pitch) <= window_length:
      continue
    contexts = np.lib.stride_tricks.sliding_window_view(pitch[:-1], order - 1)[
        window_length - order + 1:] if order > 1 else np.zeros((len(pitch) - window_length, 0),
                                                                np.int64)
    found.setdefault(label, []).append((contexts, pitch[window_length:]))
  return {label: (np.concatenate([c for c, _ in parts]), np.concatenate([t for _, t in parts]))
          for label, parts in found.items()}


def probabilities(model: baselines.NGram, contexts: np.ndarray, targets: np.ndarray) -> np.ndarray:
  """The probability ``model`` gives each target after its context."""
  found = []
  for start in range(0, len(targets), QUERIES_PER_CALL):
    rows = model.distribution(contexts[start:start + QUERIES_PER_CALL])
    found.append(rows[np.arange(len(rows)), targets[start:start + QUERIES_PER_CALL]])
  return np.concatenate(found)


def both_models(split: dict, general: baselines.NGram, per_label: dict) -> tuple:
  """(global, label's) probabilities of every target of ``split``, labels concatenated."""
  general_probs = [probabilities(general, *split[label]) for label in sorted(split)]
  label_probs = [probabilities(per_label[label], *split[label]) for label in sorted(split)]
  return np.concatenate(general_probs), np.concatenate(label_probs)


def main(argv: list[str] | None = None) -> int:
  """Prints, per n-gram order, the test pitch NLL with and without the label."""
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--data', required=True,
                      help='a labelled dataset (beam_pipelines.preprocess)')
  parser.add_argument('--orders', default='1,3,5',
                      help='comma-separated n-gram orders, 1..7 (default %(default)s)')
  args = parser.parse_args(argv)
  info = dataset_lib.load_info(args.data)
  labels = info['labels']
  window_length = info['window_length']
  chunks = {split: dataset_lib.read_chunks(args.data, info, split, labels)
            for split in contract.SPLITS}
  own = {int(chunk[contract.LABEL_FEATURE]) for chunk in chunks['train']} - {
      labels_lib.UNCONDITIONAL_ID}
  for order in map(int, args.orders.split(',')):
    def fit(pieces, order=order):
      return baselines.NGram.fit([chunk['pitch'] for chunk in pieces], order,
                                 first_target=window_length)
    general = fit(chunks['train'])
    per_label = {label: fit([c for c in chunks['train']
                             if int(c[contract.LABEL_FEATURE]) == label]) for label in own}
    validation, test = (targets_by_label(chunks[split], window_length, order, own)
                        for split in ('validation', 'test'))
    general_probs, label_probs = both_models(validation, general, per_label)
    nll = [-np.log((1 - w) * general_probs + w * label_probs).mean() for w in WEIGHTS]
    weight = WEIGHTS[int(np.argmin(nll))]
    general_probs, label_probs = both_models(test, general, per_label)
    without = -np.log(general_probs).mean()
    with_label = -np.log((1 - weight) * general_probs + weight * label_probs).mean()
    print(f'{order}-gram: test pitch NLL {without:.3f} without the label, {with_label:.3f} with '
          f'it (weight {weight:.1f}, chosen on validation): gain {without - with_label:+.3f} '
          f'nats/note over {len(general_probs)} targets of {len(test)} labels', flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
