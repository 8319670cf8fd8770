"""evaluation.evaluate on the session's tiny dataset and model (conftest.tiny_model).

The metrics, the baselines scoring the same notes, primes, training curves and the written
report.
"""

import json
import os
import shutil

import numpy as np
import pretty_midi
import pytest
import tensorflow as tf
from trainer_fixtures import LABELS, WINDOW

from evaluation import conditioning, evaluate
from evaluation import report as report_lib
from partita import audio, baselines, constants, music_stats
from partita import dataset as dataset_lib
from partita import labels as labels_lib
from serving import export_client
from trainer import config as config_lib
from trainer import data as data_lib
from trainer import metrics as metrics_lib


def test_likelihood_scores_every_test_window_in_every_row(tiny_model):
  info = tiny_model.info
  fitted = evaluate.fit_baselines(
      dataset_lib.read_chunks(tiny_model.data_dir, info, 'train', info['labels']), WINDOW)
  export = export_client.load_export(tiny_model.export_dir).model
  rows, windows, _ = evaluate.likelihood(export, tiny_model.data_dir, info, fitted,
                                         by_label=False, batch_size=7)
  assert windows == info['splits']['test']['windows']
  assert set(rows) == {'model', 'unigram', '2-gram', '3-gram', '4-gram', '5-gram',
                       'repeat previous', 'timing histogram', 'timing histogram | previous'}
  # The model's row has every metric of metrics.json, under its names.
  assert sorted(rows['model']) == sorted(metrics_lib.NOTE_METRICS)
  for row in ('unigram', '2-gram', 'repeat previous'):
    assert sorted(rows[row]) == ['pitch_accuracy', 'pitch_nll', 'pitch_top5_accuracy'], row
  for row in ('timing histogram', 'timing histogram | previous'):
    assert sorted(rows[row]) == ['duration_nll', 'step_nll'], row


def test_baselines_score_every_note_after_the_first_window_of_each_test_piece(tiny_model):
  info = tiny_model.info
  fitted = evaluate.fit_baselines(
      dataset_lib.read_chunks(tiny_model.data_dir, info, 'train', info['labels']), WINDOW)
  export = export_client.load_export(tiny_model.export_dir).model
  rows, _, _ = evaluate.likelihood(export, tiny_model.data_dir, info, fitted, by_label=False)
  # The same means, computed from the stored chunks: each chunk's notes from index WINDOW on
  # are targets, each with the notes before it in the chunk as context.
  # The timing baselines score each target's bin, the conditional one given the bin of the
  # note before it.
  trigram = fitted['pitch']['3-gram']
  histogram = fitted['timing']['timing histogram']
  conditional = fitted['timing']['timing histogram | previous']
  nll, timing_nll = [], {(row, part): [] for row in ('timing histogram', 'timing histogram | '
                                                      'previous') for part in ('step', 'duration')}
  for chunk in dataset_lib.read_chunks(tiny_model.data_dir, info, 'test', info['labels']):
    pitch = chunk['pitch']
    contexts = np.stack([pitch[i - 2:i] for i in range(WINDOW, len(pitch))])
    probs = trigram.distribution(contexts)
    nll.extend(-np.log(probs[np.arange(len(contexts)), pitch[WINDOW:]]))
    for part in ('step', 'duration'):
      timing_nll['timing histogram', part].extend(
          -histogram[part].log_prob(chunk[part][WINDOW:]))
      timing_nll['timing histogram | previous', part].extend(
          -conditional[part].log_prob(chunk[part][WINDOW:], chunk[part][WINDOW - 1:-1]))
  assert len(nll) == info['splits']['test']['windows']
  assert rows['3-gram']['pitch_nll'] == pytest.approx(np.mean(nll), rel=1e-12)
  for (row, part), values in timing_nll.items():
    assert len(values) == len(nll)
    assert rows[row][f'{part}_nll'] == pytest.approx(np.mean(values), rel=1e-12), (row, part)


def test_each_window_is_scored_with_its_label_and_with_none(tiny_model):
  """The per-label means against predict_next called here, window by window.

  predict_next is called with each window's true label id and with the unconditional id.
  """
  info = tiny_model.info
  fitted = evaluate.fit_baselines(
      dataset_lib.read_chunks(tiny_model.data_dir, info, 'train', info['labels']), WINDOW)
  export = export_client.load_export(tiny_model.export_dir).model
  rows, windows, sums = evaluate.likelihood(export, tiny_model.data_dir, info, fitted,
                                            by_label=True, batch_size=5)
  dataset = data_lib.make_dataset(tiny_model.data_dir, info, 'test', config_lib.DataConfig(),
                                  training=False, batch_size=64)
  expected = {}
  for inputs, targets in dataset:
    label = inputs['label'][:, -1].numpy()
    for suffix, ids in (('', label), ('_unconditional', np.zeros_like(label))):
      out = export.predict_next(**{name: inputs[name] for name in constants.NOTE_FEATURES},
                                next_step=targets['step'], next_pitch=targets['pitch'],
                                next_duration=targets['duration'], label=ids)
      log_probs = tf.nn.log_softmax(out['pitch_logits']).numpy()
      nll = -log_probs[np.arange(len(label)), targets['pitch'].numpy()]
      for label_id in np.unique(label):
        expected.setdefault(int(label_id), {}).setdefault(f'pitch_nll{suffix}', []).extend(
            nll[label == label_id])
  test_ids = {int(chunk['label']) for chunk in dataset_lib.read_chunks(
      tiny_model.data_dir, info, 'test', info['labels'])}
  assert sorted(sums) == sorted(expected) == sorted(test_ids) and len(test_ids) >= 2
  for label_id, values in expected.items():
    assert sums[label_id]['windows'] == len(values['pitch_nll'])
    for name, nll in values.items():
      assert sums[label_id][name] == pytest.approx(np.sum(nll), rel=1e-5), (label_id, name)
  summary = conditioning.label_rows(sums, info['labels'])
  assert summary['all']['windows'] == windows == summary['labelled']['windows']
  assert summary['all']['pitch_nll'] == pytest.approx(rows['model']['pitch_nll'], rel=1e-6)
  everything = {name: np.concatenate([v[name] for v in expected.values()])
                for name in ('pitch_nll', 'pitch_nll_unconditional')}
  assert summary['all']['pitch_nll_gain'] == pytest.approx(
      everything['pitch_nll_unconditional'].mean() - everything['pitch_nll'].mean(), abs=1e-6)
  pieces = labels_lib.pieces_per_id(info['labels'], 'test')
  vocabulary = info['labels']['vocabulary']
  assert sorted(summary['labels']) == sorted(
      vocabulary[label_id] for label_id in test_ids
      if pieces.get(label_id, 0) >= conditioning.MIN_TEST_PIECES)


def test_label_rows_are_means_per_label_over_labels_with_enough_test_pieces():
  labels = {'name': 'composer', 'min_pieces': 1, 'vocabulary': ['unknown', 'other', 'bach'],
            'ids': {'unknown': 0, 'bach': 2, 'liszt': 1},
            'pieces': {'unknown': {'test': 9}, 'bach': {'test': 5}, 'liszt': {'test': 2}}}
  sums = {0: {'windows': 2, 'pitch_nll': 6.0, 'pitch_nll_unconditional': 6.0, 'note_nll': 20.0,
              'note_nll_unconditional': 20.0},
          1: {'windows': 1, 'pitch_nll': 2.0, 'pitch_nll_unconditional': 2.5, 'note_nll': 9.0,
              'note_nll_unconditional': 9.0},
          2: {'windows': 4, 'pitch_nll': 8.0, 'pitch_nll_unconditional': 10.0, 'note_nll': 40.0,
              'note_nll_unconditional': 41.0}}
  rows = conditioning.label_rows(sums, labels)
  assert list(rows['labels']) == ['bach']  # other has 2 test pieces, fewer than 5
  assert rows['labels']['bach'] == {'pitch_nll': 2.0, 'pitch_nll_unconditional': 2.5,
                                    'note_nll': 10.0, 'note_nll_unconditional': 10.25,
                                    'pitch_nll_gain': 0.5, 'note_nll_gain': 0.25, 'windows': 4,
                                    'test_pieces': 5}
  assert rows['labelled']['windows'] == 5
  assert rows['labelled']['pitch_nll_gain'] == pytest.approx((12.5 - 10.0) / 5)
  assert rows['all']['windows'] == 7
  assert rows['all']['pitch_nll'] == pytest.approx(16.0 / 7)


def test_fit_baselines_uses_the_training_targets():
  chunks = [{'pitch': np.array([60, 61, 62, 62]), 'step': np.array([9.0, 9.0, 0.5, 1.5]),
             'duration': np.array([9.0, 9.0, 1.0, 2.0]), 'velocity': np.full(4, 64.0)}]
  fitted = evaluate.fit_baselines(chunks, window_length=2)
  # Training targets: steps 0.5 and 1.5 s (bins 50 and 150), durations 1 and 2 s (bins 100 and
  # 200); add-one smoothing over the 3001 bins gives a target's bin 2 / 3003, any other 1 / 3003.
  histogram = fitted['timing']['timing histogram']
  np.testing.assert_allclose(np.exp(histogram['step'].log_prob([0.5, 1.5, 9.0, 1.0])),
                             np.array([2, 2, 1, 1]) / 3003, rtol=1e-13)
  np.testing.assert_allclose(np.exp(histogram['duration'].log_prob([1.0, 2.0, 9.0, 0.5])),
                             np.array([2, 2, 1, 1]) / 3003, rtol=1e-13)
  # Transitions into the targets: steps 9 -> 0.5 -> 1.5 (the first from before the targets).
  conditional = fitted['timing']['timing histogram | previous']['step']
  beta = baselines.TIMING_BACKOFF_WEIGHT
  np.testing.assert_allclose(
      np.exp(conditional.log_prob(np.array([0.5, 1.5, 1.5]), np.array([9.0, 0.5, 9.0]))),
      [(1 + beta * 2 / 3003) / (1 + beta), (1 + beta * 2 / 3003) / (1 + beta),
       beta * 2 / 3003 / (1 + beta)], rtol=1e-13)
  assert fitted['pitch']['repeat previous'].eps == pytest.approx(0.5)  # 61->62, 62->62
  unigram = fitted['pitch']['unigram'].distribution(np.zeros((1, 0), int))[0]
  assert unigram[62] > 0.9 and unigram[60] == unigram[61]  # only 62 is a target


def test_primes_and_continuations_spread_over_long_enough_chunks():
  def chunk(start, length):
    notes = np.arange(start, start + length)
    return {name: notes.astype(float) for name in constants.NOTE_FEATURES}

  chunks = [chunk(0, 10), chunk(100, 5), chunk(200, 10), chunk(300, 10), chunk(400, 9)]
  primes, real = evaluate.primes_and_continuations(chunks, window_length=4, num_pieces=2,
                                                   num_notes=5)
  # Long enough (4 + 5 notes): chunks 0, 2, 3, 4; two of them evenly spread: the first, last.
  np.testing.assert_array_equal(primes['pitch'], [[0, 1, 2, 3], [400, 401, 402, 403]])
  np.testing.assert_array_equal(real[1]['pitch'], [404, 405, 406, 407, 408])
  _, every = evaluate.primes_and_continuations(chunks, window_length=4, num_pieces=10,
                                               num_notes=5)
  assert len(every) == 4


def test_generated_statistics_measures_model_pieces_given_without_drawing():
  rng = np.random.default_rng(0)

  def piece(length):
    notes = {name: np.full(length, 0.5) for name in constants.NOTE_FEATURES}
    return {**notes, 'pitch': rng.integers(55, 75, length)}

  real = [piece(20) for _ in range(4)]
  chosen = [piece(16) for _ in range(4)]  # say, a critic's picks
  primes = {name: np.stack([p[name][:4] for p in real]) for name in constants.NOTE_FEATURES}
  ngram = baselines.NGram.fit([p['pitch'] for p in real], 2, first_target=4)
  sampling = evaluate.model_sampling(16, 1.0, 0)
  # No export: the given pieces are measured, nothing is drawn.
  sets, features, comparisons, statistics = evaluate.generated_statistics(
      None, primes, real, ngram, real, 4, sampling, model_set=chosen)
  assert sets['model'] is chosen and sets['real'] is real
  expected = music_stats.compare_sets(music_stats.set_features(real),
                                      music_stats.set_features(chosen))
  for name, comparison in expected.items():
    assert comparisons['model'][name]['oa'] == comparison['oa']
  assert statistics['pieces'] == 4


def test_read_scalars_reads_the_trainers_tensorboard_logs(tiny_model):
  curves = evaluate.read_scalars(os.path.join(tiny_model.model_dir, 'logs'))
  steps, values = curves['validation']['pitch_nll']
  assert steps == [2, 4]  # the tiny preset validates after each epoch of 2 of its 4 steps
  assert all(np.isfinite(values))
  assert 'learning_rate' in curves['train']


def test_training_curves_plot_tags_the_trainer_logs():
  drawn = [tag for _, tags in report_lib.CURVE_PANELS for tag in tags]
  assert set(drawn) <= set(metrics_lib.TRAINING_METRICS)


def test_command_writes_the_report(tiny_model, tmp_path, capsys):
  out = str(tmp_path / 'report')
  assert evaluate.main(['--data', tiny_model.data_dir, '--model', tiny_model.export_dir,
                        '--out', out, '--num-pieces', '4', '--num-notes', '8',
                        '--label-guidance', '2']) == 0
  printed = capsys.readouterr().out
  assert 'test pitch NLL  model' in printed and 'mean overlapping area' in printed
  assert 'test timing NLL model' in printed and 'test note NLL   model' in printed
  for start in ('listening       median on-grid share real ', 'texture         median notes ',
                'two-sample      forest accuracy telling real from model ',
                'targets         model on-grid ratio '):
    assert start in printed, start
  sets = ('real', 'model', 'ngram')
  pieces = [os.path.join(report_lib.PIECES_DIR, f'{name}_{i:02d}.{ext}') for name in sets
            for i in range(report_lib.PIECES_PER_SET) for ext in ('mid', 'png')]
  for name in (report_lib.REPORT_FILE, report_lib.RESULTS_FILE, report_lib.CURVES_PNG,
               report_lib.FEATURES_PNG, report_lib.DISTANCES_PNG, 'index.html', *pieces):
    assert os.path.getsize(os.path.join(out, name)) > 0, name
  # The page: the report's tables, then each prime's real, model and n-gram pieces side by side,
  # each labelled for what it is (the real continuation's piano roll is not "generated").
  with open(os.path.join(out, 'index.html')) as f:
    page = f.read()
  # Likelihood, music statistics, measures a listener hears, style.
  assert page.count('<table>') == 4 and 'src="features.png"' in page
  assert page.count('<section class="piece">') == report_lib.PIECES_PER_SET
  for label in ('real continuation of prime 0', 'model continuation of prime 2',
                'n-gram continuation of prime 1'):
    assert f'alt="piano roll: {label}"' in page and f'MIDI: {label}' in page
  with_audio = audio.unavailable_reason(audio.default_soundfont()) is None
  assert page.count('<audio') == (3 * report_lib.PIECES_PER_SET if with_audio else 0)
  real = pretty_midi.PrettyMIDI(os.path.join(out, report_lib.PIECES_DIR, 'real_00.mid'))
  assert len(real.instruments[1].notes) == 8  # the prime, then the 8 real notes after it
  with open(os.path.join(out, report_lib.RESULTS_FILE)) as f:
    results = json.load(f)
  statistics = results['statistics']
  assert statistics['notes'] == 8 and statistics['pieces'] >= 3
  for values in statistics['features'].values():
    assert 0.0 <= values['model']['oa'] <= 1.0 + 1e-9
  assert results['best_ngram'] in ('2-gram', '3-gram', '4-gram', '5-gram')
  # The model's note NLL is compared with the best n-gram plus the better timing baseline.
  rows = results['likelihood']
  assert results['best_timing'] in ('timing histogram', 'timing histogram | previous')
  timing = {row: rows[row]['step_nll'] + rows[row]['duration_nll']
            for row in ('timing histogram', 'timing histogram | previous')}
  assert results['baseline_timing_nll'] == pytest.approx(min(timing.values()), rel=1e-12)
  assert timing[results['best_timing']] == min(timing.values())
  assert results['baseline_note_nll'] == pytest.approx(
      rows[results['best_ngram']]['pitch_nll'] + results['baseline_timing_nll'], rel=1e-12)
  assert 'mean_timing_seconds' not in results
  # The label: the likelihood with and without it, and the style classifier's verdicts.
  assert 'label           test pitch NLL with the true label' in printed
  assert 'style           classifier accuracy on generated pieces from test primes' in printed
  style = results['conditioning']['style']
  assert style['label_guidance'] == 2.0 and 'label guidance 2)' in printed
  assert style['classes'] == [name for name in LABELS if name in style['classes']]
  assert len(style['classes']) >= 2
  assert sorted(style['generated']) == sorted(conditioning.STARTS)
  for score in (style['real'], *style['generated'].values()):
    assert score['chance'] == pytest.approx(1 / len(style['classes']))
  for kind, start in zip(conditioning.STARTS, style['generated'], strict=True):
    assert sum(map(sum, style['generated'][start]['confusion'])) == (
        len(style['classes']) * style['pieces_per_label']), kind
  for path in conditioning.STYLE_PNG.values():
    assert os.path.getsize(os.path.join(out, path)) > 0, path
  for name in style['classes']:
    piece = pretty_midi.PrettyMIDI(os.path.join(out, report_lib.PIECES_DIR, f'label_{name}.mid'))
    assert len(piece.instruments[0].notes) == 8
  with open(os.path.join(out, report_lib.REPORT_FILE)) as f:
    report = f.read()
  # A pipe in a predictor's name is escaped, or it would end its table cell.
  combined = f"{results['best_ngram']} + {results['best_timing']}".replace('|', '\\|')
  assert f'| **{combined}** |' in report
  assert '| step NLL | duration NLL | note NLL |' in report
  # The pitch NLL's condition is stated: the model's note order, read from its export.
  assert results['note_order'] == 'step_pitch_duration'
  assert "in the order `step_pitch_duration`" in report
  # Every rhythm feature is in the table, marked, and the weakest one's OA is reported.
  for feature in music_stats.RHYTHM_FEATURES:
    assert f'| {feature} (rhythm) |' in report
  assert statistics['min_rhythm_oa']['model'] == pytest.approx(
      min(statistics['features'][f]['model']['oa'] for f in music_stats.RHYTHM_FEATURES))
  # The measures a listener hears, for the same three sets, and the model's targets.
  heard = results['listening']
  assert heard['pieces'] == statistics['pieces']
  for name in ('real', 'model', 'n-gram'):
    for measure in ('on_grid_share', 'key_stability', 'notes_per_onset', 'pitch_span'):
      values = heard['sets'][name][measure]
      assert len(values['values']) == heard['pieces']
      assert values['median'] == pytest.approx(np.median(values['values'])), (name, measure)
    assert 0.0 <= heard['sets'][name]['on_grid_share']['median'] <= 1.0
  real_grid = heard['sets']['real']['on_grid_share']['median']
  if real_grid > 0:
    assert heard['on_grid_ratio']['model'] == pytest.approx(
        heard['sets']['model']['on_grid_share']['median'] / real_grid)
  for name in ('model', 'n-gram', 'real halves'):
    test = heard['two_sample'][name]
    assert 'skipped' in test or 0.0 <= test['accuracy'] <= 1.0, name
  assert heard['two_sample']['model']['pieces'] == [heard['pieces']] * 2
  assert heard['music_stats_oa']['scale_consistency']['model'] == (
      statistics['features']['scale_consistency']['model']['oa'])
  assert sorted(heard['model_meets_targets']) == [
      'on_grid_ratio', 'pitch_class_entropy_oa', 'scale_consistency_oa', 'two_sample_accuracy']
  assert '## Measures a listener hears' in report
  assert '| two-sample accuracy against real (held out) |' in report


def test_command_defaults_beside_the_export_and_refuses_bad_input(tiny_model, tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_info:
    evaluate.main(['--data', tiny_model.data_dir, '--model', str(tmp_path)])
  assert exit_info.value.code == 2
  with pytest.raises(SystemExit):
    evaluate.main(['--data', tiny_model.data_dir, '--model', tiny_model.export_dir,
                   '--num-notes', str(tiny_model.info['stride'] + 1)])
  # The model set's Sampling is checked as serving checks it, before the export is loaded.
  with pytest.raises(SystemExit) as exit_info:
    evaluate.main(['--data', tiny_model.data_dir, '--model', str(tmp_path), '--temperature', '0'])
  assert exit_info.value.code == 2
  assert 'temperature must be > 0, got 0.0' in capsys.readouterr().err
  with pytest.raises(SystemExit) as exit_info:
    evaluate.main(['--data', tiny_model.data_dir, '--model', str(tmp_path),
                   '--label-guidance', '-1'])
  assert exit_info.value.code == 2
  assert 'label_guidance must be in 0..10, got -1.0' in capsys.readouterr().err
  # A copy of the export, so that the report beside it is not written into the shared model.
  export = shutil.copytree(tiny_model.export_dir, tmp_path / 'model' / 'export')
  assert evaluate.main(['--data', tiny_model.data_dir, '--model', str(export),
                        '--num-pieces', '3']) == 0
  assert os.path.exists(tmp_path / 'model' / 'report' / report_lib.REPORT_FILE)


def test_sampled_ngram_pieces_take_timing_from_training_targets():
  chunks = [{'pitch': np.array([60, 62, 64, 65]), 'step': np.array([9.0, 9.0, 0.5, 0.5]),
             'duration': np.array([9.0, 9.0, 1.0, 1.0]), 'velocity': np.full(4, 64.0)}]
  model = baselines.NGram.fit([c['pitch'] for c in chunks], 2, first_target=2)
  primes = {name: values[None, :2] for name, values in chunks[0].items()}
  pieces = evaluate.ngram_pieces(model, primes, 6, chunks, window_length=2, seed=0)
  assert len(pieces) == 1 and len(pieces[0]['pitch']) == 6
  np.testing.assert_array_equal(pieces[0]['step'], 0.5)
  np.testing.assert_array_equal(pieces[0]['duration'], 1.0)
