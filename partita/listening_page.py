"""``index.html``: a page to look at and listen to pieces, beside the files it shows.

Every generation output folder (``serving.generate``, ``serving.beam_generate``) and the
evaluation report get one. The page is one self-contained file: its style is inline, it has no
script and loads nothing from the network; it links the piano-roll PNGs, WAV files and MIDI
files of its own folder by relative paths, so opening the file from disk (or from a copy of the
folder) is enough, no server needed. Every picture, player and link is labelled with what it is
(a model's continuation, a real one, an n-gram's), so nothing on the page is mistaken for
another.

Plain strings in, HTML out: no Beam and no TensorFlow here; the callers write the file.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import html
from urllib import parse

PAGE_FILE = 'index.html'

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 110em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
section.piece { border-top: 1px solid #ccc; padding: 0.6em 0; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.1em 1em; margin: 0.4em 0; }
dt { color: #666; } dd { margin: 0; }
.clips { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; max-width: 36em; }
img { max-width: 100%; }
figure img { border: 1px solid #ddd; }
figure audio { width: 100%; }
figcaption { font-weight: 600; margin-bottom: 0.3em; }
.note { color: #8a5a00; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
"""


@dataclasses.dataclass(frozen=True)
class Clip:
  """One piece of music shown on a page.

  ``label`` says what it is (e.g. "model continuation") and labels its picture, player and link.
  Paths are relative to the page.
  """
  label: str
  midi: str
  image: str | None = None
  audio: str | None = None


@dataclasses.dataclass(frozen=True)
class Entry:
  """One section of a page: a title, details as (name, value) pairs, and clips side by side."""
  title: str
  details: tuple[tuple[str, str], ...] = ()
  clips: tuple[Clip, ...] = ()


def _link(path: str) -> str:
  return html.escape(parse.quote(path), quote=True)


def _clip_html(clip: Clip) -> str:
  label = html.escape(clip.label)
  parts = [f'<figure><figcaption>{label}</figcaption>']
  if clip.image:
    parts.append(f'<img src="{_link(clip.image)}" alt="piano roll: {label}">')
  if clip.audio:
    parts.append(f'<audio controls preload="metadata" src="{_link(clip.audio)}" '
                 f'aria-label="audio: {label}"></audio>')
  parts.append(f'<div><a href="{_link(clip.midi)}" download>MIDI: {label}</a></div></figure>')
  return ''.join(parts)


def _entry_html(entry: Entry) -> str:
  details = ''.join(f'<dt>{html.escape(name)}</dt><dd>{html.escape(value)}</dd>'
                    for name, value in entry.details)
  clips = ''.join(_clip_html(clip) for clip in entry.clips)
  return (f'<section class="piece"><h3>{html.escape(entry.title)}</h3>'
          + (f'<dl>{details}</dl>' if details else '')
          + f'<div class="clips">{clips}</div></section>')


def render(title: str, entries: Sequence[Entry], intro: Sequence[str] = (),
           audio_note: str | None = None, body_html: str = '') -> str:
  """The page: title, intro, a note on missing audio, trusted HTML, then one section per entry.

  ``title``, ``intro`` paragraphs (plain text), a note on why there is no audio (when
  ``audio_note``), ``body_html`` (trusted HTML such as the evaluation's tables), then one section
  per entry.
  """
  paragraphs = ''.join(f'<p>{html.escape(line)}</p>' for line in intro)
  if audio_note:
    paragraphs += f'<p class="note">No audio: {html.escape(audio_note)}.</p>'
  sections = ''.join(_entry_html(entry) for entry in entries)
  return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
          f'<title>{html.escape(title)}</title><style>{_STYLE}</style></head>'
          f'<body><h1>{html.escape(title)}</h1>{paragraphs}{body_html}{sections}</body></html>\n')
