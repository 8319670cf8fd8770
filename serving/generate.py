r"""Generate pieces from an exported SavedModel: MIDI files and piano-roll PNGs.

    python -m serving.generate --model MODEL_DIR/export --out DIR --num-samples 4 \
        --num-notes 256 --seed 0 --temperature 1.0 [--top-k 128] [--top-p 1.0] [--prime a.mid ...]

Needs only the export: the model, and the dataset contract and default primes in its assets/.
Each sample is primed with one window of real music: the first notes of a ``--prime`` MIDI file,
or else one of the validation windows bundled with the export. Each output MIDI holds the prime
on an instrument named ``prime`` and exactly ``--num-notes`` generated notes on one named
``continuation``; the piano roll draws the prime in grey and the continuation in red.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from partita import midi_io

MAX_NUM_NOTES = 10_000  # the export's own limit (trainer.export.MAX_GENERATED_NOTES)


class GenerationError(Exception):
  """A request that cannot be served; the message says why."""


def load_export(export_dir: str):
  """(loaded SavedModel, info dict, primes dict) from an export directory."""
  import tensorflow as tf  # deferred: `--help` and argument errors should not wait for TF.
  assets = os.path.join(export_dir, 'assets')
  if not tf.io.gfile.exists(os.path.join(export_dir, 'saved_model.pb')):
    raise GenerationError(f'{export_dir} is not a SavedModel export (no saved_model.pb)')
  try:
    with tf.io.gfile.GFile(os.path.join(assets, 'info.json')) as f:
      info = json.load(f)
    with tf.io.gfile.GFile(os.path.join(assets, 'primes.json')) as f:
      primes = {name: np.asarray(values) for name, values in json.load(f).items()}
  except (OSError, tf.errors.NotFoundError, ValueError) as e:
    raise GenerationError(f'{export_dir} lacks the assets written by trainer.task: {e}') from e
  model = tf.saved_model.load(export_dir)
  if not hasattr(model, 'generate'):
    raise GenerationError(f'{export_dir} has no `generate` function: not a partita export')
  return model, info, primes


def primes_from_midi(paths: list[str], window_length: int) -> list[dict[str, np.ndarray]]:
  """The first ``window_length`` notes of each MIDI file (refused if it has fewer)."""
  from partita import notes as notes_lib
  primes = []
  for path in paths:
    try:
      with open(path, 'rb') as f:
        piece = notes_lib.parse_midi(f.read(), notes_lib.ParseOptions(min_notes=window_length))
    except OSError as e:
      raise GenerationError(f'prime {path}: cannot read: {e}') from e
    except notes_lib.RejectedPiece as e:
      raise GenerationError(f'prime {path}: {e}') from e
    primes.append({name: values[:window_length] for name, values in piece.items()})
  return primes


def generate(model, primes: dict[str, np.ndarray], num_notes: int, temperature: float,
             top_k: int, top_p: float, seed: int) -> dict[str, np.ndarray]:
  """Runs the export's in-graph sampling loop on a batch of primes [batch, window]."""
  import tensorflow as tf
  outputs = model.generate(
      tf.constant(primes['pitch'], tf.int32), tf.constant(primes['step'], tf.float32),
      tf.constant(primes['duration'], tf.float32), tf.constant(primes['velocity'], tf.float32),
      tf.constant(num_notes, tf.int32), tf.constant(temperature, tf.float32),
      tf.constant(top_k, tf.int32), tf.constant(top_p, tf.float32), tf.constant(seed, tf.int64))
  return {name: values.numpy() for name, values in outputs.items()}


def check_request(num_samples: int, num_notes: int, temperature: float, top_k: int,
                  top_p: float, program: int) -> None:
  if num_samples < 1:
    raise GenerationError(f'--num-samples must be >= 1, got {num_samples}')
  if not 1 <= num_notes <= MAX_NUM_NOTES:
    raise GenerationError(f'--num-notes must be in 1..{MAX_NUM_NOTES}, got {num_notes}')
  if not temperature > 0:
    raise GenerationError(f'--temperature must be > 0, got {temperature}')
  if not 1 <= top_k <= 128:
    raise GenerationError(f'--top-k must be in 1..128, got {top_k}')
  if not 0 < top_p <= 1:
    raise GenerationError(f'--top-p must be in (0, 1], got {top_p}')
  if not 0 <= program <= 127:
    raise GenerationError(f'--program must be a General MIDI program 0..127, got {program}')


def run(export_dir: str, out_dir: str, num_samples: int, num_notes: int, seed: int,
        temperature: float = 1.0, top_k: int = 128, top_p: float = 1.0,
        prime_paths: list[str] | None = None, program: int = 0) -> list[str]:
  """Generates ``num_samples`` pieces into ``out_dir``; returns the MIDI paths written."""
  check_request(num_samples, num_notes, temperature, top_k, top_p, program)
  model, info, bundled_primes = load_export(export_dir)
  window_length = info['window_length']
  if prime_paths:
    prime_list = primes_from_midi(prime_paths, window_length)
    sources = list(prime_paths)
  else:
    count = len(bundled_primes['pitch'])
    prime_list = [{name: values[i] for name, values in bundled_primes.items()}
                  for i in range(count)]
    sources = [f'validation window {i} bundled with the export' for i in range(count)]
  chosen = [i % len(prime_list) for i in range(num_samples)]
  batch = {name: np.stack([prime_list[i][name] for i in chosen]) for name in midi_io.NOTE_KEYS}
  generated = generate(model, batch, num_notes, temperature, top_k, top_p, seed)

  os.makedirs(out_dir, exist_ok=True)
  written = []
  for sample in range(num_samples):
    prime = {name: batch[name][sample] for name in midi_io.NOTE_KEYS}
    prime['step'] = np.concatenate([[0.0], prime['step'][1:]])  # the piece starts at the prime
    continuation = {name: generated[name][sample] for name in midi_io.NOTE_KEYS}
    stem = os.path.join(out_dir, f'sample_{sample:03d}')
    midi_io.write_midi(stem + '.mid', prime, continuation, program)
    midi_io.write_piano_roll(stem + '.png', prime, continuation,
                             title=f'sample {sample}: prime from {sources[chosen[sample]]}')
    written.append(stem + '.mid')
  return written


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      description='Generate MIDI files (prime on instrument "prime", generated notes on '
      '"continuation") and piano-roll PNGs from a SavedModel exported by trainer.task.')
  parser.add_argument('--model', required=True, help='export folder (MODEL_DIR/export)')
  parser.add_argument('--out', required=True, help='output folder')
  parser.add_argument('--num-samples', type=int, default=4, help='pieces (default %(default)s)')
  parser.add_argument('--num-notes', type=int, default=256,
                      help=f'generated notes per piece, 1..{MAX_NUM_NOTES} (default %(default)s)')
  parser.add_argument('--seed', type=int, default=0, help='same seed, same music')
  parser.add_argument('--temperature', type=float, default=1.0,
                      help='> 0; lower is more conservative (default %(default)s)')
  parser.add_argument('--top-k', type=int, default=128,
                      help='sample among the k likeliest pitches, 1..128 (default: all)')
  parser.add_argument('--top-p', type=float, default=1.0,
                      help='nucleus sampling mass in (0, 1] (default %(default)s)')
  parser.add_argument('--prime', nargs='+', metavar='MIDI',
                      help="prime with the first window of these files (cycled over samples); "
                      "default: the validation windows bundled with the export")
  parser.add_argument('--program', type=int, default=0,
                      help='General MIDI program of the output, 0..127 (default: piano)')
  args = parser.parse_args(argv)
  try:
    written = run(args.model, args.out, args.num_samples, args.num_notes, args.seed,
                  args.temperature, args.top_k, args.top_p, args.prime, args.program)
  except GenerationError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(f'wrote {len(written)} MIDI files and piano rolls to {args.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
