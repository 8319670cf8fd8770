r"""Generate pieces from an exported SavedModel: MIDI files, piano-roll PNGs and WAV audio.

    python -m serving.generate --model MODEL_DIR/export --out DIR --num-samples 4 \
        (--num-notes 256 | --seconds 30) --seed 0 --temperature 1.0 [--top-k 40] [--top-p 0.95] \
        [--prime a.mid b.mid [--prime-from 12.5] | --prime-data DATA_DIR | --no-prime] \
        [--program 0] [--soundfont FILE.sf2 | --no-audio]

Needs only the export: the model, and the dataset contract and default primes in its assets/.
All samples run as one batch through the export's ``generate`` signature, whose sampling loop
runs inside the graph. Primes (see ``serving.primes``): the first window of ``--prime`` MIDI
files (or the first window from ``--prime-from`` seconds), windows of a dataset's test split
(``--prime-data``), a neutral window (``--no-prime``), or by default the validation windows
bundled with the export. Each output MIDI holds the prime on an instrument named ``prime`` and
the generated notes on one named ``continuation`` (a ``--no-prime`` piece has no prime
instrument); the piano roll draws the prime in grey and the continuation in red.

``--seconds S`` generates until every continuation lasts S seconds: notes are generated in
rounds (each round one ``generate`` call for the whole batch, continuing from the last window
of the previous one), then each continuation is cut to the notes starting before S seconds,
with any note still sounding at S shortened to end there. Round ``r > 0`` draws with a seed
derived from ``--seed`` and ``r`` (see :func:`round_seed`), so the result depends only on the
inputs.

Requests are checked before the model is loaded and every prime is read before anything is
written, so a bad request writes nothing; every file is written under a temporary name and
renamed. The same inputs and seed give byte-identical MIDI files.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import sys

import numpy as np

from partita import audio, failures, midi_io
from serving import primes as primes_lib
from serving import validation
from serving.validation import MAX_NUM_NOTES, MAX_SECONDS, GenerationError

# Notes per --seconds round, beyond the count the training data's mean step predicts: some
# slack so that one round usually suffices.
ROUND_SLACK = 1.25
ROUND_EXTRA_NOTES = 16


@dataclasses.dataclass
class Export:
  """A loaded export: the SavedModel and the dataset contract and primes from its assets."""
  model: object
  info: dict
  bundled_primes: dict[str, np.ndarray]

  @property
  def window_length(self) -> int:
    return self.info['window_length']


def load_export(export_dir: str) -> Export:
  """Loads an export written by ``trainer.task`` (local or ``gs://``) and checks it can serve.

  Raises:
    GenerationError: no SavedModel there, its assets are missing, it cannot be loaded, it lacks
      the ``generate`` or ``predict_next`` function, or its windows are not the length its
      ``info.json`` says.
  """
  import tensorflow as tf  # deferred: `--help` and argument errors should not wait for TF.
  assets = os.path.join(export_dir, 'assets')
  if not tf.io.gfile.exists(os.path.join(export_dir, 'saved_model.pb')):
    raise GenerationError(f'{export_dir} is not a SavedModel export (no saved_model.pb)')
  try:
    with tf.io.gfile.GFile(os.path.join(assets, 'info.json')) as f:
      info = json.load(f)
    with tf.io.gfile.GFile(os.path.join(assets, 'primes.json')) as f:
      bundled = {name: np.asarray(values) for name, values in json.load(f).items()}
    window_length = int(info['window_length'])
  except (OSError, tf.errors.NotFoundError, ValueError, KeyError, TypeError) as e:
    raise GenerationError(f'{export_dir} lacks the assets written by trainer.task: {e}') from e
  try:
    model = tf.saved_model.load(export_dir)
  except Exception as e:  # a corrupt or foreign SavedModel raises many kinds of error
    raise GenerationError(f'{export_dir}: cannot load the SavedModel: {type(e).__name__}: '
                          f'{str(e)[:300]}') from e
  for function in ('generate', 'predict_next'):
    if not hasattr(model, function):
      raise GenerationError(f'{export_dir} has no `{function}` function: not a partita export')
  signature = model.generate.concrete_functions[0].structured_input_signature[0]
  if signature[0].shape[-1] != window_length:
    raise GenerationError(f'{export_dir} is incompatible: its model takes windows of '
                          f'{signature[0].shape[-1]} notes but its info.json says {window_length}')
  return Export(model, info, bundled)


def generate(model, primes: dict[str, np.ndarray], num_notes: int, temperature: float,
             top_k: int, top_p: float, seed: int) -> dict[str, np.ndarray]:
  """Runs the export's in-graph sampling loop on a batch of primes ``[batch, window]``;
  returns ``[batch, num_notes]`` arrays.

  Row ``b``'s draws depend on ``seed`` and ``b``, not on the other rows, so the same prime in
  the same row with the same seed gives the same notes.
  """
  import tensorflow as tf
  outputs = model.generate(
      tf.constant(primes['pitch'], tf.int32), tf.constant(primes['step'], tf.float32),
      tf.constant(primes['duration'], tf.float32), tf.constant(primes['velocity'], tf.float32),
      tf.constant(num_notes, tf.int32), tf.constant(temperature, tf.float32),
      tf.constant(top_k, tf.int32), tf.constant(top_p, tf.float32), tf.constant(seed, tf.int64))
  return {name: values.numpy() for name, values in outputs.items()}


def round_seed(seed: int, round_index: int) -> int:
  """The seed of ``--seconds`` round ``round_index``: ``seed`` itself for round 0 (so a piece
  starts as a ``--num-notes`` one with the same seed does), then a hash of both, so no two
  rounds repeat each other's random draws."""
  if round_index == 0:
    return seed
  digest = hashlib.sha256(f'{seed}:{round_index}'.encode()).digest()
  return int.from_bytes(digest[:8], 'little') & validation.MAX_SEED


def generate_for_seconds(export: Export, primes: dict[str, np.ndarray], seconds: float,
                         temperature: float, top_k: int, top_p: float,
                         seed: int) -> list[dict[str, np.ndarray]]:
  """Generates continuations lasting ``seconds`` (see the module docstring); one notes dict per
  prime, of varying lengths.

  A sample that has not reached ``seconds`` within MAX_NUM_NOTES notes (a model predicting
  near-zero steps) is returned as it is, with a printed warning.
  """
  step_mean = max(float(export.info['timing']['step']['mean']), 1e-3)
  per_round = int(min(MAX_NUM_NOTES, math.ceil(ROUND_SLACK * seconds / step_mean)
                      + ROUND_EXTRA_NOTES))
  window = {name: np.asarray(values) for name, values in primes.items()}
  rounds = []
  total = 0
  while total < MAX_NUM_NOTES:
    count = min(per_round, MAX_NUM_NOTES - total)
    rounds.append(generate(export.model, window, count, temperature, top_k, top_p,
                           round_seed(seed, len(rounds))))
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


def choose_primes(export: Export, num_samples: int, prime_paths: list[str] | None,
                  prime_from: float, prime_data: str | None,
                  no_prime: bool) -> tuple[list[dict[str, np.ndarray]], list[str]]:
  """One prime window per sample and a description of where each came from.

  Sources are cycled over the samples when there are fewer than ``num_samples``.
  """
  window_length = export.window_length
  if no_prime:
    neutral = primes_lib.neutral_window(export.info, window_length)
    return [neutral] * num_samples, ['no prime (neutral start)'] * num_samples
  if prime_paths:
    import tensorflow as tf  # for gs:// primes; already loaded with the export
    windows = []
    for path in prime_paths:
      try:
        with tf.io.gfile.GFile(path, 'rb') as f:
          data = f.read()
      except (OSError, tf.errors.OpError) as e:
        raise GenerationError(f'prime {path}: cannot read: {e}') from e
      windows.append(primes_lib.window_from_midi(data, window_length, prime_from,
                                                 source=f'prime {path}'))
    where = f' from {prime_from:g} s' if prime_from else ''
    sources = [f'primed with {os.path.basename(path)}{where}' for path in prime_paths]
  elif prime_data:
    windows = primes_lib.windows_from_dataset(prime_data, window_length, num_samples)
    sources = [f'primed with test window {i} of {prime_data}' for i in range(num_samples)]
  else:
    bundled = export.bundled_primes
    windows = [{name: values[i] for name, values in bundled.items()}
               for i in range(len(bundled['pitch']))]
    sources = [f'primed with validation window {i} of the export' for i in range(len(windows))]
  chosen = [i % len(windows) for i in range(num_samples)]
  return [windows[i] for i in chosen], [sources[i] for i in chosen]


def write_sample(stem: str, prime: dict[str, np.ndarray] | None,
                 continuation: dict[str, np.ndarray], program: int, title: str,
                 soundfont: str | None) -> list[str]:
  """Writes ``stem``.mid, .png and (with a soundfont) .wav, each atomically; returns the paths."""
  if prime is not None:
    prime = dict(prime, step=np.concatenate([[0.0], prime['step'][1:]]))  # start at the prime
  midi_io.write_midi(stem + '.mid', prime, continuation, program)
  midi_io.write_piano_roll(stem + '.png', prime, continuation, title=title)
  written = [stem + '.mid', stem + '.png']
  if soundfont:
    audio.render_wav(stem + '.mid', stem + '.wav', soundfont)
    written.append(stem + '.wav')
  return written


def run(export_dir: str, out_dir: str, num_samples: int, num_notes: int | None = 256,
        seed: int = 0, temperature: float = 1.0, top_k: int = 128, top_p: float = 1.0,
        prime_paths: list[str] | None = None, program: int = 0, seconds: float | None = None,
        prime_from: float = 0.0, prime_data: str | None = None, no_prime: bool = False,
        audio_wanted: bool = True, soundfont: str | None = None) -> list[str]:
  """Generates ``num_samples`` pieces into ``out_dir``; returns the MIDI paths written.

  WAV files are rendered when ``audio_wanted`` and FluidSynth and the soundfont (default:
  :func:`partita.audio.default_soundfont`) are installed; otherwise a printed note says why
  audio was skipped. A ``soundfont`` named explicitly must exist.
  """
  if num_samples < 1:
    raise GenerationError(f'num-samples must be >= 1, got {num_samples}')
  validation.check_length(num_notes, seconds)
  validation.check_sampling(temperature, top_k, top_p, seed, program)
  if sum([bool(prime_paths), prime_data is not None, no_prime]) > 1:
    raise GenerationError('give at most one of prime files, prime data and no-prime')
  validation.check_prime_from(prime_from)
  if prime_from and not prime_paths:
    raise GenerationError('prime-from applies to prime MIDI files only')
  if soundfont and audio_wanted and not os.path.isfile(soundfont):
    raise GenerationError(f'soundfont {soundfont} does not exist')
  audio_skipped = audio.unavailable_reason(soundfont or audio.default_soundfont())

  export = load_export(export_dir)
  prime_list, sources = choose_primes(export, num_samples, prime_paths, prime_from, prime_data,
                                      no_prime)
  batch = {name: np.stack([prime[name] for prime in prime_list]) for name in midi_io.NOTE_KEYS}
  if seconds is None:
    generated = generate(export.model, batch, num_notes, temperature, top_k, top_p, seed)
    continuations = [{name: values[i] for name, values in generated.items()}
                     for i in range(num_samples)]
  else:
    continuations = generate_for_seconds(export, batch, seconds, temperature, top_k, top_p,
                                         seed)

  os.makedirs(out_dir, exist_ok=True)
  render_with = None
  if audio_wanted and not audio_skipped:
    render_with = soundfont or audio.default_soundfont()
  written = []
  for sample, continuation in enumerate(continuations):
    stem = os.path.join(out_dir, f'sample_{sample:03d}')
    try:
      write_sample(stem, None if no_prime else prime_list[sample], continuation, program,
                   f'sample {sample}: {sources[sample]}', render_with)
    except audio.AudioError as e:
      raise GenerationError(f'audio for {stem}.mid: {e}') from e
    written.append(stem + '.mid')
  if audio_wanted and audio_skipped:
    print(f'note: WAV audio skipped: {audio_skipped}')
  return written


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      description='Generate pieces from a SavedModel exported by trainer.task: per sample a MIDI '
      'file (the prime on an instrument named "prime", the generated notes on "continuation"), '
      'a piano-roll PNG (prime grey, continuation red) and, when FluidSynth and a General MIDI '
      'soundfont are installed, a WAV file. All samples are generated in one batch by the '
      "export's in-graph sampling loop. The same inputs and seed give byte-identical MIDI.")
  parser.add_argument('--model', required=True, help='export folder (MODEL_DIR/export)')
  parser.add_argument('--out', required=True, help='output folder')
  parser.add_argument('--num-samples', type=int, default=4,
                      help='pieces to generate (default %(default)s)')
  length = parser.add_mutually_exclusive_group()
  length.add_argument('--num-notes', type=int,
                      help=f'generated notes per piece, 1..{MAX_NUM_NOTES} (default 256)')
  length.add_argument('--seconds', type=float,
                      help=f'instead of --num-notes: generate until each continuation lasts '
                      f'this long, in (0, {MAX_SECONDS:g}], and cut it there (at most '
                      f'{MAX_NUM_NOTES} notes)')
  parser.add_argument('--seed', type=int, default=0,
                      help='same seed, same music (default %(default)s)')
  parser.add_argument('--temperature', type=float, default=1.0,
                      help='> 0; lower is more conservative (default %(default)s)')
  parser.add_argument('--top-k', type=int, default=128,
                      help='sample among the k likeliest pitches, 1..128 (default 128: all)')
  parser.add_argument('--top-p', type=float, default=1.0,
                      help='nucleus sampling: the likeliest pitches holding this probability '
                      'mass, in (0, 1] (default %(default)s)')
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
                      'duration), which is not written to the output')
  parser.add_argument('--prime-from', type=float, default=0.0, metavar='SECONDS',
                      help='with --prime: take the window of notes starting at or after this '
                      'time in each file (seconds, default 0)')
  parser.add_argument('--program', type=int, default=0,
                      help='General MIDI program of the output, 0..127 (default 0: piano)')
  parser.add_argument('--soundfont', metavar='SF2',
                      help='General MIDI soundfont for the WAV files (default: '
                      f'${audio.SOUNDFONT_ENV} or {audio.DEFAULT_SOUNDFONT})')
  parser.add_argument('--no-audio', action='store_true', help='write no WAV files')
  args = parser.parse_args(argv)
  num_notes = 256 if args.num_notes is None and args.seconds is None else args.num_notes
  try:
    written = run(args.model, args.out, args.num_samples, num_notes, args.seed,
                  args.temperature, args.top_k, args.top_p, args.prime, args.program,
                  seconds=args.seconds, prime_from=args.prime_from, prime_data=args.prime_data,
                  no_prime=args.no_prime, audio_wanted=not args.no_audio,
                  soundfont=args.soundfont)
  except failures.RejectionError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(f'wrote {len(written)} pieces to {args.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
