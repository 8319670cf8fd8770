"""Demo corpus: classical scores from music21's bundled corpus, exported once to MIDI.

The demo needs real music but may not touch the network at run time. The ``music21`` wheel
ships a corpus of scores inside the package, so this module picks a subset of it (the Bach
chorales, plus string quartets, songs and piano pieces by a dozen other composers), converts
each score to a ``.mid`` file in parallel, and caches the result. Every later call is a
single file-existence check.

Cache layout: ``<cache>/<composer>/.../<piece>.mid``, mirroring the corpus-relative path
(``bach/bwv1.6.mxl`` becomes ``<cache>/bach/bwv1.6.mid``). ``<cache>`` defaults to
``~/.cache/partita/demo-corpus/music21-<version>``; the music21 version is part of the name
because a new release may ship different scores or translate them differently.

A ``COMPLETED`` marker (JSON) is written only after every selected score has been tried, so
an interrupted export is resumed by the next call: each ``.mid`` is renamed into place only
once fully written (:mod:`partita.atomic`), so a file that exists is complete and is not
exported again. The marker records which selection was exported; after a change of the
selection below, the next call exports the scores it adds and deletes the files it drops.

Usage::

    python -m partita.demo_corpus [--cache-dir DIR] [--workers N] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import pathlib
import sys
import warnings

from partita import atomic

try:
  import music21
  from music21 import bar, common, converter, corpus, repeat, spanner, stream
  import tqdm
except ImportError as e:  # the only module that needs the demo extra
  raise ImportError(f'the demo corpus needs the demo extra ({e.name} is missing): '
                    "pip install 'partita[demo]'") from e

# Composer folders of the music21 corpus to export. Left out on purpose: palestrina
# (1,318 Humdrum masses would dwarf everything else), josquin (only .abc song books), and
# the folk-song collections (essenFolksong, ryansMammoth, ...: monophonic .abc tunes).
COMPOSERS = ('bach', 'beethoven', 'chopin', 'corelli', 'cpebach', 'handel', 'haydn', 'monteverdi',
             'mozart', 'schubert', 'schumann_clara', 'schumann_robert', 'verdi', 'weber')

# File types that hold actual scores, in order of preference when the corpus has the same
# piece in two encodings (bach/bwv277, beethoven/opus18no1/*: MusicXML wins over Humdrum).
# Not included: .rntxt (Roman-numeral analyses, no notes) and .abc (multi-tune song books
# that take minutes each to parse).
SCORE_SUFFIXES = ('.mxl', '.musicxml', '.xml', '.krn')

# Scores left out because exporting them is too slow for a demo: every file that took 10 s
# or more to parse and write, with those seconds (one core of a 2-core VM, music21 10.5.1).
# Nearly all of it goes into music21's MIDI translation (stripTies re-sorting each part),
# which grows faster than linearly with the length of a part, so the files holding a whole
# string quartet are the worst. Without them the export takes 2-2.5 minutes on 2 cores.
TOO_SLOW_TO_EXPORT = {
    'beethoven/opus18no3.mxl': 25,  # whole quartet
    'beethoven/opus18no4.mxl': 308,  # whole quartet
    'beethoven/opus18no5.mxl': 18,  # whole quartet
    'beethoven/opus74.mxl': 76,  # whole quartet
    'beethoven/opus132.mxl': 47,  # whole quartet
    'beethoven/opus133.mxl': 30,  # Grosse Fuge
    'beethoven/opus59no1/movement4.mxl': 10,
    'beethoven/opus59no2/movement1.mxl': 20,
    'schumann_robert/opus41no1/movement1.mxl': 13,
}

MARKER_NAME = 'COMPLETED'


def default_cache_dir() -> pathlib.Path:
  """Folder for the full export.

  ``$PARTITA_CACHE_DIR`` (or ``~/.cache/partita``) + ``demo-corpus/music21-<version>``.
  """
  cache_root = (os.environ.get('PARTITA_CACHE_DIR')
                or pathlib.Path.home() / '.cache' / 'partita')
  return pathlib.Path(cache_root) / 'demo-corpus' / f'music21-{music21.__version__}'


def corpus_name(score_path: pathlib.Path) -> str:
  """Path of a corpus file relative to the corpus root, e.g. ``"bach/bwv1.6.mxl"``."""
  return score_path.relative_to(common.getCorpusFilePath()).as_posix()


def select_scores() -> list[pathlib.Path]:
  """Corpus files to export: absolute paths, sorted, one encoding per piece."""
  candidates = [pathlib.Path(score_path)
                for composer in COMPOSERS
                for score_path in corpus.getComposer(composer)
                if pathlib.Path(score_path).suffix in SCORE_SUFFIXES]
  score_by_piece: dict[pathlib.Path, pathlib.Path] = {}
  for score_path in sorted(candidates, key=lambda path: SCORE_SUFFIXES.index(path.suffix)):
    score_by_piece.setdefault(score_path.with_suffix(''), score_path)
  # Exclude after choosing the encoding, so a slow piece's other encoding does not slip in.
  return sorted(score_path for score_path in score_by_piece.values()
                if corpus_name(score_path) not in TOO_SLOW_TO_EXPORT)


def ensure_demo_corpus(cache_dir: str | os.PathLike[str] | None = None,
                       workers: int | None = None, limit: int | None = None,
                       progress: bool = True) -> pathlib.Path:
  """Exports the demo corpus to MIDI unless already done; returns the folder of ``.mid`` files.

  Args:
    cache_dir: folder for the full export (default: ``default_cache_dir()``).
    workers: parallel processes (default: one per CPU).
    limit: export only the first ``limit`` selected scores (for tests). They go to a sibling
      folder named ``<cache_dir>-first<limit>``, so a partial export is never taken for the
      full corpus.
    progress: show a progress bar and a one-line summary on stderr.
  """
  folder = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()
  if limit is not None:
    folder = folder.with_name(f'{folder.name}-first{limit}')
  marker = folder / MARKER_NAME
  selection = {'composers': list(COMPOSERS), 'suffixes': list(SCORE_SUFFIXES),
               'excluded_as_too_slow_seconds': TOO_SLOW_TO_EXPORT, 'limit': limit}
  if marker.exists() and json.loads(marker.read_text()).get('selection') == selection:
    return folder

  scores = select_scores()[:limit]
  targets = {score: folder / pathlib.Path(corpus_name(score)).with_suffix('.mid')
             for score in scores}
  missing = [score for score in scores if not targets[score].exists()]
  # A cache made for another selection: drop the files this one does not choose.
  for stale in set(folder.rglob('*.mid')) - set(targets.values()):
    stale.unlink()
  skipped = _export([(score, targets[score]) for score in missing],
                    workers=workers or os.cpu_count() or 1,
                    already_done=len(scores) - len(missing), progress=progress)

  mid_files = len(scores) - len(skipped)
  summary = {'music21_version': music21.__version__, 'mid_files': mid_files,
             'skipped': dict(sorted(skipped.items())), 'selection': selection}
  atomic.write_bytes(marker, (json.dumps(summary, indent=2) + '\n').encode())
  if progress:
    print(f'exported {len(missing) - len(skipped)} files ({mid_files} in total), '
          f'skipped {len(skipped)} (see {marker})', file=sys.stderr)
  return folder


def _export(jobs: list[tuple[pathlib.Path, pathlib.Path]], workers: int, already_done: int,
            progress: bool) -> dict[str, str]:
  """Exports (score, target .mid) pairs in parallel; returns {corpus name: why skipped}."""
  skipped: dict[str, str] = {}
  if not jobs:
    return skipped
  # Largest files first: a long quartet movement that starts last would leave the other
  # cores idle while it finishes.
  jobs = sorted(jobs, key=lambda job: job[0].stat().st_size, reverse=True)
  for folder in {target.parent for _, target in jobs}:
    folder.mkdir(parents=True, exist_ok=True)
  with (multiprocessing.Pool(min(workers, len(jobs)), initializer=_silence_music21) as pool,
        tqdm.tqdm(total=already_done + len(jobs), initial=already_done,
                  desc='demo corpus to MIDI', unit='score', file=sys.stderr,
                  # In a log (CI) rather than a terminal, a line every 30 s, not one per score.
                  mininterval=0.1 if sys.stderr.isatty() else 30.0,
                  disable=not progress) as progress_bar):
    for name, reason in pool.imap_unordered(_export_score, jobs):
      if reason is not None:
        skipped[name] = reason
      progress_bar.update()
  return skipped


def _silence_music21() -> None:
  """Worker initializer: hides music21's warnings so the progress bar stays readable.

  The warnings are about odd notation in many scores, harmless for MIDI. Failures are reported
  in the marker.
  """
  warnings.simplefilter('ignore')


def _export_score(job: tuple[pathlib.Path, pathlib.Path]) -> tuple[str, str | None]:
  """Parses one score and writes it as MIDI; returns (corpus name, why skipped or None).

  The file is written atomically (:mod:`partita.atomic`): its temporary name never ends in
  ``.mid``, so an export killed midway leaves nothing that looks like a finished MIDI file.
  """
  score_path, target = job
  try:
    # forceSource: parse the file itself and leave no pickle cache in music21's temp dir.
    score = converter.parse(score_path, forceSource=True)
    if isinstance(score, stream.Opus):
      return corpus_name(score_path), 'holds several scores (music21 Opus)'
    with atomic.replacing(target) as temporary:
      try:
        score.write('midi', fp=temporary)
      except repeat.ExpanderException:
        # music21 unrolls repeats before writing MIDI and gives up when the marks are
        # inconsistent (chopin/mazurka06-2, a few quartet movements); playing each section
        # once beats losing the piece.
        _remove_repeats(score)
        score.write('midi', fp=temporary)
    return corpus_name(score_path), None
  except Exception as error:  # one unreadable score must not abort the whole export
    return corpus_name(score_path), f'{type(error).__name__}: {error}'


def _remove_repeats(score: stream.Score) -> None:
  """Deletes repeat barlines, volta brackets and D.C./segno-style marks, in place."""
  for measure in score[stream.Measure]:
    if isinstance(measure.leftBarline, bar.Repeat):
      measure.leftBarline = None
    if isinstance(measure.rightBarline, bar.Repeat):
      measure.rightBarline = None
  repeat_marks = score.recurse().getElementsByClass(
      (repeat.RepeatExpression, spanner.RepeatBracket))
  for mark in list(repeat_marks):
    mark.activeSite.remove(mark)


def argument_parser() -> argparse.ArgumentParser:
  """The command's flags."""
  parser = argparse.ArgumentParser(
      prog='python -m partita.demo_corpus',
      description='Export the classical scores bundled with music21 (Bach chorales, Beethoven, '
      'Mozart and Haydn quartet movements, Monteverdi madrigals, songs and piano pieces) to MIDI '
      'files for the demo, in parallel, without network access. The result is cached: a second '
      'run only checks the COMPLETED marker, and an interrupted run resumes where it stopped.')
  parser.add_argument('--cache-dir', type=pathlib.Path, metavar='DIR',
                      help='folder for the .mid files (default: $PARTITA_CACHE_DIR or '
                      f'~/.cache/partita, then demo-corpus/music21-{music21.__version__})')
  parser.add_argument('--workers', type=int, metavar='N',
                      help='parallel processes (default: one per CPU)')
  parser.add_argument('--limit', type=int, metavar='N',
                      help='export only the first N scores, into a separate <cache-dir>-firstN '
                      'folder')
  return parser


def main(argv: list[str] | None = None) -> None:
  """Command line: exports (or finds) the demo corpus and prints where it is."""
  args = argument_parser().parse_args(argv)
  folder = ensure_demo_corpus(args.cache_dir, workers=args.workers, limit=args.limit)
  midi_count = sum(1 for _ in folder.rglob('*.mid'))
  print(f'{midi_count} MIDI files in {folder}')


if __name__ == '__main__':
  main()
