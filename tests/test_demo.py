"""The main command's own steps (scripts/demo.sh): the composers it generates for, and its summary.

The composers come from an export's labels; the summary it ends with, from the files a run
writes.
"""

import json
import pathlib
import subprocess
import sys

import pytest

from evaluation import demo_summary
from partita import demo_composers
from partita import labels as labels_lib

REPO = pathlib.Path(__file__).resolve().parent.parent


def corpus_labels(min_pieces: int) -> dict:
  """info.json's ``labels`` of a corpus whose rare composers outnumber two known ones.

  Its three rare composers, pooled under ``other``, have more training pieces than beethoven and
  mozart, and its unknown pieces have the most.
  """
  train = {'bach': 30, 'chopin': 20, 'beethoven': 12, 'mozart': 12, 'haydn': 9, 'verdi': 5,
           'weber': 5, 'handel': 5, labels_lib.UNKNOWN: 50}
  pieces = {name: {'train': count, 'test': 1} for name, count in train.items()}
  return labels_lib.vocabulary(pieces, min_pieces, 'composer')


def write_json(path: pathlib.Path, value: dict) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(value, indent=1))


def test_the_composers_with_most_training_pieces_are_chosen_ties_alphabetically():
  labels = corpus_labels(min_pieces=8)
  assert labels['vocabulary'] == ['unknown', 'other', 'bach', 'beethoven', 'chopin', 'haydn',
                                  'mozart']
  assert demo_composers.composers(labels) == ['bach', 'chopin', 'beethoven', 'mozart']
  assert demo_composers.composers(labels, limit=2) == ['bach', 'chopin']


def test_a_model_with_fewer_own_labels_than_the_limit_gets_them_all_and_one_without_none():
  assert demo_composers.composers(corpus_labels(min_pieces=25)) == ['bach']
  assert demo_composers.composers(corpus_labels(min_pieces=100)) == []


def test_the_command_prints_the_exports_composers_for_the_script(tmp_path):
  export = tmp_path / 'model' / 'export'
  write_json(export / 'assets' / 'info.json', {'labels': corpus_labels(min_pieces=8)})
  result = subprocess.run([sys.executable, '-m', 'partita.demo_composers', str(export)],
                          cwd=REPO, capture_output=True, text=True, check=True)
  assert result.stdout == 'bach chopin beethoven mozart\n'


def demo_outputs(out: pathlib.Path, with_audio: bool, composers: tuple[str, ...]) -> None:
  """The files of a demo run that the summary reads, shaped as a small run writes them.

  Too few long test pieces for the music statistics, a piece for each of ``composers``.
  """
  write_json(out / 'data' / 'info.json', {
      'counts': {'files_in': 13, 'pieces_written': 12, 'duplicates': 1, 'dead_letters': 2,
                 'dead_letter_reasons': {'not_midi': 2}, 'label_conflicts': 0},
      'splits': {'train': {'pieces': 10, 'windows': 345}, 'validation': {'pieces': 1},
                 'test': {'pieces': 1}}})
  write_json(out / 'model' / 'metrics.json', {
      'pitch_nll': 3.14159, 'pitch_accuracy': 0.1234, 'pitch_top5_accuracy': 0.5678,
      'step_nll': 1.5, 'duration_nll': 1.25, 'note_nll': 5.89159, 'steps': 40})
  skipped = ('2 test chunks hold a window plus 192 notes; at least 3 are needed (try a smaller '
             '--num-notes)')
  write_json(out / 'model' / 'report' / 'evaluation.json', {
      'test_windows': 77,
      'likelihood': {
          'model': {'pitch_nll': 3.2, 'pitch_accuracy': 0.125, 'pitch_top5_accuracy': 0.5,
                    'step_nll': 1.5, 'duration_nll': 1.25, 'note_nll': 5.95},
          '2-gram': {'pitch_nll': 3.5, 'pitch_accuracy': 0.25, 'pitch_top5_accuracy': 0.625},
          'timing histogram': {'step_nll': 1.75, 'duration_nll': 2.0}},
      'best_ngram': '2-gram', 'best_timing': 'timing histogram', 'baseline_note_nll': 7.25,
      'baseline_timing_nll': 3.75, 'statistics': {'skipped': skipped},
      'listening': {'skipped': skipped}})
  for composer in composers:
    (out / 'composers' / composer).mkdir(parents=True)
  (out / 'generated').mkdir()
  if with_audio:
    (out / 'generated' / 'sample_000.wav').write_bytes(b'RIFF')


@pytest.mark.parametrize('with_audio, generated', [
    (True, 'MIDI + piano-roll PNG + WAV per sample'),
    (False, 'MIDI + piano-roll PNG per sample')])
def test_the_summary_says_where_each_output_is_and_the_headline_numbers(
    tmp_path, with_audio, generated):
  demo_outputs(tmp_path / 'demo', with_audio, composers=('mozart', 'bach'))
  out = str(tmp_path / 'demo')
  skipped = ('skipped: 2 test chunks hold a window plus 192 notes; at least 3 are needed (try a '
             'smaller --num-notes)')
  assert demo_summary.summary_lines(out) == [
      f'dataset      {out}/data: 12 pieces (1 duplicates, 2 dead letters), 345 training windows',
      f'model        {out}/model (TensorBoard: tensorboard --logdir {out}/model/logs)',
      f'export       {out}/model/export',
      f'generated    {out}/generated: {generated}; open {out}/generated/index.html in a browser '
      'to look and listen',
      'validation   pitch NLL 3.142 nats/note, accuracy 12.3%, top-5 56.8% after 40 steps',
      f'report       {out}/model/report/index.html (baselines, music statistics, plots, and real, '
      'model and n-gram pieces side by side; also as report.md)',
      f'in the style of bach         {out}/composers/bach/sample_000.mid (and .png; '
      f'{out}/composers/bach/index.html to listen)',
      f'in the style of mozart       {out}/composers/mozart/sample_000.mid (and .png; '
      f'{out}/composers/mozart/index.html to listen)',
      'test pitch NLL  model 3.200 vs best n-gram (2-gram) 3.500 nats/note: model better by '
      '0.300',
      'test accuracy   model top-1 12.5% top-5 50.0% vs 2-gram top-1 25.0% top-5 62.5% (77 '
      'windows)',
      'test timing NLL model step + duration 2.750 vs timing histogram 3.750 nats/note (10 ms '
      'grid): model better by 1.000',
      'test note NLL   model 5.950 vs 2-gram + timing histogram 7.250 nats/note: model better by '
      '1.300',
      f'music stats     {skipped}',
      f'listening       {skipped}']


def test_a_run_of_a_corpus_without_composers_lists_no_piece_in_a_style(tmp_path):
  demo_outputs(tmp_path / 'demo', with_audio=False, composers=())
  lines = demo_summary.summary_lines(str(tmp_path / 'demo'))
  assert [line.split()[0] for line in lines] == [
      'dataset', 'model', 'export', 'generated', 'validation', 'report', 'test', 'test', 'test',
      'test', 'music', 'listening']
