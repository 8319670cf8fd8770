"""A generated piece's files and page entry, rendered once for both writers.

The writers are ``serving.generate`` (local files) and ``serving.beam_generate`` (Beam's
FileSystems, local or ``gs://``).

A piece is its MIDI file (the prime on an instrument named ``prime``, the piece starting at its
first note; the generated notes on one named ``continuation``; a neutral start is not shown), its
piano roll (the prime grey, the continuation red), its WAV audio when a soundfont renders it, and
its section of the listening page (``index.html``): its name, prime, label and parameters.
Writers write :attr:`RenderedPiece.files` in their order, the MIDI last, so that where a MIDI
file exists its piece is complete.
"""

from __future__ import annotations

import argparse
import os
from typing import NamedTuple

import numpy as np

from partita import audio, listening_page, midi_io
from serving import generation_request, validation

# The resolved parameters of a run, which both writers save beside its pieces.
GENERATION_FILE = 'generation.yaml'
# The accounting of a run (requests in, written, dead letters by reason; candidates and
# their rejections), which both writers save last.
SUMMARY_FILE = 'summary.json'


class RenderedPiece(NamedTuple):
  """A piece's files as (suffix, bytes) in writing order, and its page entry."""
  files: tuple[tuple[str, bytes], ...]
  entry: listening_page.Entry


def prime_description(prime: str | None, prime_from: float) -> str:
  """A prime MIDI file (None: a neutral start) in words, as the pages show it."""
  if prime is None:
    return 'no prime (neutral start)'
  where = f' from {prime_from:g} s' if prime_from else ''
  return f'primed with {prime}{where}'


def render(request: generation_request.Request, prime: dict[str, np.ndarray] | None,
           continuation: dict[str, np.ndarray], source: str,
           soundfont: str | None, choice: str | None = None) -> RenderedPiece:
  """The piece ``request`` gave.

  ``prime`` is the window it continued (None: a neutral start, not shown), ``source`` that prime
  in words, ``soundfont`` the one to render WAV audio with (None: no audio), ``choice`` how it
  was chosen among its candidates (``serving.choosing.Choice.summary``; None: not shown).

  Raises:
    audio.AudioError: FluidSynth failed.
  """
  if prime is not None:
    prime = dict(prime, step=np.concatenate([[0.0], prime['step'][1:]]))  # start at the prime
  title = f'{request.name}: {source}' + (f', {request.label}' if request.label else '')
  midi = midi_io.midi_bytes(prime, continuation, request.program)
  files = [('.png', midi_io.piano_roll_png(prime, continuation, title))]
  if soundfont:
    files.append(('.wav', audio.wav_bytes(midi, soundfont)))
  files.append(('.mid', midi))
  return RenderedPiece(tuple(files), page_entry(request, source, bool(soundfont), choice))


def page_entry(request: generation_request.Request, source: str, with_audio: bool,
               choice: str | None = None) -> listening_page.Entry:
  """A piece's section of ``index.html``; ``choice`` as :func:`render` takes it."""
  name = request.name
  parameters = f'{request.sampling.description(request.seconds)}, program {request.program}'
  clip = listening_page.Clip(f'{name}: generated continuation', f'{name}.mid', f'{name}.png',
                             f'{name}.wav' if with_audio else None)
  details = (('prime', source), ('label', request.label or 'none (unconditional)'),
             ('parameters', parameters))
  if choice:
    details += (('chosen', choice),)
  return listening_page.Entry(name, details, (clip,))


def audio_plan(render_audio: bool, soundfont: str | None) -> tuple[str | None, str | None]:
  """The soundfont to render WAV files with and, where none are rendered, the page's note on why.

  The soundfont is None when none are rendered. A ``soundfont`` argument of None stands for
  :func:`partita.audio.default_soundfont`.

  Raises:
    failures.RejectionError: ``bad_request``, a soundfont named explicitly does not exist.
  """
  if soundfont and render_audio and not os.path.isfile(soundfont):
    raise validation.bad_request(f'soundfont {soundfont} does not exist')
  if not render_audio:
    return None, 'not asked for (--no-audio)'
  soundfont = soundfont or audio.default_soundfont()
  unavailable = audio.unavailable_reason(soundfont)
  return (None if unavailable else soundfont), unavailable


def add_audio_flags(parser: argparse.ArgumentParser) -> None:
  """``--soundfont`` and ``--no-audio``, the same in both commands."""
  parser.add_argument('--soundfont', metavar='SF2',
                      help='General MIDI soundfont for the WAV files (default: '
                      f'${audio.SOUNDFONT_ENV} or {audio.DEFAULT_SOUNDFONT}); without '
                      'FluidSynth and a soundfont, WAV files are skipped with a note saying why')
  parser.add_argument('--no-audio', action='store_true', help='write no WAV files')
