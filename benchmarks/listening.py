r"""The measures a listener hears, for real, model and n-gram continuations of the same test primes.

    python benchmarks/listening.py --data DATA_DIR --model EXPORT_DIR [--num-pieces 32] \
        [--num-notes 192] [--temperature 1.0] [--top-p 1.0] [--seed 0] [--seeds 1] \
        [--candidates 1] [--ngram-order 3] [--json OUT]

Builds the three sets as ``evaluation.evaluate`` does (``primes_and_continuations``, then
``generated_statistics``: the export's ``generate`` signature, by default with no top-k or top-p
cut, and an n-gram's pitches with timing drawn from the training notes) and reports
``evaluation.listening.summary`` of them: per set, the median on-grid share, key stability,
notes per onset and pitch span per 4 s; the random forest's held-out accuracy telling each
generated set from the real one, and the real set's halves apart (the floor); the music
statistics' overlapping areas of scale consistency and pitch-class entropy; and the model's
targets. The n-gram is the Kneser-Ney n-gram of ``--ngram-order`` fitted on the training
targets (the evaluation takes the order with the lowest test NLL, which needs the whole
likelihood pass; on the piano corpus that is the 3-gram). Prints a Markdown table; ``--json``
writes every figure.

One seed's two-sample accuracy moves by about 5 points from seed to seed on 32 + 32 pieces
(its standard error says as much): ``--seeds N`` draws both generated sets with seeds ``--seed``
to ``--seed + N - 1`` from the same primes and n-gram, prints the last seed's table, then the
model's mean, lowest and highest figures over the seeds.

``--candidates N`` measures the model's pieces as ``serving.generate --candidates N`` makes
them: the critic in the export's assets keeps the best of N candidates per prime (candidate 0 is
the plain draw, so N = 1 measures the same pieces as without it). The originality guard is off,
so that every prime keeps a piece. Fit the critic at the temperature measured
(``python -m evaluation.critic --temperature``).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
import dataclasses
import functools
import json
import operator
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from evaluation import evaluate as evaluate_lib  # noqa: E402
from evaluation import listening  # noqa: E402
from partita import atomic, baselines, export_contract, failures  # noqa: E402
from partita import dataset as dataset_lib  # noqa: E402
from partita import labels as labels_lib  # noqa: E402
from serving import choosing, export_client, generation_request  # noqa: E402

# The model's figures summarised over seeds: (title, path into a listening summary).
OVER_SEEDS = (
    ('two-sample accuracy', ('two_sample', 'model', 'accuracy')),
    ('OA scale consistency', ('music_stats_oa', 'scale_consistency', 'model')),
    ('OA pitch-class entropy', ('music_stats_oa', 'pitch_class_entropy', 'model')),
    ('on-grid share, median / real\'s', ('on_grid_ratio', 'model')))


def measure(args: argparse.Namespace) -> dict:
  """``evaluation.listening.summary`` of the three sets per seed, with how they were made."""
  started = time.perf_counter()
  info = dataset_lib.load_info(args.data)
  window_length = info['window_length']
  num_notes = args.num_notes or info['stride']
  if num_notes > info['stride']:
    raise ValueError(f"--num-notes {num_notes} is more than a chunk holds after its first "
                     f"window ({info['stride']})")
  # One request per seed; the originality guard off, so that every prime keeps a piece.
  requests = [generation_request.Request(
      sampling=dataclasses.replace(evaluate_lib.model_sampling(num_notes, args.temperature, seed),
                                   top_p=args.top_p),
      candidates=args.candidates, copy_limit=0)
      for seed in range(args.seed, args.seed + args.seeds)]
  for request in requests:
    request.check()
  loaded = export_client.load_export(args.model)
  if critic_note := choosing.temperature_note(loaded, requests[0]):
    print(f'note: {critic_note}', file=sys.stderr)
  labels = loaded.info['labels']
  info = {**info, 'labels': labels}
  train_chunks = dataset_lib.read_chunks(args.data, info, 'train', labels)
  test_chunks = dataset_lib.read_chunks(args.data, info, 'test', labels)
  ngram = baselines.NGram.fit([chunk['pitch'] for chunk in train_chunks], args.ngram_order,
                              first_target=window_length)
  primes, real = evaluate_lib.primes_and_continuations(test_chunks, window_length,
                                                       args.num_pieces, num_notes)
  by_seed = {}
  for request in requests:
    sampling = request.sampling
    sets, _, _, statistics = evaluate_lib.generated_statistics(
        loaded.model, primes, real, ngram, train_chunks, window_length, sampling,
        chosen_pieces(loaded, primes, request))
    by_seed[sampling.seed] = listening.summary(sets, statistics, sampling.seed)
    print(f'seed {sampling.seed}: {time.perf_counter() - started:.0f} s', file=sys.stderr)
  return {'data': args.data, 'model': args.model, 'notes': num_notes,
          'temperature': args.temperature, 'top_p': args.top_p, 'candidates': args.candidates,
          'seeds': list(by_seed),
          'ngram': f'{args.ngram_order}-gram', 'listening': by_seed,
          'over_seeds': over_seeds(by_seed.values()),
          'seconds': round(time.perf_counter() - started, 1)}


def chosen_pieces(loaded: export_client.Export, primes: dict,
                  request: generation_request.Request) -> list[dict] | None:
  """The critic's best of ``request.candidates`` per prime; None for one (the plain draw).

  Each prime's request has the seed the plain draw gives its row, so candidate 0 is that draw.
  """
  if request.candidates == 1:
    return None
  seeds = export_contract.row_seeds(request.sampling.seed, len(primes['pitch']))
  rows = [dataclasses.replace(request, sampling=dataclasses.replace(request.sampling, seed=seed))
          for seed in seeds]
  choices = choosing.generate_and_choose(loaded, primes, rows,
                                         [labels_lib.UNCONDITIONAL_ID] * len(seeds))
  return [choice.continuation for choice in choices]


def over_seeds(summaries: Iterable[Mapping]) -> dict:
  """``{title: {'mean', 'min', 'max'}}`` of the model's :data:`OVER_SEEDS` figures.

  Empty when the listening measures were skipped (too few test chunks).
  """
  summaries = [summary for summary in summaries if 'skipped' not in summary]
  figures = {}
  for title, path in OVER_SEEDS:
    values = [functools.reduce(operator.getitem, path, summary) for summary in summaries]
    if values and None not in values:
      figures[title] = {'mean': sum(values) / len(values), 'min': min(values),
                        'max': max(values)}
  return figures


def main(argv: list[str] | None = None) -> int:
  """Measures the three sets; prints the headline lines and table, optionally JSON too."""
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--data', required=True, help='dataset folder (beam_pipelines.preprocess)')
  parser.add_argument('--model', required=True, help='export folder (MODEL_DIR/export)')
  parser.add_argument('--num-pieces', type=int, default=32, help='test primes (default 32)')
  parser.add_argument('--num-notes', type=int,
                      help="notes per continuation (default: the dataset's stride, 192)")
  parser.add_argument('--temperature', type=float, default=1.0, help='model sampling (1.0)')
  parser.add_argument('--top-p', type=float, default=1.0,
                      help='model sampling: the nucleus of the pitch distribution (1.0: no cut)')
  parser.add_argument('--seed', type=int, default=0, help='seed of both generated sets (0)')
  parser.add_argument('--seeds', type=int, default=1,
                      help='measure seeds --seed .. --seed + N - 1 and summarise the model\'s '
                      'figures over them (1)')
  parser.add_argument('--candidates', type=int, default=1,
                      help="the model's pieces: the export's critic's best of N per prime (1)")
  parser.add_argument('--ngram-order', type=int, default=3, help='the n-gram set\'s order (3)')
  parser.add_argument('--json', help='write every figure to this JSON file')
  args = parser.parse_args(argv)
  if args.seeds < 1:
    parser.error(f'--seeds {args.seeds}: at least 1')
  try:
    result = measure(args)
  except failures.RejectionError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  heard = result['listening'][result['seeds'][-1]]
  print('\n'.join(listening.headline_lines(heard)))
  if 'skipped' not in heard:
    print('\n' + '\n'.join(listening.table(heard)) + '\n')
  if len(result['seeds']) > 1:
    print(f"the model over seeds {result['seeds'][0]}-{result['seeds'][-1]}: mean (lowest, "
          'highest)')
    for title, figure in result['over_seeds'].items():
      print(f"  {title}: {figure['mean']:.3f} ({figure['min']:.3f}, {figure['max']:.3f})")
  print(f"{result['seconds']} s")
  if args.json:
    atomic.write_bytes(args.json, json.dumps(result, indent=1).encode())
  return 0


if __name__ == '__main__':
  sys.exit(main())
