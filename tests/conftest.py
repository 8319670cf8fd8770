"""The test session's setup: TensorFlow quiet and Hypothesis's fuzzing profiles."""

import os

# Keep TensorFlow quiet: set before any test module imports it.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from hypothesis import HealthCheck, settings  # noqa: E402 (after the environment)
import pytest  # noqa: E402

# Fuzzing budgets (tests/test_fuzz.py): 'ci' is short and the same on every run; choose 'long'
# with `--hypothesis-profile=long` to search for hours.
settings.register_profile('ci', max_examples=300, derandomize=True, deadline=None,
                          database=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile('long', max_examples=1_000_000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile('ci')

# The files that take longest, longest first. pytest-xdist gives each worker a file at a time in
# collection order (pytest.ini: --dist loadfile --no-loadscope-reorder): starting these first
# lets the short files fill in around them, rather than one long file running alone at the end.
LONGEST_FILES = ('test_serving.py', 'test_trainer_distributed.py', 'test_candidates.py',
                 'test_model.py', 'test_evaluate.py', 'test_listening_pages.py',
                 'test_train_export_generate.py')


def pytest_collection_modifyitems(items):
  """Puts the tests of :data:`LONGEST_FILES` first; each file's tests keep their order."""
  def rank(item):
    name = item.path.name
    return LONGEST_FILES.index(name) if name in LONGEST_FILES else len(LONGEST_FILES)
  items.sort(key=rank)


def file_stamps(root):
  """Every file under ``root``: its path -> (size, modification time)."""
  stamps = {}
  for folder, _, names in os.walk(root):
    for name in names:
      path = os.path.join(folder, name)
      stat = os.stat(path)
      stamps[path] = (stat.st_size, stat.st_mtime_ns)
  return stamps


@pytest.fixture(scope='session')
def tiny_model(tmp_path_factory):
  """The tiny preset (configs/tiny.yaml: 4 steps) trained once per session, shared read-only.

  Its dataset is ``trainer_fixtures.make_dataset``'s: 12 random melodies by the composers
  ``trainer_fixtures.LABELS`` in turn, preprocessed with window 8 and stride 16 into train,
  validation and test splits, every composer with a training piece and so a label id of its own.
  Returns a ``trainer_fixtures.TrainedModel``.

  Every test that takes it reads the same folders: a test writes only under its own tmp_path
  (copying the export there to change it, or to write beside it), and the session ends with an
  error if a file under the dataset or the model folder was added, removed or changed.
  """
  import trainer_fixtures  # noqa: PLC0415 (TensorFlow and Beam only in sessions that train)

  root = str(tmp_path_factory.mktemp('tiny_model'))
  trained = trainer_fixtures.train_tiny_model(root)
  assert all(trained.info['splits'][split]['pieces'] for split in ('train', 'validation', 'test'))
  assert trained.info['labels']['vocabulary'] == ['unknown', 'other', *trainer_fixtures.LABELS]
  before = file_stamps(root)
  yield trained
  after = file_stamps(root)
  changed = sorted(path for path in before.keys() | after.keys()
                   if before.get(path) != after.get(path))
  assert not changed, f'tests wrote into the shared tiny model: {changed}'
