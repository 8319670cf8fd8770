r"""Does choosing among candidates help? The same requests at N = 1, 4 and 16 candidates.

    python benchmarks/candidates.py --data DATA_DIR --model MODEL_DIR/export \
        [--candidates 1,4,16] [--pieces 64] [--per-label 8] [--label-guidance 2] [--out FILE]

The export needs its critic (``python -m evaluation.critic``). For each N, with the same
requests and seeds (so candidate 0 of every piece is the piece N = 1 keeps), through
``serving.choosing.generate_and_choose`` as both generation commands run it:

* **against real music**: ``--pieces`` test primes spread over the test split, each continued
  with its own piece's label (the unconditional id for a piece of no known label); the kept
  continuations against the real ones of the same primes: the two-sample classifier's held-out
  accuracy (``evaluation.two_sample``; lower is better, 50% indistinguishable), the mean
  overlapping area of the music statistics and the scale-consistency and pitch-class-entropy
  OAs (``partita.music_stats``), the median on-grid share and key stability
  (``partita.listening``), and the generation cost per kept piece (wall seconds, the critic's
  scoring included);
* **style**: ``evaluation.conditioning``'s check, as ``evaluation.evaluate`` runs it: the style
  classifier fitted on real training chunks of every label, scored on pieces generated for each
  label from the same ``--per-label`` test primes and from no prime;
* **originality**: the longest run of consecutive pitches (transposed or not) each kept piece
  shares with the training split, binned, beside the real test continuations' (read on a table
  of the training split's 9-pitch runs: a stretch counts when every 9-pitch run of it is in
  training, ``partita.originality.longest_match``).

Sampling: temperature 1, no top-k or top-p cut, ``--label-guidance``, the dataset's stride in
notes, seed 0 (piece ``i`` seed ``i``). Prints Markdown tables; ``--out`` writes every figure as
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

from evaluation import conditioning, style, two_sample  # noqa: E402
from evaluation import critic as critic_fit  # noqa: E402
from evaluation import evaluate as evaluate_lib  # noqa: E402
from partita import atomic, listening, music_stats, originality  # noqa: E402
from partita import dataset as dataset_lib  # noqa: E402
from partita import labels as labels_lib  # noqa: E402
from serving import choosing, export_client, generation_request  # noqa: E402
from serving import primes as primes_lib  # noqa: E402

# Bins of the longest run shared with training, in pitches: [low, high).
RUN_BINS = ((0, 9), (9, 17), (17, 33), (33, 65), (65, 10**9))
RUN_TABLE_LIMIT = 8  # the table's runs: 9 pitches


def requests_for(names: list[str | None], sampling, candidates: int) -> list:
  """One request per piece: its label, seed ``sampling.seed + i``, ``candidates``."""
  return [generation_request.Request(
      name=f'piece_{i}', label=name, candidates=candidates,
      sampling=dataclasses.replace(sampling, seed=sampling.seed + i))
      for i, name in enumerate(names)]


def choose(export, primes: dict, names: list[str | None], sampling, candidates: int,
           batch: int = 64) -> tuple[list[dict], list[choosing.Choice]]:
  """The kept continuations of ``primes`` with ``names``' labels, in batches of pieces."""
  vocabulary = export.info['labels']['vocabulary']
  ids = [labels_lib.UNCONDITIONAL_ID if name is None else vocabulary.index(name)
         for name in names]
  requests = requests_for(names, sampling, candidates)
  choices = []
  per_call = max(1, batch // candidates)
  for start in range(0, len(requests), per_call):
    rows = slice(start, start + per_call)
    choices += choosing.generate_and_choose(
        export, {name: values[rows] for name, values in primes.items()}, requests[rows],
        ids[rows])
  return [choice.continuation for choice in choices], choices


def run_bins(pieces: list[dict], table: originality.RunTable) -> list[float]:
  """The share of ``pieces`` whose longest run shared with training falls in each bin."""
  longest = np.array([originality.longest_match(piece['pitch'], table) for piece in pieces])
  return [float(np.mean((longest >= low) & (longest < high))) for low, high in RUN_BINS]


def main(argv: list[str] | None = None) -> int:
  """Measures the kept pieces at each N; prints Markdown tables, optionally JSON too."""
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--data', required=True, help='the dataset the model trained on')
  parser.add_argument('--model', required=True, help='an export with its critic')
  parser.add_argument('--candidates', default='1,4,16',
                      help='comma-separated candidates per piece (default %(default)s)')
  parser.add_argument('--pieces', type=int, default=64,
                      help='test primes for the comparison with real music (default 64)')
  parser.add_argument('--per-label', type=int, default=8,
                      help='pieces per label and start for the style check (default 8)')
  parser.add_argument('--label-guidance', type=float, default=2.0,
                      help='label guidance of every request (default 2)')
  parser.add_argument('--out', help='write every figure to this JSON file')
  args = parser.parse_args(argv)
  counts = [int(value) for value in args.candidates.split(',')]

  export = export_client.load_export(args.model)
  info = {**dataset_lib.load_info(args.data), 'labels': export.info['labels']}
  labels = info['labels']
  num_notes = info['stride']
  sampling = dataclasses.replace(evaluate_lib.model_sampling(num_notes, 1.0, 0),
                                 label_guidance=args.label_guidance)
  train_chunks = dataset_lib.read_chunks(args.data, info, 'train', labels)
  test_chunks = dataset_lib.read_chunks(args.data, info, 'test', labels)
  runs = originality.build_table((chunk['pitch'] for chunk in train_chunks), RUN_TABLE_LIMIT)
  primes, real, label_ids = critic_fit.split_pieces(args.data, info, 'test', args.pieces,
                                                    num_notes)
  names = critic_fit.label_names(info, label_ids)
  real_features = music_stats.set_features(real)

  # The style check's classifier and primes, as evaluation.conditioning makes them.
  classes = conditioning.own_labels(labels)
  train, train_labels = conditioning.chunks_by_label(train_chunks, labels, classes,
                                                     conditioning.MAX_CHUNKS_PER_LABEL)
  classes = [name for name in classes if name in train_labels]
  classifier = style.fit(*zip(*[(piece, name) for piece, name in zip(train, train_labels,
                                                                      strict=True)
                                if name in classes], strict=True))
  style_primes, _ = evaluate_lib.primes_and_continuations(
      test_chunks, info['window_length'], args.per_label, num_notes)
  per_label = len(style_primes['pitch'])
  neutral = primes_lib.neutral_window(info, info['window_length'])
  starts = {'test primes': style_primes,
            'no prime': {name: np.repeat(values[None], per_label, axis=0)
                         for name, values in neutral.items()}}
  style_names = [name for name in classes for _ in range(per_label)]

  rows = []
  for count in counts:
    started = time.perf_counter()
    kept, choices = choose(export, primes, names, sampling, count)
    seconds = time.perf_counter() - started
    rejected = sum(c.rejection is not None for choice in choices for c in choice.candidates)
    written = [piece for piece in kept if piece is not None]
    comparison = music_stats.compare_sets(real_features, music_stats.set_features(written))
    measures = listening.set_measures(written)
    style_accuracy = {}
    for start, start_primes in starts.items():
      tiled = {name: np.tile(values, (len(classes), 1)) for name, values in start_primes.items()}
      pieces, _ = choose(export, tiled, style_names, sampling, count)
      scored = [i for i, piece in enumerate(pieces) if piece is not None]
      style_accuracy[start] = style.score(classifier, [pieces[i] for i in scored],
                                          [style_names[i] for i in scored],
                                          classes)['accuracy']
    rows.append({
        'candidates': count,
        'two_sample_accuracy': two_sample.accuracy(real, written)['accuracy'],
        'style_accuracy': style_accuracy,
        'mean_oa': float(np.mean([c['oa'] for c in comparison.values()])),
        'scale_consistency_oa': comparison['scale_consistency']['oa'],
        'pitch_class_entropy_oa': comparison['pitch_class_entropy']['oa'],
        'on_grid_share': measures['on_grid_share']['median'],
        'key_stability': measures['key_stability']['median'],
        'seconds_per_kept_piece': seconds / max(len(written), 1),
        'candidates_rejected': rejected,
        'pieces_without_a_candidate': len(kept) - len(written),
        'longest_run_bins': run_bins(written, runs),
    })
    print(f'N={count}: {rows[-1]}', flush=True)

  real_measures = listening.set_measures(real)
  chance = 1 / len(classes)
  print(f'\n{len(real)} test primes; style over {len(classes)} labels (chance {chance:.1%}), '
        f'{per_label} pieces per label and start; guidance {args.label_guidance:g}\n')
  print('| candidates N | two-sample accuracy | style, test primes | style, no prime | mean OA '
        '| scale OA | entropy OA | on-grid | key stability | s per kept piece |')
  print('| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
  for row in rows:
    print(f'| {row["candidates"]} | {row["two_sample_accuracy"]:.1%} | '
          f'{row["style_accuracy"]["test primes"]:.1%} | {row["style_accuracy"]["no prime"]:.1%}'
          f' | {row["mean_oa"]:.3f} | {row["scale_consistency_oa"]:.3f} | '
          f'{row["pitch_class_entropy_oa"]:.3f} | {row["on_grid_share"]:.3f} | '
          f'{row["key_stability"]:.3f} | {row["seconds_per_kept_piece"]:.2f} |')
  print(f'| real | | | | | | | {real_measures["on_grid_share"]["median"]:.3f} | '
        f'{real_measures["key_stability"]["median"]:.3f} | |')
  header = ' | '.join(f'{low}-{high - 1}' if high < 10**9 else f'>= {low}'
                      for low, high in RUN_BINS)
  print(f'\nLongest run shared with the training split (pitches), share of pieces:\n\n'
        f'| pieces | {header} |\n|---|' + '---:|' * len(RUN_BINS))
  print('| real test continuations | ' + ' | '.join(f'{share:.1%}'
                                                  for share in run_bins(real, runs)) + ' |')
  for row in rows:
    print(f'| kept, N = {row["candidates"]} | '
          + ' | '.join(f'{share:.1%}' for share in row['longest_run_bins']) + ' |')
  if args.out:
    atomic.write_bytes(args.out, json.dumps(
        {'data': args.data, 'model': args.model, 'classes': classes, 'pieces': len(real),
         'per_label': per_label, 'label_guidance': args.label_guidance,
         'real': {'on_grid_share': real_measures['on_grid_share']['median'],
                  'key_stability': real_measures['key_stability']['median'],
                  'longest_run_bins': run_bins(real, runs)},
         'rows': rows}, indent=1).encode())
  return 0


if __name__ == '__main__':
  sys.exit(main())
