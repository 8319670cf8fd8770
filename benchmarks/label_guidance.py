r"""How strongly should a label steer generation? The style check at several label guidances.

    python benchmarks/label_guidance.py --data /tmp/bench-data/cm26 \
        --model /tmp/runs/cm_small/export [--guidance 1,2,3,5] [--num-pieces 32] [--out FILE]

For each ``label_guidance`` (``partita.export_contract``: classifier-free guidance, 1 the plain
labelled distribution), runs ``evaluation.conditioning.style_evaluation`` as
``evaluation.evaluate`` does: the style classifier fitted on real training chunks of every
label, scored on real test chunks and on ``--num-pieces`` pieces generated for each label from
the same test primes and from no prime, with the evaluation's sampling (temperature 1, no top-k
or top-p cut, seed 0, the dataset's stride in notes). The classifier and the pieces' seeds are
the same at every guidance, so the guidance is all that changes from row to row. Also reports
the generated pieces' mean overlapping area with the real continuations of the test primes
(``partita.music_stats``), unconditional pieces aside: guidance should not buy style with
music that no longer resembles music. Prints a Markdown table; ``--out`` writes every figure as
JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402

from evaluation import conditioning  # noqa: E402
from evaluation import evaluate as evaluate_lib  # noqa: E402
from partita import atomic, music_stats  # noqa: E402
from partita import dataset as dataset_lib  # noqa: E402
from serving import export_client  # noqa: E402


def main(argv: list[str] | None = None) -> int:
  """Runs the style check at each label guidance; prints a Markdown table, optionally JSON too."""
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--data', required=True,
                      help='a labelled dataset (beam_pipelines.preprocess)')
  parser.add_argument('--model', required=True, help='an export trained on it')
  parser.add_argument('--guidance', default='1,2,3,5',
                      help='comma-separated label guidances (default %(default)s)')
  parser.add_argument('--num-pieces', type=int, default=32,
                      help='test primes, hence pieces per label and start (default %(default)s)')
  parser.add_argument('--out', help='write every figure to this JSON file')
  args = parser.parse_args(argv)
  guidances = [float(value) for value in args.guidance.split(',')]

  info = dataset_lib.load_info(args.data)
  loaded = export_client.load_export(args.model)
  labels = loaded.info['labels']
  info = {**info, 'labels': labels}
  train_chunks = dataset_lib.read_chunks(args.data, info, 'train', labels)
  test_chunks = dataset_lib.read_chunks(args.data, info, 'test', labels)
  primes, real = evaluate_lib.primes_and_continuations(test_chunks, info['window_length'],
                                                       args.num_pieces, info['stride'])
  real_features = music_stats.set_features(real)
  sampling = evaluate_lib.model_sampling(info['stride'], 1.0, 0)

  rows = []
  for guidance in guidances:
    started = time.perf_counter()
    result, generated = conditioning.style_evaluation(
        loaded.model, loaded.info, train_chunks, test_chunks, primes,
        dataclasses.replace(sampling, label_guidance=guidance))
    if 'skipped' in result:
      parser.exit(2, f'{parser.prog}: error: {result["skipped"]}\n')
    primed = [piece for name in result['classes'] for piece in generated['test primes'][name]]
    comparison = music_stats.compare_sets(real_features, music_stats.set_features(primed))
    rows.append({
        'label_guidance': guidance,
        'accuracy': {start: score['accuracy'] for start, score in result['generated'].items()},
        'per_label': {start: score['per_label_accuracy']
                      for start, score in result['generated'].items()},
        'mean_overlapping_area': float(np.mean([c['oa'] for c in comparison.values()])),
        'real_accuracy': result['real']['accuracy'],
        'chance': result['real']['chance'],
        'seconds': round(time.perf_counter() - started, 1)})
    print(f'guidance {guidance:g}: {rows[-1]["accuracy"]} ({rows[-1]["seconds"]} s)', flush=True)

  print(f'\n{len(result["classes"])} labels (chance {rows[0]["chance"]:.1%}), real test chunks '
        f'{rows[0]["real_accuracy"]:.1%}, {result["pieces_per_label"]} pieces per label and '
        'start\n')
  print('| label guidance | style, test primes | style, no prime | mean OA (test primes) |')
  print('| ---: | ---: | ---: | ---: |')
  for row in rows:
    print(f'| {row["label_guidance"]:g} | {row["accuracy"]["test primes"]:.1%} | '
          f'{row["accuracy"]["no prime"]:.1%} | {row["mean_overlapping_area"]:.3f} |')
  if args.out:
    atomic.write_bytes(args.out, json.dumps({'data': args.data, 'model': args.model,
                                             'classes': result['classes'], 'rows': rows},
                                            indent=1).encode())
  return 0


if __name__ == '__main__':
  sys.exit(main())
