"""partita.config_tree: the one config mechanism of every stage."""

from __future__ import annotations

import argparse
import dataclasses
import typing

import pytest

from partita import config_tree


def int_list(text: str) -> tuple[int, ...]:
  return tuple(int(part) for part in text.split(','))


@dataclasses.dataclass(frozen=True)
class Section:
  size: int = config_tree.option(4, 'a size')
  rate: float = 0.5
  mode: typing.Literal['fast', 'exact'] = config_tree.option('fast', 'how')


@dataclasses.dataclass(frozen=True)
class Tree:
  inputs: tuple[str, ...] = config_tree.option((), 'an input', flag='--input', repeat=True)
  programs: tuple[int, ...] = config_tree.option((), 'programs', parse=int_list)
  sustain: bool = config_tree.option(True, 'no pedal', flag='--no-sustain', sets=False)
  ratios: tuple[tuple[str, float], ...] = (('train', 0.8), ('test', 0.2))
  section: Section = dataclasses.field(default_factory=Section)


def parse(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser()
  parser.add_argument('--out')
  config_tree.add_flags(parser, Tree)
  return parser.parse_args(argv)


def test_flags_given_override_defaults_and_others_do_not(tmp_path):
  args = parse(['--input', 'a', '--input', 'b', '--programs', '0,7', '--no-sustain', '--size',
                '9', '--out', 'x'])
  assert config_tree.flag_updates(args) == {
      'inputs': ['a', 'b'], 'programs': (0, 7), 'sustain': False, 'section': {'size': 9}}
  assert config_tree.load(Tree, updates=config_tree.flag_updates(args)) == Tree(
      inputs=('a', 'b'), programs=(0, 7), sustain=False, section=Section(size=9))
  assert config_tree.flag_updates(parse([])) == {}


def test_preset_then_flags_then_overrides_in_order(tmp_path):
  preset = tmp_path / 'preset.yaml'
  preset.write_text('section:\n  size: 2\n  rate: 0.25\nratios: [[train, 1], [test, 1]]\n')
  config = config_tree.load(Tree, str(preset), ['section.size=3'],
                            updates={'section': {'size': 8, 'mode': 'exact'}})
  assert config == Tree(ratios=(('train', 1.0), ('test', 1.0)),
                        section=Section(size=3, rate=0.25, mode='exact'))
  assert config_tree.from_yaml(Tree, config_tree.to_yaml(config)) == config
  assert config_tree.to_dict(config)['ratios'] == [['train', 1.0], ['test', 1.0]]


@pytest.mark.parametrize('override, message', [
    ('section.width=3', r"unknown config key section.width; known: \['mode', 'rate', 'size'\]"),
    ('section.size=big', "config key section.size must be int, got 'big'"),
    ('section.size=true', 'config key section.size must be int, got True'),
    ('section.mode=slow', "config key section.mode must be one of fast, exact; got 'slow'"),
    ('section=3', 'config key section is a section; give its fields'),
    ('programs=7', 'config key programs must be a list, got 7'),
    ('ratios=[[train]]', r"config key ratios must have 2 items, got \['train'\]"),
    ('size', '--set expects KEY=VALUE'),
])
def test_bad_values_are_errors_that_name_the_key(override, message):
  with pytest.raises(ValueError, match=message):
    config_tree.load(Tree, None, [override])
