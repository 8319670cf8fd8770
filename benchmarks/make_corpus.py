r"""A benchmark corpus of any size: N MIDI files derived from the shared corpora.

    .venv/bin/python benchmarks/make_corpus.py --files 50000 --out /tmp/partita_corpus_50k \
        [--seed 0] [--sources ../shared/corpora/classical-midi,../shared/corpora/piano-midi]

Why: the preprocessing job's memory and shuffle must not grow with the corpus, which takes
corpora far larger than the 2,724 real files here to show. Copies would not do: the job keeps
pieces with the same notes once, so a corpus of copies is a corpus of duplicates. Each file
here is therefore a *variant* of a source file, with notes of its own:

* file ``i`` derives from source ``i mod S`` (the S source files in sorted order) as variant
  ``v = i div S``;
* variant 0 is the source's bytes unchanged, so the first S files are the real corpora, with
  their own duplicates and broken files;
* variant ``v >= 1`` is transposed by a nonzero number of semitones and played at another tempo
  (every tempo event scaled), a pair no other variant of that source has, and, for a third of
  the files (chosen by a hash of seed and ``i``), cut to an excerpt of 40–90% of the piece;
  notes pushed outside 0..127 by the transposition are dropped. A source that symusic cannot
  read is copied unchanged, so broken files stay as common as in the real corpora.

Files are written as ``OUT/NNN/iiiiiii-<source name>`` (1,000 per folder), and the same
arguments give the same bytes. The corpus goes under /tmp, never into the repository.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import shutil
import sys

import symusic

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.normpath(os.path.join(REPO_ROOT, '..', 'shared', 'corpora'))
DEFAULT_SOURCES = (os.path.join(SHARED, 'classical-midi'), os.path.join(SHARED, 'piano-midi'))
MIDI_SUFFIXES = ('.mid', '.midi')
FILES_PER_FOLDER = 1000
# Variant v >= 1 of a source: transposition TRANSPOSITIONS[(v - 1) % 10], tempo factor
# 1 + TEMPO_STEP * (1 + (v - 1) // 10), alternately faster and slower: distinct for every v.
TRANSPOSITIONS = (1, -1, 2, -2, 3, -3, 4, -4, 5, -5)
TEMPO_STEP = 0.04
EXCERPT_SHARE = 1 / 3


def source_files(folders: list[str]) -> list[str]:
  """Every MIDI file below ``folders``, sorted."""
  paths = []
  for folder in folders:
    for root, _, names in os.walk(folder):
      paths.extend(os.path.join(root, n) for n in names if n.lower().endswith(MIDI_SUFFIXES))
  return sorted(paths)


def unit_hash(seed: int, index: int, what: str) -> float:
  """A number in [0, 1) that depends only on its arguments."""
  digest = hashlib.sha256(f'{seed}/{index}/{what}'.encode()).digest()
  return int.from_bytes(digest[:8], 'little') / 2**64


def variant(score: symusic.Score, variant_index: int, seed: int, index: int) -> symusic.Score:
  """Variant ``variant_index`` >= 1 of ``score`` (see the module docstring)."""
  semitones = TRANSPOSITIONS[(variant_index - 1) % len(TRANSPOSITIONS)]
  step = 1 + (variant_index - 1) // len(TRANSPOSITIONS)
  factor = 1 + TEMPO_STEP * step if step % 2 else 1 / (1 + TEMPO_STEP * step)
  score = score.copy()
  for track in score.tracks:
    if not track.is_drum:
      track.notes.filter(lambda n: 0 <= n.pitch + semitones <= 127, inplace=True)
      for note in track.notes:
        note.pitch += semitones
  for tempo in score.tempos:
    tempo.qpm = tempo.qpm * factor
  if unit_hash(seed, index, 'excerpt') < EXCERPT_SHARE:
    length = 0.4 + 0.5 * unit_hash(seed, index, 'length')
    start = (1 - length) * unit_hash(seed, index, 'start')
    end = score.end()
    score = score.clip(int(start * end), int((start + length) * end), clip_end=True)
  return score


def write_one(task: tuple[int, str, int, str, int]) -> None:
  """Writes one corpus file: its source copied (variant 0, or a broken source), else a variant."""
  index, source, variant_index, out, seed = task
  name = f'{index // FILES_PER_FOLDER:03d}/{index:07d}-{os.path.basename(source)}'
  path = os.path.join(out, name)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  if variant_index:
    try:
      score = symusic.Score.from_file(source)
    except Exception:  # a broken source stays broken: copied as it is
      score = None
    if score is not None:
      variant(score, variant_index, seed, index).dump_midi(path)
      return
  shutil.copyfile(source, path)


def main(argv: list[str] | None = None) -> None:
  """Writes the corpus with a pool of processes."""
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n', 2)[2],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--files', type=int, required=True, help='how many files to write')
  parser.add_argument('--out', required=True, help='output folder (must not exist)')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--sources', default=','.join(DEFAULT_SOURCES),
                      help='comma-separated folders of source MIDI (default %(default)s)')
  parser.add_argument('--processes', type=int, default=os.cpu_count())
  args = parser.parse_args(argv)
  if os.path.exists(args.out):
    sys.exit(f'error: {args.out} exists')
  sources = source_files(args.sources.split(','))
  if not sources:
    sys.exit(f'error: no MIDI files under {args.sources}')
  tasks = [(i, sources[i % len(sources)], i // len(sources), args.out, args.seed)
           for i in range(args.files)]
  with multiprocessing.Pool(args.processes) as pool:
    for done, _ in enumerate(pool.imap_unordered(write_one, tasks, chunksize=64), start=1):
      if done % 5000 == 0:
        print(f'{done} files', file=sys.stderr)
  print(f'wrote {args.files} files from {len(sources)} sources to {args.out}')


if __name__ == '__main__':
  main()
