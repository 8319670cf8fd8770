"""Tests for partita.demo_corpus: a 3-score export, the cache hit, and resuming."""

import json
import os
import pathlib

import music21
import pretty_midi
import pytest

from partita import demo_corpus


def _file_identities(folder: pathlib.Path) -> dict[pathlib.Path, tuple[int, int]]:
  """(inode, mtime) per .mid file: both change when a file is rewritten and renamed."""
  return {path: (path.stat().st_ino, path.stat().st_mtime_ns) for path in folder.rglob('*.mid')}


@pytest.fixture
def first_three(tmp_path: pathlib.Path) -> pathlib.Path:
  return demo_corpus.ensure_demo_corpus(tmp_path / 'demo', workers=2, limit=3, progress=False)


def test_select_scores_keeps_only_real_scores_in_order() -> None:
  scores = demo_corpus.select_scores()
  assert len(scores) > 400
  assert not [path for path in scores if path.suffix in {'.rntxt', '.abc'}]
  assert scores == sorted(scores)
  names = {demo_corpus.corpus_name(path) for path in scores}
  assert not names & set(demo_corpus.TOO_SLOW_TO_EXPORT)
  # One encoding per piece: the .krn twin of a MusicXML chorale is dropped.
  assert 'bach/bwv277.mxl' in names and 'bach/bwv277.krn' not in names


def test_limited_export_writes_playable_midi_and_marker(first_three: pathlib.Path,
                                                        tmp_path: pathlib.Path) -> None:
  assert first_three == tmp_path / 'demo-first3'
  midi_files = sorted(first_three.rglob('*.mid'))
  assert [path.relative_to(first_three).as_posix() for path in midi_files] == [
      'bach/bwv1.6.mid', 'bach/bwv10.7.mid', 'bach/bwv101.7.mid']
  for path in midi_files:
    instruments = pretty_midi.PrettyMIDI(str(path)).instruments
    assert sum(len(instrument.notes) for instrument in instruments) > 10, path
  # Nothing else is left behind (no temporary of an atomic write): the MIDI files and the marker.
  every_file = sorted(path for path in first_three.rglob('*') if path.is_file())
  assert every_file == sorted([*midi_files, first_three / demo_corpus.MARKER_NAME])

  marker = json.loads((first_three / demo_corpus.MARKER_NAME).read_text())
  assert marker['music21_version'] == music21.__version__
  assert marker['mid_files'] == 3
  assert marker['skipped'] == {}
  assert marker['selection']['limit'] == 3
  assert 'bach' in marker['selection']['composers']


def test_second_call_returns_cached_folder_without_exporting(
    first_three: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
  before = _file_identities(first_three)

  def fail_if_exporting(*args: object, **kwargs: object) -> None:
    raise AssertionError('a cached corpus must not be exported again')

  monkeypatch.setattr(demo_corpus, '_export', fail_if_exporting)
  monkeypatch.setattr(demo_corpus, 'select_scores', fail_if_exporting)

  again = demo_corpus.ensure_demo_corpus(tmp_path / 'demo', limit=3, progress=False)
  assert again == first_three
  assert _file_identities(first_three) == before


def test_interrupted_export_resumes_with_missing_files_only(first_three: pathlib.Path,
                                                            tmp_path: pathlib.Path) -> None:
  (first_three / demo_corpus.MARKER_NAME).unlink()
  deleted = first_three / 'bach' / 'bwv10.7.mid'
  deleted.unlink()
  kept = _file_identities(first_three)

  resumed = demo_corpus.ensure_demo_corpus(tmp_path / 'demo', workers=2, limit=3, progress=False)
  assert resumed == first_three
  assert deleted.exists()
  after = _file_identities(first_three)
  assert {path: after[path] for path in kept} == kept
  assert json.loads((first_three / demo_corpus.MARKER_NAME).read_text())['mid_files'] == 3


def test_default_cache_dir_follows_partita_cache_dir(tmp_path: pathlib.Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
  monkeypatch.setenv('PARTITA_CACHE_DIR', os.fspath(tmp_path))
  expected = tmp_path / 'demo-corpus' / f'music21-{music21.__version__}'
  assert demo_corpus.default_cache_dir() == expected
