"""Every command the documentation shows parses with its module's own argument parser.

The code blocks of README.md, BENCHMARKS.md and docs/*.md are read; each ``python -m MODULE ...``
line of a project module (continuation lines joined, comments dropped, shell variables left as
words) is parsed by that module's parser and resolved as the command resolves it (presets and
``--set`` values, a generation request, Beam's pipeline options), so a page that names a flag,
a value or a config key the code does not have fails here.
"""

from __future__ import annotations

import importlib
import pathlib
import re
import shlex

from apache_beam.options import pipeline_options
import pytest

from serving import generation_request
from trainer import config as config_lib

REPO = pathlib.Path(__file__).resolve().parent.parent
PAGES = sorted([REPO / 'README.md', REPO / 'BENCHMARKS.md', *(REPO / 'docs').glob('*.md')])
PROJECT_PACKAGES = ('partita', 'beam_pipelines', 'trainer', 'serving', 'evaluation')
FENCE = re.compile(r'^```[^\n]*\n(.*?)^```', re.MULTILINE | re.DOTALL)


def code_lines(text: str) -> list[str]:
  """The shell lines of a page's code blocks, continuation lines joined."""
  lines = []
  for block in FENCE.findall(text):
    lines += re.sub(r'\\\n\s*', ' ', block).splitlines()
  return lines


def module_commands(line: str) -> list[tuple[str, list[str]]]:
  """``(module, argv)`` of each ``python -m`` command of a project module on a shell line."""
  try:
    words = shlex.split(line, comments=True)
  except ValueError:
    return []  # not shell (Python or JSON in a code block)
  commands = []
  for i, word in enumerate(words[:-2]):
    if re.fullmatch(r'(\S*/)?python3?', word) and words[i + 1] == '-m':
      module = words[i + 2]
      if module.split('.')[0] in PROJECT_PACKAGES:
        rest = words[i + 3:]
        ends = [j for j, w in enumerate(rest) if w in ('&&', '||', ';', '|')]
        commands.append((module, rest[:ends[0]] if ends else rest))
  return commands


def documented_commands() -> list[tuple[str, str, list[str]]]:
  found = []
  for page in PAGES:
    for line in code_lines(page.read_text()):
      for module, argv in module_commands(line):
        found.append((page.relative_to(REPO).as_posix(), module, argv))
  return found


def beam_options(flags: list[str]) -> None:
  """Parses ``flags`` strictly with every pipeline option Beam declares."""
  parsers = []
  pipeline_options.PipelineOptions(flags).get_all_options(add_extra_args_fn=parsers.append)
  parsers[0].parse_args(flags)


def check_preprocess(module, argv):
  _, pipeline_args = module.parse_args(argv)
  beam_options(pipeline_args)


def check_trainer(module, argv):
  args = module.argument_parser().parse_args(argv)
  config_lib.load(args.config and str(REPO / args.config), args.set)


def check_vertex(module, argv):
  args = module.argument_parser().parse_args(argv)
  if args.config:
    args.config = str(REPO / args.config)
  module.job_spec(args)


def check_generate(module, argv):
  generation_request.from_flags(module.argument_parser().parse_args(argv))


def check_beam_generate(module, argv):
  args, pipeline_args = module.argument_parser().parse_known_args(argv)
  generation_request.from_flags(args)
  beam_options(pipeline_args)


def check_parser_only(module, argv):
  module.argument_parser().parse_args(argv)


CHECKS = {
    'beam_pipelines.preprocess': check_preprocess,
    'trainer.task': check_trainer,
    'trainer.vertex': check_vertex,
    'serving.generate': check_generate,
    'serving.beam_generate': check_beam_generate,
    'evaluation.evaluate': check_parser_only,
    'evaluation.critic': check_parser_only,
    'partita.demo_corpus': check_parser_only,
}
COMMANDS = documented_commands()


def test_the_pages_show_a_command_of_every_stage():
  assert {module for _, module, _ in COMMANDS} >= {
      'beam_pipelines.preprocess', 'trainer.task', 'trainer.vertex', 'serving.generate',
      'serving.beam_generate', 'evaluation.evaluate'}


@pytest.mark.parametrize('page, module, argv', COMMANDS,
                         ids=[f'{page}:{module}:{n}' for n, (page, module, _) in
                              enumerate(COMMANDS)])
def test_a_documented_command_parses_with_its_modules_parser(page, module, argv, capsys):
  assert module in CHECKS, f'{page}: no parser check for python -m {module}'
  try:
    CHECKS[module](importlib.import_module(module), argv)
  except SystemExit as e:  # argparse's error exit
    pytest.fail(f'{page}: python -m {module} {shlex.join(argv)}\n{capsys.readouterr().err}'
                f'(exit {e.code})')


@pytest.mark.parametrize('line, expected', [
    ('python -m trainer.task --data d --model-dir m  # a comment',
     [('trainer.task', ['--data', 'd', '--model-dir', 'm'])]),
    ("PYTHONPATH=. .venv/bin/python -m serving.generate --model 'a b' && ls",
     [('serving.generate', ['--model', 'a b'])]),
    ('python -m pytest tests/test_fuzz.py', []),
    ('print(model.generate(pitch=pitch))', []),
])
def test_commands_are_found_on_a_shell_line(line, expected):
  assert module_commands(line) == expected


def test_a_wrong_flag_or_config_key_fails_the_check():
  with pytest.raises(SystemExit):
    check_trainer(importlib.import_module('trainer.task'),
                  ['--data', 'd', '--model-dir', 'm', '--steps', '5'])
  with pytest.raises(ValueError, match='unknown config key'):
    check_trainer(importlib.import_module('trainer.task'),
                  ['--data', 'd', '--model-dir', 'm', '--set', 'train.step=5'])
  with pytest.raises(SystemExit):
    beam_options(['--runner', 'DataflowRunner', '--temp-location', 'gs://b/tmp'])
