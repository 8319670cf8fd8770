"""Piece labels: where a piece's label comes from, and the vocabulary of ids its models share.

A label is a composer, or any other categorical label a user names; the vocabulary of label ids
is shared by a dataset and its models.

Preprocessing gives every piece one label *name*, from the first of these sources that knows
one (:class:`LabelSources`): a metadata CSV that maps paths to labels, the ``composers`` (or
another) field of a NoteSequence input, a regular expression over the file name, and the first
folder below the input folder. Names are lower-cased with runs of spaces as ``_``; a piece no
source knows, or whose name is one of ``unknown_names``, is :data:`UNKNOWN`.

Once every piece is counted, :func:`vocabulary` gives the ids (info.json's ``labels``): id 0 is
:data:`UNKNOWN`, which is also the *unconditional* id (the trainer replaces a share of the true
labels by it, so a model asked for no label in particular writes what the whole corpus would),
id 1 is :data:`OTHER`, shared by the labels with fewer than ``min_pieces`` training pieces, and
ids 2.. are the other labels in alphabetical order. The chunks on disk hold the names, not the
ids, because the ids are only known once the whole corpus has been seen.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import re

UNKNOWN = 'unknown'
OTHER = 'other'
UNCONDITIONAL_ID = 0  # the id of UNKNOWN
OTHER_ID = 1
DEFAULT_UNKNOWN_NAMES = (UNKNOWN, 'unknown_artist', 'anonymous', 'anon')
# Columns an --label-csv may name its paths by, tried in this order when none is given.
CSV_PATH_COLUMNS = ('path', 'midi', 'midi_filename', 'file', 'filename')


def normalize(value: str) -> str:
  """A label as stored: lower case, trimmed, runs of whitespace as ``_``.

  For example 'Carl  Czerny' -> 'carl_czerny'.
  """
  return re.sub(r'\s+', '_', value.strip().lower())


def read_csv(text: str, csv_path: str, label_column: str, path_column: str = '') -> dict[str, str]:
  """A metadata CSV -> {normalised path: label name}.

  Relative paths in the CSV are relative to its own folder (as piano-midi's ``metadata.csv``
  writes them). ``path_column`` '' takes the first of :data:`CSV_PATH_COLUMNS` present.

  Raises:
    ValueError: a column is missing (the message names the columns the CSV has).
  """
  reader = csv.DictReader(io.StringIO(text))
  columns = reader.fieldnames or []
  if not path_column:
    path_column = next((c for c in CSV_PATH_COLUMNS if c in columns), '')
  for wanted, role in ((path_column, 'path'), (label_column, 'label')):
    if not wanted or wanted not in columns:
      raise ValueError(f'{csv_path}: no {role} column {wanted!r}; its columns are {columns}')
  folder = os.path.dirname(csv_path)
  labels = {}
  for row in reader:
    path = row[path_column].strip()
    if path and (row[label_column] or '').strip():
      full = path if '://' in path or os.path.isabs(path) else os.path.join(folder, path)
      labels[normalize_path(full)] = normalize(row[label_column])
  return labels


def normalize_path(path: str) -> str:
  """A path as CSV entries and inputs are matched on (``a/./b`` and ``a//b`` are ``a/b``)."""
  if '://' in path:
    scheme, _, rest = path.partition('://')
    return f'{scheme}://{os.path.normpath(rest)}'
  return os.path.normpath(os.path.abspath(path))


@dataclasses.dataclass(frozen=True)
class LabelSources:
  """How one run finds the label of an input from its name.

  The NoteSequence field, which needs the parsed proto, is read by
  :func:`partita.notes.note_sequence_label`.
  """
  csv_labels: dict[str, str] = dataclasses.field(default_factory=dict)
  name_regex: str = ''  # over the file name; the group 'label' (or the first group) is the label
  folder_roots: tuple[str, ...] = ()  # input folders whose first subfolder names the label
  unknown_names: tuple[str, ...] = DEFAULT_UNKNOWN_NAMES

  def known(self, value: str | None) -> str | None:
    """``value`` normalised, or None when it is empty or means unknown."""
    if not value:
      return None
    value = normalize(value)
    return None if not value or value in self.unknown_names else value

  def from_name(self, name: str) -> str | None:
    """The label the CSV, the file-name pattern or the folder give the input ``name``.

    They take precedence in that order; None when none knows it.
    """
    if self.csv_labels:
      label = self.known(self.csv_labels.get(normalize_path(name)))
      if label:
        return label
    if self.name_regex:
      match = re.search(self.name_regex, os.path.basename(name))
      if match:
        label = self.known(match.groupdict().get('label') or (match.groups() or [None])[0])
        if label:
          return label
    for root in self.folder_roots:
      relative = relative_to(name, root)
      if relative and '/' in relative:
        label = self.known(relative.split('/')[0])
        if label:
          return label
    return None


def relative_to(path: str, root: str) -> str | None:
  """``path`` relative to the folder ``root`` ('/' separated), None if it is not below it."""
  path, root = normalize_path(path), normalize_path(root).rstrip('/')
  return path[len(root) + 1:] if path.startswith(root + '/') else None


def vocabulary(pieces: dict[str, dict[str, int]], min_pieces: int, label_name: str) -> dict:
  """info.json's ``labels`` from the pieces written per label name and split.

  Args:
    pieces: {label name: {split: pieces}}, :data:`UNKNOWN` included.
    min_pieces: training pieces a label needs for an id of its own; the rest share
      :data:`OTHER_ID`.
    label_name: what the labels are ('composer').
  """
  own = sorted(name for name, counts in pieces.items()
               if name not in (UNKNOWN, OTHER) and counts.get('train', 0) >= min_pieces)
  names = [UNKNOWN, OTHER, *own]
  ids = {name: (names.index(name) if name in own else OTHER_ID) for name in sorted(pieces)}
  ids[UNKNOWN] = UNCONDITIONAL_ID
  return {'name': label_name, 'min_pieces': min_pieces, 'vocabulary': names, 'ids': ids,
          'pieces': {name: dict(sorted(counts.items())) for name, counts in sorted(pieces.items())}}


def pieces_per_id(labels: dict, split: str) -> dict[int, int]:
  """Pieces of ``split`` per label id in info.json's ``labels``.

  The rare names are counted under :data:`OTHER_ID`.
  """
  pieces: dict[int, int] = {}
  for name, counts in labels['pieces'].items():
    label_id = labels['ids'][name]
    pieces[label_id] = pieces.get(label_id, 0) + counts.get(split, 0)
  return pieces


def requested_id(labels: dict, name: str) -> int:
  """The id to generate the label ``name`` with: one of ``labels['vocabulary']``.

  ``labels`` is info.json's ``labels``.

  Raises:
    KeyError: the model has no id of that name; the message lists the names it has, and says
      so when ``name`` is a label too rare to have its own id.
  """
  name = normalize(name)
  if name in labels['vocabulary']:
    return labels['vocabulary'].index(name)
  known = ', '.join(labels['vocabulary'])
  if name in labels['ids']:
    train = labels['pieces'][name].get('train', 0)
    raise KeyError(f"{labels['name']} {name!r} had {train} training piece(s), fewer than "
                   f"{labels['min_pieces']}, so it shares the id of {OTHER!r}; known: {known}")
  raise KeyError(f"no {labels['name']} {name!r}; known: {known}")
