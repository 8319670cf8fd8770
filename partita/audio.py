"""MIDI file -> WAV, with the FluidSynth command-line program and a General MIDI soundfont.

Audio is optional: rendering needs the ``fluidsynth`` program and a soundfont, which are system
packages (Debian/Ubuntu: ``apt-get install fluidsynth fluid-soundfont-gm``; macOS:
``brew install fluid-synth`` plus any GM ``.sf2``), not Python packages. The command-line program
is used rather than ``pretty_midi.PrettyMIDI.fluidsynth()``, which needs the ``pyfluidsynth``
binding on top of the same library and returns samples that would still have to be written out;
the program reads the MIDI file that serving has already written and writes the WAV itself.

:func:`unavailable_reason` says, before anything is generated, why audio cannot be rendered, so
callers can print one clear note and skip it. WAV files are written atomically like the MIDI
files (:mod:`partita.atomic`): FluidSynth renders to a hidden temporary name in the same folder,
renamed on success.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from partita import atomic

# Where Debian's fluid-soundfont-gm puts the FluidR3 General MIDI soundfont.
DEFAULT_SOUNDFONT = '/usr/share/sounds/sf2/FluidR3_GM.sf2'
SOUNDFONT_ENV = 'PARTITA_SOUNDFONT'
SAMPLE_RATE = 44_100
# FluidSynth renders a minute of piano in well under a second; a generous bound still stops a
# stuck renderer from holding up a batch.
RENDER_TIMEOUT_S = 600


class AudioError(Exception):
  """FluidSynth failed on a file; the message has its output."""


def default_soundfont() -> str:
  """``$PARTITA_SOUNDFONT`` if set, else Debian's FluidR3 GM soundfont path."""
  return os.environ.get(SOUNDFONT_ENV) or DEFAULT_SOUNDFONT


def unavailable_reason(soundfont: str) -> str | None:
  """Why WAV files cannot be rendered with ``soundfont`` here, or None if they can."""
  if shutil.which('fluidsynth') is None:
    return ('the fluidsynth program is not installed (Debian/Ubuntu: apt-get install fluidsynth '
            'fluid-soundfont-gm)')
  if not os.path.isfile(soundfont):
    return (f'no soundfont at {soundfont} (Debian/Ubuntu: apt-get install fluid-soundfont-gm, '
            f'or pass --soundfont / set ${SOUNDFONT_ENV} to a General MIDI .sf2 file)')
  return None


def render_wav(midi_path: str, wav_path: str, soundfont: str) -> None:
  """Renders ``midi_path`` to a 16-bit stereo WAV at ``wav_path``, atomically.

  Raises:
    AudioError: FluidSynth exited with an error, timed out or wrote nothing.
  """
  with atomic.replacing(wav_path) as temporary:
    # -n -i: no MIDI input, no interactive shell; -q: quiet; -F: render to a file as fast as
    # possible; -T: its type (the temporary name has no .wav suffix to infer it from).
    command = ['fluidsynth', '-n', '-i', '-q', '-T', 'wav', '-r', str(SAMPLE_RATE),
               '-F', temporary, soundfont, midi_path]
    try:
      result = subprocess.run(command, capture_output=True, text=True, timeout=RENDER_TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired as e:
      raise AudioError(f'fluidsynth took over {RENDER_TIMEOUT_S} s on {midi_path}') from e
    wrote = os.path.exists(temporary) and os.path.getsize(temporary) > 0
    if result.returncode != 0 or not wrote:
      raise AudioError(f'fluidsynth failed on {midi_path} (exit status {result.returncode}): '
                       f'{(result.stderr or result.stdout).strip()[-500:]}')


def wav_bytes(midi: bytes, soundfont: str) -> bytes:
  """Renders MIDI file bytes to WAV bytes.

  For writers that do not write to a local disk (the Beam job's outputs may be on ``gs://``).

  Raises:
    AudioError: as :func:`render_wav`.
  """
  with tempfile.TemporaryDirectory(prefix='partita-audio-') as folder:
    midi_path = os.path.join(folder, 'piece.mid')
    with open(midi_path, 'wb') as f:
      f.write(midi)
    wav_path = os.path.join(folder, 'piece.wav')
    render_wav(midi_path, wav_path, soundfont)
    with open(wav_path, 'rb') as f:
      return f.read()
