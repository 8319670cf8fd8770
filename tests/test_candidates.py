"""Generation that chooses: the critic, N candidates per piece and the originality guard.

On the session's tiny model (``tests/conftest.py::tiny_model``), copied into each test's own
folder, since fitting a critic or replacing the guard's table writes into the export's assets.
"""

import json
import os
import shutil

import numpy as np
import pytest
import trainer_fixtures

from evaluation import critic as critic_fit
from partita import dataset as dataset_lib
from partita import export_contract, failures, originality
from serving import beam_generate, choosing, critic, export_client, generation_request
from serving import generate as generate_lib
from serving import primes as primes_lib
from serving import sampling as sampling_lib

NOTES = 40  # longer than the copy limit (32), so that a whole continuation can copy


@pytest.fixture(scope='module')
def fitted(tiny_model, tmp_path_factory):
  """The tiny export with a critic fitted on its dataset: (export dir, Critic)."""
  export_dir = str(tmp_path_factory.mktemp('critic') / 'export')
  shutil.copytree(tiny_model.export_dir, export_dir)
  fitted_critic = critic_fit.fit(export_client.load_export(export_dir), tiny_model.data_dir,
                                 pieces=8, num_notes=8)
  critic_fit.save(fitted_critic, export_dir)
  return export_dir, fitted_critic


def run(export_dir, out, num_samples=3, no_prime=False, **fields):
  request = generation_request.from_fields({'num_notes': NOTES, **fields},
                                           generation_request.Request())
  return generate_lib.run(export_dir, str(out), request, generate_lib.Options(
      num_samples=num_samples, no_prime=no_prime, audio=False))


def test_the_critic_is_saved_in_the_export_and_read_back(fitted, tiny_model):
  export_dir, fitted_critic = fitted
  loaded = export_client.load_export(export_dir)
  assert loaded.critic == fitted_critic
  assert loaded.training_runs.run_length == trainer_fixtures.WINDOW + 1  # the window caps it
  assert set(fitted_critic.style_labels) <= {'other', *trainer_fixtures.LABELS}
  assert fitted_critic.fit['pieces_per_split'] >= 2
  assert fitted_critic.fit['temperature'] == critic.DEFAULT_TEMPERATURE == 1.0
  assert all(0.0 <= accuracy <= 1.0
             for accuracy in fitted_critic.fit['validation_accuracy_held_out'].values())
  weights = fitted_critic.fit['weights_per_unit']
  assert list(weights['labelled']) == list(critic.FEATURES)
  assert list(weights['unlabelled']) == list(critic.UNLABELLED_FEATURES)
  assert export_client.load_export(tiny_model.export_dir).critic is None  # the original's


def test_the_critic_reads_each_candidate_s_scale_consistency(fitted):
  _, fitted_critic = fitted
  pieces = [{'pitch': np.array(pitch), 'step': np.full(len(pitch), 0.25),
             'duration': np.full(len(pitch), 0.25)}
            for pitch in ([60, 62, 64, 65, 67, 69, 71, 61], list(range(60, 72)))]
  features = fitted_critic.features(pieces, [None, None], np.zeros(2))
  np.testing.assert_array_equal(features[:, critic.FEATURES.index('scale_consistency')],
                                [7 / 8, 7 / 12])


def test_a_critic_fitted_by_an_older_version_is_refused_with_the_fix(fitted, tmp_path):
  export_dir = str(tmp_path / 'export')
  shutil.copytree(fitted[0], export_dir)
  older = json.loads(fitted[1].to_json())
  for combination in ('labelled', 'unlabelled'):  # without scale_consistency, the last feature
    line = older[combination]
    line['mean'], line['scale'] = line['mean'][:-1], line['scale'][:-1]
    line['weights'] = [row[:-1] for row in line['weights']]
  with open(os.path.join(export_dir, 'assets', export_contract.ASSET_CRITIC), 'w') as f:
    json.dump(older, f)
  with pytest.raises(failures.RejectionError) as caught:
    run(export_dir, tmp_path / 'out', candidates=2)
  assert caught.value.reason == 'bad_request'
  assert str(caught.value) == (
      "the export's critic.json was fitted by an older version: it combines 5 features, and "
      'this version scores 6 (real_log_odds, label_log_prob, pitch_log_likelihood, '
      'on_grid_share, key_stability, scale_consistency); fit it again with `python -m '
      'evaluation.critic --data DATA_DIR --model EXPORT_DIR`, or ask for 1 candidate')
  assert not (tmp_path / 'out').exists()
  assert len(run(export_dir, tmp_path / 'one', num_samples=1, candidates=1)) == 1


def test_the_critic_learns_from_continuations_at_its_temperature(tiny_model):
  export = export_client.load_export(tiny_model.export_dir)
  info = dataset_lib.load_info(tiny_model.data_dir)
  primes, _, label_ids = critic_fit.split_pieces(tiny_model.data_dir, info, 'train', 3, 8)
  cooler = critic_fit.model_continuations(export, primes, label_ids, 8, 5, 0.5)
  plain = critic_fit.model_continuations(export, primes, label_ids, 8, 5, 1.0)
  generated = export_client.generate(
      export.model, primes, sampling_lib.Sampling(num_notes=8, temperature=0.5, seed=5),
      labels=label_ids)
  for row, piece in enumerate(cooler):
    np.testing.assert_array_equal(piece['pitch'], generated['pitch'][row])
  assert any(not np.array_equal(a['pitch'], b['pitch']) for a, b in zip(cooler, plain))


def test_a_critic_temperature_out_of_range_is_refused_before_fitting(tiny_model, tmp_path,
                                                                     capsys):
  export_dir = str(tmp_path / 'export')
  shutil.copytree(tiny_model.export_dir, export_dir)
  assert critic_fit.main(['--data', tiny_model.data_dir, '--model', export_dir,
                          '--temperature', '0']) == 2
  assert 'temperature must be' in capsys.readouterr().err
  assert export_client.load_export(export_dir).critic is None


def test_linear_models_apply_as_scikit_learn_does():
  from sklearn import linear_model, pipeline, preprocessing  # noqa: PLC0415

  rng = np.random.default_rng(0)
  x = rng.normal(size=(60, 3))
  for y in (rng.integers(0, 2, 60), rng.integers(0, 3, 60)):
    fitted = pipeline.make_pipeline(preprocessing.StandardScaler(),
                                    linear_model.LogisticRegression()).fit(x, y)
    np.testing.assert_allclose(np.exp(critic_fit.linear(fitted).log_probabilities(x)),
                               fitted.predict_proba(x), rtol=1e-9)


def test_candidates_keep_the_critics_best_and_record_every_one(fitted, tmp_path):
  export_dir, _ = fitted
  written = run(export_dir, tmp_path / 'out', candidates=4, seed=10, composer='bach')
  assert len(written) == 3
  summary = json.loads((tmp_path / 'out' / 'summary.json').read_text())
  assert (summary['requests_in'], summary['written'], summary['dead_letters']) == (3, 3, 0)
  page = (tmp_path / 'out' / 'index.html').read_text()
  for sample in range(3):
    piece = summary['pieces'][f'sample_{sample:03d}']
    seeds = [candidate['seed'] for candidate in piece['candidates']]
    assert seeds == [choosing.candidate_seed(10 + sample, c) for c in range(4)]
    assert seeds[0] == 10 + sample and len(set(seeds)) == 4
    scores = [candidate['score'] for candidate in piece['candidates']]
    assert piece['kept'] == int(np.argmax(scores))
    assert f'candidate {piece["kept"]} of 4, critic score {max(scores):+.2f}' in page
  # The same run again: the same choice, byte for byte.
  run(export_dir, tmp_path / 'again', candidates=4, seed=10, composer='bach')
  for name in ('sample_000.mid', 'sample_001.mid', 'sample_002.mid', 'summary.json'):
    assert (tmp_path / 'out' / name).read_bytes() == (tmp_path / 'again' / name).read_bytes()


def test_candidates_at_another_temperature_than_the_critic_s_get_a_note(fitted, tmp_path,
                                                                        capsys):
  export_dir, _ = fitted
  run(export_dir, tmp_path / 'cooler', num_samples=1, candidates=2, temperature=0.8)
  assert ('note: the critic was fitted at temperature 1 and the candidates are drawn at 0.8; it '
          'may choose worse pieces: fit it again with `python -m evaluation.critic ... '
          '--temperature 0.8`') in capsys.readouterr().err
  run(export_dir, tmp_path / 'same', num_samples=1, candidates=2, temperature=1.0)
  run(export_dir, tmp_path / 'one', num_samples=1, candidates=1, temperature=0.8)
  assert 'critic' not in capsys.readouterr().err


def test_one_candidate_is_the_piece_without_choosing_and_needs_no_critic(tiny_model, tmp_path):
  run(tiny_model.export_dir, tmp_path / 'one', candidates=1, seed=3)
  summary = json.loads((tmp_path / 'one' / 'summary.json').read_text())
  assert summary['pieces']['sample_000'] == {
      'kept': 0, 'candidates': [{'seed': 3, 'score': None, 'rejection': None}]}
  run(tiny_model.export_dir, tmp_path / 'plain', seed=3)  # the default: one candidate
  assert ((tmp_path / 'one' / 'sample_000.mid').read_bytes()
          == (tmp_path / 'plain' / 'sample_000.mid').read_bytes())


def test_candidates_without_a_critic_are_refused_before_writing(tiny_model, tmp_path):
  with pytest.raises(failures.RejectionError, match='python -m evaluation.critic') as caught:
    run(tiny_model.export_dir, tmp_path / 'out', candidates=2)
  assert caught.value.reason == 'bad_request'
  assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('field, value, message', [
    ('candidates', 0, 'candidates must be 1..64'),
    ('candidates', 65, 'candidates must be 1..64'),
    ('copy_limit', -1, 'copy_limit must be >= 0'),
])
def test_out_of_range_choices_are_bad_requests(field, value, message):
  with pytest.raises(failures.RejectionError, match=message):
    generation_request.from_fields({field: value}, generation_request.Request())


def copying_export(tiny_model, tmp_path, seed):
  """A copy of the tiny export whose guard table holds its own continuation of a neutral start.

  With the same seed and no prime, a piece then copies a "training piece" note for note.
  """
  export_dir = str(tmp_path / 'copying')
  shutil.copytree(tiny_model.export_dir, export_dir)
  export = export_client.load_export(export_dir)
  neutral = primes_lib.neutral_window(export.info, export.window_length)
  first = {name: values[np.newaxis] for name, values in neutral.items()}
  sampling = sampling_lib.Sampling(num_notes=NOTES, seed=seed)
  pitches = export_client.generate(export.model, first, sampling)['pitch'][0]
  table = originality.build_table([pitches], limit=export.training_runs.run_length - 1)
  with open(os.path.join(export_dir, 'assets', export_contract.ASSET_TRAINING_RUNS), 'wb') as f:
    f.write(originality.to_bytes(table))
  return export_dir


def test_the_guard_rejects_a_copy_and_dead_letters_its_piece(tiny_model, tmp_path):
  export_dir = copying_export(tiny_model, tmp_path, seed=5)
  written = run(export_dir, tmp_path / 'out', num_samples=2, seed=5, no_prime=True)
  assert [os.path.basename(path) for path in written] == ['sample_001.mid']
  summary = json.loads((tmp_path / 'out' / 'summary.json').read_text())
  assert (summary['written'], summary['dead_letter_reasons']) == (1, {'copies_training': 1})
  rejection = summary['pieces']['sample_000']['candidates'][0]['rejection']
  assert rejection == (f'repeats {NOTES} consecutive pitches of a training piece (transposed or '
                       'not; the limit is 32)')
  dead = [json.loads(line) for line in (tmp_path / 'out' / 'dead_letter'
                                        / 'dead_letters-00000-of-00001.jsonl').read_text().split(
                                            '\n') if line]
  assert dead == [{'input': 'sample_000', 'reason': 'copies_training',
                   'detail': f'every candidate was rejected: candidate 0: {rejection}'}]
  assert not (tmp_path / 'out' / 'sample_000.mid').exists()
  # A limit at the copy's length lets it through; no guard at all too.
  assert len(run(export_dir, tmp_path / 'higher', num_samples=1, seed=5, no_prime=True,
                 copy_limit=NOTES)) == 1
  assert len(run(export_dir, tmp_path / 'off', num_samples=1, seed=5, no_prime=True,
                 copy_limit=0)) == 1
  with pytest.raises(failures.RejectionError, match="at least the export's table limit, 8"):
    run(export_dir, tmp_path / 'low', num_samples=1, copy_limit=4)


def test_the_beam_job_chooses_and_dead_letters_copies(tiny_model, fitted, tmp_path):
  export_dir = copying_export(tiny_model, tmp_path, seed=5)
  shutil.copy(os.path.join(fitted[0], 'assets', export_contract.ASSET_CRITIC),
              os.path.join(export_dir, 'assets', export_contract.ASSET_CRITIC))
  manifest = tmp_path / 'requests.jsonl'
  manifest.write_text('\n'.join(json.dumps(line) for line in [
      {'name': 'chosen', 'prime': None, 'candidates': 3, 'seed': 1},
      {'name': 'copy', 'prime': None, 'seed': 5},
  ]) + '\n')
  out = tmp_path / 'beam'
  assert beam_generate.main(['--model', export_dir, '--out', str(out), '--no-audio',
                             '--manifest', str(manifest), '--num-notes', str(NOTES)]) == 0
  summary = json.loads((out / 'summary.json').read_text())
  assert (summary['requests_in'], summary['written']) == (2, 1)
  assert summary['dead_letter_reasons'] == {'copies_training': 1}
  dead = json.loads((out / 'dead_letter' / 'dead_letters-00000-of-00001.jsonl').read_text())
  assert (dead['input'], dead['reason']) == ('copy', 'copies_training')
  assert f'repeats {NOTES} consecutive pitches' in dead['detail']
  page = (out / 'index.html').read_text()
  assert ' of 3, critic score ' in page and 'chosen.mid' in page
