"""An interrupted preprocessing run leaves nothing that looks complete, and a rerun finishes.

(Interrupted training and export: tests/test_trainer_distributed.py; generated files are written
under temporary names and renamed: tests/test_midi_io.py.)
"""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys

from midi_builders import random_melody, write_midi
import pytest

from partita import contract, originality
from partita import dataset as dataset_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Runs the preprocessing command, killing its whole process group (the job and its parser
# processes) at the moment the first split's shards are all written under their temporary names
# and none is renamed yet: the interruption always lands mid-write, however fast the machine.
KILLED_WHILE_WRITING_SHARDS = """
import os, signal, sys
from apache_beam.io import filebasedsink
from beam_pipelines import preprocess

def killed(*args, **kwargs):
  os.killpg(0, signal.SIGKILL)

filebasedsink.FileBasedSink.finalize_write = killed
preprocess.main(sys.argv[1:])
"""


def preprocess_args(corpus: str, output: str) -> list[str]:
  return ['--input', corpus, '--output', output, '--window-length', '16']


def test_killed_preprocessing_leaves_no_completed_dataset_and_a_rerun_completes(tmp_path):
  corpus = tmp_path / 'corpus'
  for seed in range(30):
    write_midi(corpus / f'{seed}.mid', random_melody(seed, 400))
  output = str(tmp_path / 'data')
  command = [sys.executable, '-m', 'beam_pipelines.preprocess'] + preprocess_args(
      str(corpus), output)
  # Where the runs keep their parsed pieces (partita.kept_pieces).
  temp = tmp_path / 'temp'
  temp.mkdir()
  environment = dict(os.environ, TMPDIR=str(temp))
  # A previous complete run, so the killed run must also take the old marker away.
  subprocess.run(command, cwd=ROOT, check=True, capture_output=True, env=environment)
  assert os.path.exists(os.path.join(output, contract.COMPLETED_MARKER))
  assert os.listdir(temp) == []

  job = subprocess.run([sys.executable, '-c', KILLED_WHILE_WRITING_SHARDS] + preprocess_args(
      str(corpus), output), cwd=ROOT, capture_output=True, start_new_session=True, check=False,
      env=environment)
  assert job.returncode == -signal.SIGKILL, job.stderr.decode()
  # A killed run cannot remove its folder of kept pieces: it stays, as its other temporary files
  # (Beam's own) do.
  def kept_folders():
    return [name for name in os.listdir(temp) if name.startswith('partita-parsed-')]
  left = kept_folders()
  assert len(left) == 1
  assert glob.glob(os.path.join(output, '*', 'beam-temp-*', '*'))  # killed mid-write
  assert not os.path.exists(os.path.join(output, contract.COMPLETED_MARKER))
  with pytest.raises(FileNotFoundError, match='no COMPLETED marker'):
    dataset_lib.load_info(output)

  subprocess.run(command, cwd=ROOT, check=True, capture_output=True, env=environment)
  assert kept_folders() == left
  info = dataset_lib.load_info(output)
  assert info['counts']['files_in'] == 30 and info['counts']['pieces_written'] == 30
  assert not glob.glob(os.path.join(output, '**', 'beam-temp-*'), recursive=True)


def test_an_export_interrupted_at_any_step_leaves_no_half_written_export(tmp_path, monkeypatch):
  import numpy as np

  from trainer import config as config_lib
  from trainer import export as export_lib
  from trainer import model as model_lib

  config = config_lib.load(os.path.join(ROOT, 'configs', 'tiny.yaml'))
  timing = {'step': {'mean': 0.2, 'std': 0.1}, 'duration': {'mean': 0.4, 'std': 0.3}}
  model = model_lib.build_model(config.model, 8, timing, num_labels=2)
  primes = {'pitch': np.full((2, 8), 60), 'step': np.full((2, 8), 0.25),
            'duration': np.full((2, 8), 0.5), 'velocity': np.full((2, 8), 80)}
  export_dir = str(tmp_path / 'model' / 'export')

  def export():
    export_lib.export_model(model, export_dir, 8, config.to_yaml(), {'timing': timing}, primes,
                            originality.build_table(primes['pitch']))

  export()
  assert os.path.exists(os.path.join(export_dir, 'saved_model.pb'))
  # Interrupt the next export while it writes its files, then as it puts them in place.
  for target in ('builtins.open', 'os.rename'):
    with monkeypatch.context() as patch:
      def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
      patch.setattr(target, interrupted)
      with pytest.raises(KeyboardInterrupt):
        export()
    # Either the previous export, whole, or none at all; never a partial one or a leftover.
    assert (not os.path.exists(export_dir)
            or set(os.listdir(export_dir)) >= {'saved_model.pb', 'variables', 'assets'})
    assert os.listdir(tmp_path / 'model') in ([], ['export'])
    export()
    assert os.path.exists(os.path.join(export_dir, 'assets', 'config.yaml'))
