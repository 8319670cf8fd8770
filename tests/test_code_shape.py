"""The code's shape, checked: linter, package layers, function length, frameworks per stage.

The linter passes, top-level packages depend on each other in one direction only, functions
stay short, and each stage imports only the frameworks it runs on.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ('partita', 'beam_pipelines', 'trainer', 'serving', 'evaluation')
# Who may import whom. partita is the shared base; trainer and serving never import each other
# (what they share, the data and export contracts, lives in partita); serving's Beam job uses
# the Beam jobs' shared transforms in beam_pipelines; evaluation sits on top.
ALLOWED = {
    'partita': set(),
    'beam_pipelines': {'partita'},
    'trainer': {'partita'},
    'serving': {'partita', 'beam_pipelines'},
    'evaluation': {'partita', 'trainer', 'serving'},
}
MAX_FUNCTION_LINES = 60


def modules(package: str) -> list[pathlib.Path]:
  return sorted((REPO / package).glob('**/*.py'))


def imported_packages(path: pathlib.Path) -> set[str]:
  """Top-level project packages that ``path`` imports anywhere, deferred imports included."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0:
      names = [node.module]
    else:
      continue
    found |= {name.split('.')[0] for name in names} & set(PACKAGES)
  return found


def test_the_linter_passes():
  result = subprocess.run([sys.executable, '-m', 'ruff', 'check', '--no-cache', str(REPO)],
                          capture_output=True, text=True, cwd=REPO, check=False)
  assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize('package', PACKAGES)
def test_packages_import_only_the_layers_below_them(package):
  for path in modules(package):
    imported = imported_packages(path) - {package}
    assert imported <= ALLOWED[package], (
        f'{path.relative_to(REPO)} imports {sorted(imported - ALLOWED[package])}')


def test_no_function_outside_tests_and_benchmarks_is_longer_than_60_lines():
  long = []
  for package in PACKAGES:
    for path in modules(package):
      for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
          lines = node.end_lineno - node.lineno + 1
          if lines > MAX_FUNCTION_LINES:
            long.append(f'{path.relative_to(REPO)}:{node.lineno} {node.name} ({lines} lines)')
  assert not long


@pytest.mark.parametrize('module, absent', [
    ('beam_pipelines.preprocess', 'tensorflow'),  # workers parse and encode without TF
    ('trainer.task', 'apache_beam'),  # training needs no Beam on the path
    ('serving.generate', 'apache_beam'),
    ('evaluation.evaluate', 'apache_beam'),
])
def test_each_stage_loads_only_its_own_frameworks(module, absent):
  script = (f'import sys, {module}; '
            f'sys.exit(1 if {absent!r} in sys.modules else 0)')
  result = subprocess.run([sys.executable, '-c', script], cwd=REPO, capture_output=True,
                          text=True, check=False)
  assert result.returncode == 0, f'importing {module} loads {absent}\n{result.stderr[-2000:]}'


def test_setup_installs_every_top_level_package():
  """``pip install .`` must bring every package.

  So that each stage's ``python -m`` command runs outside the repository too (the evaluation
  package once was missing).
  """
  setup = ast.parse((REPO / 'setup.py').read_text())
  include = next(node for node in ast.walk(setup)
                 if isinstance(node, ast.keyword) and node.arg == 'include')
  assert sorted(ast.literal_eval(include.value)) == sorted(PACKAGES)
