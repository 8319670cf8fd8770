r"""Generate pieces from an exported SavedModel: MIDI files, piano-roll PNGs and WAV audio.

    python -m serving.generate --model MODEL_DIR/export --out DIR --num-samples 4 \
        (--num-notes 256 | --seconds 30) --seed 0 --temperature 1.0 [--top-k 40] [--top-p 0.95] \
        [--prime a.mid b.mid [--prime-from 12.5] | --prime-data DATA_DIR | --no-prime] \
        [--composer chopin] [--program 0] [--soundfont FILE.sf2 | --no-audio]
    python -m serving.generate --model MODEL_DIR/export --list-labels

The command over the export's client (``serving.export_client``): all samples run as one batch
through the export's ``generate`` signature, with the parameters of one request
(``serving.generation_request.Request``: its flags are the Beam job's too); sample ``i`` takes
the seed + ``i``. Primes (see ``serving.primes``): the first window of ``--prime`` MIDI files (or
the first window from ``--prime-from`` seconds), windows of a dataset's test split
(``--prime-data``), a neutral window (``--no-prime``), or by default the validation windows
bundled with the export. Each piece is rendered by ``serving.pieces``: a MIDI file with the prime
on an instrument named ``prime`` and the generated notes on one named ``continuation`` (a
``--no-prime`` piece has no prime instrument), a piano roll, and WAV audio.
``--composer NAME`` (or ``--label NAME``) conditions every sample on one of the labels the model
was trained with (``--list-labels`` lists them, from the export's ``info.json``); without it the
samples are unconditional.

Requests are checked before the model is loaded and every prime is read before anything is
written, so a bad request writes nothing; every file is written under a temporary name and
renamed. The same inputs and seed give byte-identical MIDI files. The resolved parameters are
saved last, beside the pieces, as ``OUT/generation.yaml`` (a :class:`Generation`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import numpy as np

from partita import (
  atomic,
  audio,
  config_tree,
  constants,
  export_contract,
  failures,
  listening_page,
)
from partita import labels as labels_lib
from serving import choosing, export_client, generation_request, pieces, validation
from serving import primes as primes_lib


@dataclasses.dataclass(frozen=True)
class Options:
  """What :func:`run` makes besides each piece's request.

  How many pieces, from which primes, and whether with audio. The defaults are the command's.
  """
  num_samples: int = 4
  # At most one prime source; none: the validation windows bundled with the export.
  prime_paths: tuple[str, ...] = ()
  prime_data: str | None = None
  no_prime: bool = False
  audio: bool = True
  soundfont: str | None = None  # None: audio.default_soundfont()

  def check(self, request: generation_request.Request) -> None:
    """Raises a ``bad_request`` rejection for an option out of range or options that conflict.

    Options conflict with each other or with ``request``.
    """
    if self.num_samples < 1:
      raise validation.must_be('num_samples', '>= 1', self.num_samples)
    if sum([bool(self.prime_paths), self.prime_data is not None, self.no_prime]) > 1:
      raise validation.bad_request('give at most one of prime files, prime data and no-prime')
    if request.prime_from and not self.prime_paths:
      raise validation.bad_request('prime_from applies to prime MIDI files only')


@dataclasses.dataclass(frozen=True)
class Generation:
  """One run's resolved parameters, saved as ``OUT/generation.yaml``.

  ``config_tree.from_yaml(Generation, text)`` reads them back to run it again.
  """
  model: str
  request: generation_request.Request
  options: Options


def prime_windows(export: export_client.Export, options: Options,
                  prime_from: float) -> tuple[list[dict[str, np.ndarray]], list[str]]:
  """One prime window per sample and a description of where each came from.

  Sources are cycled over the samples when there are fewer than ``options.num_samples``.
  """
  window_length, num_samples = export.window_length, options.num_samples
  if options.no_prime:
    neutral = primes_lib.neutral_window(export.info, window_length)
    return [neutral] * num_samples, [pieces.prime_description(None, 0.0)] * num_samples
  if options.prime_paths:
    import tensorflow as tf  # for gs:// primes; already loaded with the export
    windows = []
    for path in options.prime_paths:
      try:
        with tf.io.gfile.GFile(path, 'rb') as f:
          data = f.read()
      except (OSError, tf.errors.OpError) as e:
        raise validation.bad_request(f'prime {path}: cannot read: {e}') from e
      windows.append(primes_lib.window_from_midi(data, window_length, prime_from,
                                                 source=f'prime {path}'))
    sources = [pieces.prime_description(path, prime_from) for path in options.prime_paths]
  elif options.prime_data:
    windows = primes_lib.windows_from_dataset(options.prime_data, window_length, num_samples)
    sources = [f'primed with test window {i} of {options.prime_data}'
               for i in range(num_samples)]
  else:
    bundled = export.bundled_primes
    windows = [{name: values[i] for name, values in bundled.items()}
               for i in range(len(bundled['pitch']))]
    sources = [f'primed with validation window {i} of the export' for i in range(len(windows))]
  chosen = [i % len(windows) for i in range(num_samples)]
  return [windows[i] for i in chosen], [sources[i] for i in chosen]


def run(export_dir: str, out_dir: str, request: generation_request.Request,
        options: Options = Options()) -> list[str]:
  """Generates ``options.num_samples`` pieces of ``request`` into ``out_dir``.

  Then saves the resolved parameters there (``generation.yaml``); returns the MIDI paths written.

  WAV files are rendered when ``options.audio`` and FluidSynth and the soundfont (default:
  :func:`partita.audio.default_soundfont`) are installed; otherwise a printed note says why
  audio was skipped. A soundfont named explicitly must exist.

  Raises:
    failures.RejectionError: the request cannot be served (nothing is written then), or audio
      rendering failed.
  """
  request.check()
  options.check(request)
  soundfont, audio_note = pieces.audio_plan(options.audio, options.soundfont)

  export = export_client.load_export(export_dir)
  if critic_note := choosing.temperature_note(export, request):
    print(f'note: {critic_note}', file=sys.stderr)
  labels = [validation.label_id(export.info['labels'], request.label)] * options.num_samples
  prime_list, sources = prime_windows(export, options, request.prime_from)
  batch = {name: np.stack([prime[name] for prime in prime_list])
           for name in constants.NOTE_FEATURES}
  seeds = export_contract.row_seeds(request.sampling.seed, options.num_samples)
  # Each piece's own request: its name, and its seed, as the Beam job's request for it.
  piece_requests = [dataclasses.replace(request, name=f'sample_{sample:03d}',
                                        sampling=dataclasses.replace(request.sampling, seed=seed))
                    for sample, seed in enumerate(seeds)]
  choices = choosing.generate_and_choose(export, batch, piece_requests, labels)

  os.makedirs(out_dir, exist_ok=True)
  written, entries, dead_letters = [], [], []
  for sample, (piece_request, choice) in enumerate(zip(piece_requests, choices, strict=True)):
    if choice.continuation is None:
      dead_letters.append(failures.dead_letter_record(
          piece_request.name, choosing.COPIES_TRAINING, choice.rejection()))
      continue
    entries.append(write_piece(out_dir, piece_request,
                               None if options.no_prime else prime_list[sample],
                               choice.continuation, sources[sample], soundfont,
                               choice.summary() if request.candidates > 1 else None))
    written.append(os.path.join(out_dir, piece_request.name + '.mid'))
  write_summary(out_dir, piece_requests, choices, dead_letters)
  resolved = config_tree.to_yaml(Generation(export_dir, request, options))
  atomic.write_bytes(os.path.join(out_dir, pieces.GENERATION_FILE), resolved.encode())
  page = listening_page.render(
      f'Generated pieces ({len(entries)})', entries,
      [f'Generated by serving.generate from {export_dir}; the resolved parameters are in '
       f'{pieces.GENERATION_FILE}, every candidate and rejection in '
       f'{pieces.SUMMARY_FILE}. Piano rolls: the prime in grey, the continuation in red.'],
      audio_note)
  atomic.write_bytes(os.path.join(out_dir, listening_page.PAGE_FILE), page.encode())
  if options.audio and audio_note:
    print(f'note: WAV audio skipped: {audio_note}')
  for record in dead_letters:
    print(f"{record['input']}: not written ({record['reason']}): {record['detail']}",
          file=sys.stderr)
  return written


def write_summary(out_dir: str, requests: list[generation_request.Request],
                  choices: list[choosing.Choice], dead_letters: list[dict]) -> None:
  """Writes ``OUT/summary.json`` (every piece's candidates) and any dead letters.

  The summary has the Beam job's accounting (``requests_in``, ``written``, ``dead_letters``
  by reason, ``candidates`` drawn and rejected as copies) and, per piece, the candidate kept
  (None: all rejected) and each candidate's seed, critic score and rejection. Dead letters, of
  the Beam job's shape, go to ``OUT/dead_letter/dead_letters-00000-of-00001.jsonl`` (only when
  there are some).
  """
  reasons = {}
  for record in dead_letters:
    reasons[record['reason']] = reasons.get(record['reason'], 0) + 1
  summary = {
      'requests_in': len(requests), 'written': len(requests) - len(dead_letters),
      'dead_letters': len(dead_letters), 'dead_letter_reasons': reasons,
      'candidates': choosing.candidate_counts(choices),
      'pieces': {request.name: {'kept': choice.kept,
                                'candidates': [candidate._asdict()
                                               for candidate in choice.candidates]}
                 for request, choice in zip(requests, choices, strict=True)}}
  if dead_letters:
    name = f'{failures.DEAD_LETTER_PREFIX}-00000-of-00001{failures.DEAD_LETTER_SUFFIX}'
    atomic.makedirs(os.path.join(out_dir, failures.DEAD_LETTER_DIR))
    atomic.write_bytes(os.path.join(out_dir, failures.DEAD_LETTER_DIR, name),
                       ''.join(json.dumps(record) + '\n' for record in dead_letters).encode())
  atomic.write_bytes(os.path.join(out_dir, pieces.SUMMARY_FILE),
                     json.dumps(summary, indent=1).encode())


def write_piece(out_dir: str, request: generation_request.Request,
                prime: dict[str, np.ndarray] | None, continuation: dict[str, np.ndarray],
                source: str, soundfont: str | None,
                choice: str | None = None) -> listening_page.Entry:
  """Writes the piece's files into ``out_dir``, each atomically; returns its page entry."""
  try:
    piece = pieces.render(request, prime, continuation, source, soundfont, choice)
  except audio.AudioError as e:
    raise validation.bad_request(f'audio for {request.name}.mid: {e}') from e
  for suffix, data in piece.files:
    atomic.write_bytes(os.path.join(out_dir, request.name + suffix), data)
  return piece.entry


def list_labels(export: export_client.Export) -> list[str]:
  """The lines of ``--list-labels``: each label the model can be asked for.

  Each with its id and training pieces.
  """
  labels = export.info['labels']
  train = labels_lib.pieces_per_id(labels, 'train')
  lines = [f"{labels['name']} labels of this model (--composer NAME or --label NAME; none: "
           'unconditional):']
  for label_id, name in enumerate(labels['vocabulary']):
    lines.append(f'  {label_id:>3}  {name:<24} {train.get(label_id, 0):>6} training pieces')
  return lines


def argument_parser() -> argparse.ArgumentParser:
  """The command's flags.

  A request's flags are ``generation_request``'s, shared with the Beam job.
  """
  parser = argparse.ArgumentParser(
      description='Generate pieces from a SavedModel exported by trainer.task: per sample a MIDI '
      'file (the prime on an instrument named "prime", the generated notes on "continuation"), '
      'a piano-roll PNG (prime grey, continuation red) and, when FluidSynth and a General MIDI '
      'soundfont are installed, a WAV file; and the resolved parameters in generation.yaml. All '
      "samples are generated in one batch by the export's in-graph sampling loop. The same "
      'inputs and seed give byte-identical MIDI.')
  parser.add_argument('--model', required=True, help='export folder (MODEL_DIR/export)')
  parser.add_argument('--out', help='output folder (required unless --list-labels)')
  parser.add_argument('--list-labels', action='store_true',
                      help="list the model's labels with their training pieces, and exit")
  parser.add_argument('--num-samples', type=int, default=Options.num_samples,
                      help='pieces to generate (default %(default)s)')
  generation_request.add_flags(parser)
  primes = parser.add_mutually_exclusive_group()
  primes.add_argument('--prime', nargs='+', metavar='MIDI',
                      help='prime with the first window of notes of these files (cycled over '
                      'samples); a file with fewer notes than a window is refused. Default: '
                      'the validation windows bundled with the export')
  primes.add_argument('--prime-data', metavar='DATA_DIR',
                      help="prime with windows of a preprocessed dataset's test split (music "
                      'the model never trained on), spread over the split')
  primes.add_argument('--no-prime', action='store_true',
                      help="start from nothing: the model is given a neutral window (the "
                      "training data's most frequent pitch repeated at its mean step and "
                      'duration, at velocity 0: no note to the pitch memory and timing anchors, '
                      'which would copy it), which is not written to the output')
  pieces.add_audio_flags(parser)
  return parser


def main(argv: list[str] | None = None) -> int:
  """The ``python -m serving.generate`` command; returns its exit status."""
  parser = argument_parser()
  args = parser.parse_args(argv)
  if not (args.out or args.list_labels):
    parser.error('the following arguments are required: --out')
  try:
    if args.list_labels:
      print('\n'.join(list_labels(export_client.load_export(args.model))))
      return 0
    options = Options(num_samples=args.num_samples, prime_paths=tuple(args.prime or ()),
                      prime_data=args.prime_data, no_prime=args.no_prime,
                      audio=not args.no_audio, soundfont=args.soundfont)
    written = run(args.model, args.out, generation_request.from_flags(args), options)
  except failures.RejectionError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(f'wrote {len(written)} pieces to {args.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
