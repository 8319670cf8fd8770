r"""Generate pieces from an exported SavedModel: MIDI files, piano-roll PNGs and WAV audio.

    python -m serving.generate --model MODEL_DIR/export --out DIR --num-samples 4 \
        (--num-notes 256 | --seconds 30) --seed 0 --temperature 1.0 [--top-k 40] [--top-p 0.95] \
        [--prime a.mid b.mid [--prime-from 12.5] | --prime-data DATA_DIR | --no-prime] \
        [--composer chopin] [--program 0] [--soundfont FILE.sf2 | --no-audio]
    python -m serving.generate --model MODEL_DIR/export --list-labels

Needs only the export: the model, and the dataset contract and default primes in its assets/.
All samples run as one batch through the export's ``generate`` signature, whose sampling loop
runs inside the graph; its parameters are a :class:`serving.sampling.Sampling`, the type (and
the flags) every generation path shares. Primes (see ``serving.primes``): the first window of
``--prime`` MIDI files (or the first window from ``--prime-from`` seconds), windows of a
dataset's test split (``--prime-data``), a neutral window (``--no-prime``), or by default the
validation windows bundled with the export. Each output MIDI holds the prime on an instrument
named ``prime`` and the generated notes on one named ``continuation`` (a ``--no-prime`` piece
has no prime instrument); the piano roll draws the prime in grey and the continuation in red.
``--composer NAME`` (or ``--label NAME``) conditions every sample on one of the labels the model
was trained with (``--list-labels`` lists them, from the export's ``info.json``); without it the
samples are unconditional.

``--seconds S`` generates until every continuation lasts S seconds: notes are generated in
rounds (each round one ``generate`` call for the whole batch, continuing from the last window
of the previous one), then each continuation is cut to the notes starting before S seconds,
with any note still sounding at S shortened to end there. Round ``r > 0`` draws with seeds
derived from each sample's seed and ``r`` (see :func:`round_seed`), so the result depends only
on the inputs.

Requests are checked before the model is loaded and every prime is read before anything is
written, so a bad request writes nothing; every file is written under a temporary name and
renamed. The same inputs and seed give byte-identical MIDI files. The resolved parameters are
saved last, beside the pieces, as ``OUT/generation.yaml`` (a :class:`Generation`).
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

from partita import (
  atomic,
  audio,
  config_tree,
  constants,
  export_contract,
  failures,
  listening_page,
  midi_io,
)
from partita import labels as labels_lib
from serving import primes as primes_lib
from serving import sampling as sampling_lib
from serving import validation

# Notes per --seconds round, beyond the count the training data's mean step predicts: some
# slack so that one round usually suffices.
ROUND_SLACK = 1.25
ROUND_EXTRA_NOTES = 16
# The resolved parameters of a run, written beside its pieces.
GENERATION_FILE = 'generation.yaml'


@dataclasses.dataclass
class Export:
  """A loaded export: the SavedModel and the dataset contract and primes from its assets."""
  model: object
  info: dict
  bundled_primes: dict[str, np.ndarray]

  @property
  def window_length(self) -> int:
    return self.info['window_length']


@dataclasses.dataclass(frozen=True)
class Options:
  """What :func:`run` makes besides the sampling: how many pieces, how long, from which primes,
  and what it writes. The defaults are the command's."""
  num_samples: int = 4
  seconds: float | None = None  # when set, replaces the sampling's num_notes (see --seconds)
  program: int = 0  # the General MIDI program of the written pieces
  # At most one prime source; none: the validation windows bundled with the export.
  prime_paths: tuple[str, ...] = ()
  prime_from: float = 0.0  # seconds into each prime file
  prime_data: str | None = None
  no_prime: bool = False
  audio: bool = True
  soundfont: str | None = None  # None: audio.default_soundfont()
  label: str | None = None  # a label of the model's (a composer); None: unconditional

  def check(self) -> None:
    """Raises a ``bad_request`` rejection for an option out of range or options that
    conflict."""
    if self.num_samples < 1:
      raise validation.bad_request(f'num-samples must be >= 1, got {self.num_samples}')
    if self.seconds is not None:
      validation.check_seconds(self.seconds)
    validation.check_program(self.program)
    if sum([bool(self.prime_paths), self.prime_data is not None, self.no_prime]) > 1:
      raise validation.bad_request('give at most one of prime files, prime data and no-prime')
    validation.check_prime_from(self.prime_from)
    if self.prime_from and not self.prime_paths:
      raise validation.bad_request('prime-from applies to prime MIDI files only')
    if self.soundfont and self.audio and not os.path.isfile(self.soundfont):
      raise validation.bad_request(f'soundfont {self.soundfont} does not exist')


@dataclasses.dataclass(frozen=True)
class Generation:
  """One run's resolved parameters, saved as ``OUT/generation.yaml``;
  ``config_tree.from_yaml(Generation, text)`` reads them back to run it again."""
  model: str
  sampling: sampling_lib.Sampling
  options: Options


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
  return Export(model, info, bundled)


def generate(model, primes: dict[str, np.ndarray], sampling: sampling_lib.Sampling,
             seeds: list[int] | None = None, rows: int | None = None,
             labels: list[int] | None = None) -> dict[str, np.ndarray]:
  """Runs the export's in-graph sampling loop on a batch of primes ``[batch, window]``;
  returns ``[batch, sampling.num_notes]`` arrays.

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
  """The seed of ``--seconds`` round ``round_index``: ``seed`` itself for round 0 (so a piece
  starts as a ``--num-notes`` one with the same seed does), then a hash of both, so no two
  rounds repeat each other's random draws."""
  if round_index == 0:
    return seed
  digest = hashlib.sha256(f'{seed}:{round_index}'.encode()).digest()
  return int.from_bytes(digest[:8], 'little') & export_contract.MAX_SEED


def generate_for_seconds(export: Export, primes: dict[str, np.ndarray], seconds: float,
                         sampling: sampling_lib.Sampling, seeds: list[int] | None = None,
                         rows: int | None = None,
                         labels: list[int] | None = None) -> list[dict[str, np.ndarray]]:
  """Generates continuations lasting ``seconds`` (see the module docstring); one notes dict per
  prime, of varying lengths. ``sampling.num_notes`` is not used: the rounds choose their counts.
  ``seeds``, ``rows`` and ``labels`` as for :func:`generate`; a row's continuation depends only
  on its own prime, parameters, label and seed (rounds that other rows still need are cut off
  it).

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


def choose_primes(export: Export,
                  options: Options) -> tuple[list[dict[str, np.ndarray]], list[str]]:
  """One prime window per sample and a description of where each came from.

  Sources are cycled over the samples when there are fewer than ``options.num_samples``.
  """
  window_length, num_samples = export.window_length, options.num_samples
  if options.no_prime:
    neutral = primes_lib.neutral_window(export.info, window_length)
    return [neutral] * num_samples, ['no prime (neutral start)'] * num_samples
  if options.prime_paths:
    import tensorflow as tf  # for gs:// primes; already loaded with the export
    windows = []
    for path in options.prime_paths:
      try:
        with tf.io.gfile.GFile(path, 'rb') as f:
          data = f.read()
      except (OSError, tf.errors.OpError) as e:
        raise validation.bad_request(f'prime {path}: cannot read: {e}') from e
      windows.append(primes_lib.window_from_midi(data, window_length, options.prime_from,
                                                 source=f'prime {path}'))
    where = f' from {options.prime_from:g} s' if options.prime_from else ''
    sources = [f'primed with {os.path.basename(path)}{where}' for path in options.prime_paths]
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


def run(export_dir: str, out_dir: str, sampling: sampling_lib.Sampling,
        options: Options = Options()) -> list[str]:
  """Generates ``options.num_samples`` pieces into ``out_dir``, then saves the resolved
  parameters there (``generation.yaml``); returns the MIDI paths written.

  WAV files are rendered when ``options.audio`` and FluidSynth and the soundfont (default:
  :func:`partita.audio.default_soundfont`) are installed; otherwise a printed note says why
  audio was skipped. A soundfont named explicitly must exist.

  Raises:
    failures.RejectionError: the request cannot be served (nothing is written then), or audio
      rendering failed.
  """
  sampling.check()
  options.check()
  soundfont = options.soundfont or audio.default_soundfont()
  audio_skipped = audio.unavailable_reason(soundfont)

  export = load_export(export_dir)
  labels = [validation.label_id(export.info['labels'], options.label)] * options.num_samples
  prime_list, sources = choose_primes(export, options)
  batch = {name: np.stack([prime[name] for prime in prime_list])
           for name in constants.NOTE_FEATURES}
  if options.seconds is None:
    generated = generate(export.model, batch, sampling, labels=labels)
    continuations = [{name: values[i] for name, values in generated.items()}
                     for i in range(options.num_samples)]
  else:
    continuations = generate_for_seconds(export, batch, options.seconds, sampling,
                                         labels=labels)

  os.makedirs(out_dir, exist_ok=True)
  render_with = soundfont if options.audio and not audio_skipped else None
  written, entries = [], []
  seeds = export_contract.row_seeds(sampling.seed, options.num_samples)
  for sample, continuation in enumerate(continuations):
    name = f'sample_{sample:03d}'
    stem = os.path.join(out_dir, name)
    try:
      write_sample(stem, None if options.no_prime else prime_list[sample], continuation,
                   options.program, f'sample {sample}: {sources[sample]}'
                   + (f', {options.label}' if options.label else ''), render_with)
    except audio.AudioError as e:
      raise validation.bad_request(f'audio for {stem}.mid: {e}') from e
    written.append(stem + '.mid')
    entries.append(page_entry(name, sources[sample], sampling, options, seeds[sample],
                              bool(render_with)))
  resolved = config_tree.to_yaml(Generation(export_dir, sampling, options))
  atomic.write_bytes(os.path.join(out_dir, GENERATION_FILE), resolved.encode())
  audio_note = (audio_skipped or None) if options.audio else 'not asked for (--no-audio)'
  page = listening_page.render(
      f'Generated pieces ({len(entries)})', entries,
      [f'Generated by serving.generate from {export_dir}; the resolved parameters are in '
       f'{GENERATION_FILE}. Piano rolls: the prime in grey, the continuation in red.'],
      audio_note)
  atomic.write_bytes(os.path.join(out_dir, listening_page.PAGE_FILE), page.encode())
  if options.audio and audio_skipped:
    print(f'note: WAV audio skipped: {audio_skipped}')
  return written


def page_entry(name: str, source: str, sampling: sampling_lib.Sampling, options: Options,
               seed: int, with_audio: bool) -> listening_page.Entry:
  """A sample's section of ``index.html``."""
  parameters = f'{sampling.description(options.seconds, seed)}, program {options.program}'
  clip = listening_page.Clip(f'{name}: generated continuation', f'{name}.mid', f'{name}.png',
                             f'{name}.wav' if with_audio else None)
  return listening_page.Entry(name, (('prime', source), ('label', label_text(options.label)),
                                     ('parameters', parameters)), (clip,))


def label_text(label: str | None) -> str:
  """A request's label as the pages show it."""
  return label or 'none (unconditional)'


def list_labels(export: Export) -> list[str]:
  """The lines of ``--list-labels``: each label the model can be asked for, with its id and
  training pieces."""
  labels = export.info['labels']
  train = labels_lib.pieces_per_id(labels, 'train')
  lines = [f"{labels['name']} labels of this model (--composer NAME or --label NAME; none: "
           'unconditional):']
  for label_id, name in enumerate(labels['vocabulary']):
    lines.append(f'  {label_id:>3}  {name:<24} {train.get(label_id, 0):>6} training pieces')
  return lines


def argument_parser() -> argparse.ArgumentParser:
  """The command's flags; the sampling flags are ``Sampling``'s, shared with the Beam job."""
  parser = argparse.ArgumentParser(
      description='Generate pieces from a SavedModel exported by trainer.task: per sample a MIDI '
      'file (the prime on an instrument named "prime", the generated notes on "continuation"), '
      'a piano-roll PNG (prime grey, continuation red) and, when FluidSynth and a General MIDI '
      'soundfont are installed, a WAV file; and the resolved parameters in generation.yaml. All '
      "samples are generated in one batch by the export's in-graph sampling loop. The same "
      'inputs and seed give byte-identical MIDI.')
  parser.add_argument('--model', required=True, help='export folder (MODEL_DIR/export)')
  parser.add_argument('--out', help='output folder (required unless --list-labels)')
  add_label_flag(parser)
  parser.add_argument('--list-labels', action='store_true',
                      help="list the model's labels with their training pieces, and exit")
  parser.add_argument('--num-samples', type=int, default=Options.num_samples,
                      help='pieces to generate (default %(default)s)')
  config_tree.add_flags(parser, sampling_lib.Sampling)
  add_seconds_flag(parser)
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
  parser.add_argument('--prime-from', type=float, default=Options.prime_from, metavar='SECONDS',
                      help='with --prime: take the window of notes starting at or after this '
                      'time in each file (seconds, default %(default)s)')
  parser.add_argument('--program', type=int, default=Options.program,
                      help=f'General MIDI program of the output, 0..{constants.PROGRAMS - 1} '
                      '(default %(default)s: piano)')
  add_audio_flags(parser)
  return parser


def add_seconds_flag(parser: argparse.ArgumentParser) -> None:
  """``--seconds``, shared with the Beam job; see :func:`sampling_from_args`."""
  parser.add_argument('--seconds', type=float,
                      help=f'instead of --num-notes: generate until each continuation lasts '
                      f'this long, in (0, {validation.MAX_SECONDS:g}], and cut it there (at most '
                      f'{export_contract.MAX_GENERATED_NOTES} notes)')


def add_label_flag(parser: argparse.ArgumentParser) -> None:
  """``--composer`` (alias ``--label``), shared with the Beam job."""
  parser.add_argument('--composer', '--label', dest='label', metavar='NAME',
                      help='generate in the style of this label of the model (a composer; '
                      'serving.generate --list-labels lists them); default: unconditional')


def add_audio_flags(parser: argparse.ArgumentParser) -> None:
  """``--soundfont`` and ``--no-audio``, shared with the Beam job."""
  parser.add_argument('--soundfont', metavar='SF2',
                      help='General MIDI soundfont for the WAV files (default: '
                      f'${audio.SOUNDFONT_ENV} or {audio.DEFAULT_SOUNDFONT}); without '
                      'FluidSynth and a soundfont, WAV files are skipped with a note saying why')
  parser.add_argument('--no-audio', action='store_true', help='write no WAV files')


def sampling_from_args(parser: argparse.ArgumentParser,
                       args: argparse.Namespace) -> sampling_lib.Sampling:
  """The sampling flags' values; exits with a usage error if ``--seconds`` and ``--num-notes``
  are both given."""
  given = config_tree.flag_updates(args)
  if args.seconds is not None and 'num_notes' in given:
    parser.error('argument --seconds: not allowed with argument --num-notes')
  return config_tree.load(sampling_lib.Sampling, updates=given)


def main(argv: list[str] | None = None) -> int:
  parser = argument_parser()
  args = parser.parse_args(argv)
  if args.list_labels:
    try:
      print('\n'.join(list_labels(load_export(args.model))))
    except failures.RejectionError as e:
      print(f'error: {e}', file=sys.stderr)
      return 2
    return 0
  if not args.out:
    parser.error('the following arguments are required: --out')
  sampling = sampling_from_args(parser, args)
  options = Options(num_samples=args.num_samples, seconds=args.seconds, program=args.program,
                    prime_paths=tuple(args.prime or ()), prime_from=args.prime_from,
                    prime_data=args.prime_data, no_prime=args.no_prime,
                    audio=not args.no_audio, soundfont=args.soundfont, label=args.label)
  try:
    written = run(args.model, args.out, sampling, options)
  except failures.RejectionError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(f'wrote {len(written)} pieces to {args.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
