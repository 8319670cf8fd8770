"""One config mechanism for every stage: a typed tree of dataclasses, presets, overrides and flags.

YAML presets hold only their differences from the defaults; ``--set key=value`` overrides
them; command-line flags are declared on the fields themselves.

A stage's config is a (frozen or not) dataclass whose fields are leaves (``int``, ``float``,
``str``, ``bool``, a ``typing.Literal`` of allowed values, or a tuple of those) or nested
dataclasses (sections). ``load`` resolves defaults, then a preset file, then flags, then each
``--set`` in order, checking every name and type; ``to_yaml`` writes the resolved tree, which
each stage saves beside what it produced. A field declared with ``option(...)`` also gets a
command-line flag of its own from ``add_flags``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
import dataclasses
import typing

import yaml


def option(default: typing.Any, help: str, *, flag: str | None = None,
           parse: Callable[[str], typing.Any] | None = None, repeat: bool = False,
           sets: typing.Any = None, metavar: str | None = None,
           group: str | None = None) -> typing.Any:
  """A config field with a command-line flag.

  Args:
    default: the field's default.
    help: the flag's help text.
    flag: the flag's name; default ``--field-name``.
    parse: turns the flag's text into the field's value (default: the field's type).
    repeat: the flag may be given several times; the values form a tuple.
    sets: the flag takes no value and sets the field to this (e.g. ``--no-sustain`` sets
      ``apply_sustain`` to False).
    metavar: the value's name in ``--help``; default the field's name in capitals.
    group: the ``--help`` section the flag is listed under; default the parser's own.
  """
  metadata = {'help': help, 'flag': flag, 'parse': parse, 'repeat': repeat, 'sets': sets,
              'metavar': metavar, 'group': group}
  return dataclasses.field(default=default, metadata=metadata)


def add_flags(parser: argparse.ArgumentParser, cls: type, prefix: str = '') -> None:
  """Adds a flag for every ``option`` field of ``cls`` and its sections.

  Each flag's help ends with the default. Flags that are not given leave no attribute on the
  parsed namespace, so only what the user typed overrides.
  """
  hints = typing.get_type_hints(cls)
  groups = {}
  for field in dataclasses.fields(cls):
    key = f'{prefix}{field.name}'
    if dataclasses.is_dataclass(hints[field.name]):
      add_flags(parser, hints[field.name], f'{key}.')
      continue
    if 'help' not in field.metadata:
      continue
    meta = field.metadata
    name = meta['flag'] or '--' + field.name.replace('_', '-')
    kwargs = {'dest': _FLAG_DEST + key, 'default': argparse.SUPPRESS, 'help': meta['help']}
    if meta['sets'] is not None:
      kwargs.update(action='store_const', const=meta['sets'])
    else:
      kwargs.update(type=meta['parse'] or _scalar_type(hints[field.name]),
                    metavar=meta['metavar'] or field.name.upper())
      if meta['repeat']:
        kwargs['action'] = 'append'
      if field.default not in ((), ''):
        kwargs['help'] += f' (default: {_shown(field.default)})'
    if meta['group'] and meta['group'] not in groups:
      groups[meta['group']] = parser.add_argument_group(meta['group'])
    groups.get(meta['group'], parser).add_argument(name, **kwargs)


def _shown(default) -> str:
  """A default as a user would type it on the command line."""
  if isinstance(default, tuple):
    return ','.join('='.join(map(str, item)) if isinstance(item, tuple) else str(item)
                    for item in default)
  return str(default)


def flag_updates(args: argparse.Namespace) -> dict:
  """The ``option`` flags given on the command line, as a nested dict for ``load``."""
  updates = {}
  for dest, value in vars(args).items():
    if not dest.startswith(_FLAG_DEST):
      continue
    node = updates
    *sections, leaf = dest[len(_FLAG_DEST):].split('.')
    for section in sections:
      node = node.setdefault(section, {})
    node[leaf] = value
  return updates


# Marks the namespace attributes that ``add_flags`` made, apart from a command's other flags.
_FLAG_DEST = 'config:'


def load(cls: type, preset_path: str | None = None, overrides: Sequence[str] = (),
         updates: dict | None = None) -> typing.Any:
  """Defaults of ``cls``, then the preset file, then ``updates``, then each ``KEY=VALUE`` override.

  The preset file applies if any; ``updates`` come e.g. from ``flag_updates``; the overrides
  apply in order. Raises ValueError naming the offending key.
  """
  values = {}
  if preset_path:
    with open(preset_path) as f:
      _merge(values, yaml.safe_load(f) or {})
  _merge(values, updates or {})
  for override in overrides:
    _merge(values, parse_override(override))
  return build(cls, values)


def build(cls: type, values: dict, where: str = '') -> typing.Any:
  """An instance of ``cls`` from a nested dict of the fields that differ from its defaults."""
  if not isinstance(values, dict):
    raise ValueError(f'config key {where.rstrip(".") or "(root)"} is a section; give its fields')
  fields = {field.name: field for field in dataclasses.fields(cls)}
  hints = typing.get_type_hints(cls)
  unknown = sorted(set(values) - set(fields))
  if unknown:
    raise ValueError(f'unknown config key {where}{unknown[0]}; known: {sorted(fields)}')
  kwargs = {}
  for name, value in values.items():
    kind = hints[name]
    if dataclasses.is_dataclass(kind):
      kwargs[name] = build(kind, value, f'{where}{name}.')
    else:
      kwargs[name] = _checked(value, kind, f'{where}{name}')
  return cls(**kwargs)


def to_dict(config: typing.Any) -> dict:
  """The resolved tree as plain data (tuples as lists), as YAML and JSON write it."""
  return yaml.safe_load(to_yaml(config))


def to_yaml(config: typing.Any) -> str:
  """A config as YAML: every field, in declaration order."""
  return yaml_dump(dataclasses.asdict(config))


def yaml_dump(values: dict) -> str:
  """Plain data as YAML, in the dict's order, tuples as lists.

  This is how every stage saves what it resolved.
  """
  return yaml.safe_dump(_plain(values), sort_keys=False)


def from_yaml(cls: type, text: str) -> typing.Any:
  """The ``cls`` config that YAML text describes: :func:`to_yaml`'s, or only what differs."""
  return build(cls, yaml.safe_load(text) or {})


def parse_override(text: str) -> dict:
  """``'model.lstm_units=64'`` -> ``{'model': {'lstm_units': 64}}`` (value parsed as YAML)."""
  key, sep, value = text.partition('=')
  if not sep or not key:
    raise ValueError(f'--set expects KEY=VALUE, got {text!r}')
  update = yaml.safe_load(value) if value else ''
  for part in reversed(key.split('.')):
    update = {part: update}
  return update


def _merge(into: dict, updates: dict) -> None:
  for key, value in updates.items():
    if isinstance(value, dict) and isinstance(into.get(key), dict):
      _merge(into[key], value)
    else:
      into[key] = value


def _plain(value):
  if isinstance(value, dict):
    return {key: _plain(item) for key, item in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain(item) for item in value]
  return value


def _scalar_type(kind) -> Callable[[str], typing.Any]:
  """The argparse ``type`` for a leaf: its class, or ``str`` for a Literal (checked later)."""
  if typing.get_origin(kind) is typing.Literal:
    return str
  return kind if kind in (int, float, str) else str


def _checked(value, kind, key: str):
  """``value`` as a ``kind`` leaf; ValueError if it is not one."""
  origin = typing.get_origin(kind)
  if origin is typing.Literal:
    if value not in typing.get_args(kind):
      raise ValueError(f'config key {key} must be one of '
                       f'{", ".join(map(str, typing.get_args(kind)))}; '
                       f'got {value!r}')
    return value
  if origin is tuple:
    if not isinstance(value, (list, tuple)):
      raise ValueError(f'config key {key} must be a list, got {value!r}')
    item_types = typing.get_args(kind)
    if len(item_types) == 2 and item_types[1] is Ellipsis:
      return tuple(_checked(item, item_types[0], key) for item in value)
    if len(item_types) != len(value):
      raise ValueError(f'config key {key} must have {len(item_types)} items, got {value!r}')
    return tuple(_checked(item, item_type, key) for item, item_type in zip(value, item_types))
  if kind is float and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
    raise ValueError(f'config key {key} must be {kind.__name__}, got {value!r}')
  return value
