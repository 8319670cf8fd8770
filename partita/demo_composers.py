"""The composers the main command (``scripts/demo.sh``) generates a piece in the style of.

Those of the model's labels with an id of their own, most training pieces first, at most
:data:`MAX_COMPOSERS`.

Only the labels with an id of their own qualify: the unconditional id (``unknown``) and the id
the rare composers share (``other``) are no one's style. Ties keep the vocabulary's
(alphabetical) order, so the choice depends on the export alone.

Usage::

    python -m partita.demo_composers EXPORT_DIR   # prints the names, separated by spaces
"""

from __future__ import annotations

import argparse
import json
import os

from partita import export_contract
from partita import labels as labels_lib

MAX_COMPOSERS = 4


def composers(labels: dict, limit: int = MAX_COMPOSERS) -> list[str]:
  """The names to generate for, from info.json's ``labels`` (:mod:`partita.labels`)."""
  train = labels_lib.pieces_per_id(labels, 'train')
  own = range(labels_lib.OTHER_ID + 1, len(labels['vocabulary']))
  return [labels['vocabulary'][i] for i in sorted(own, key=lambda i: -train.get(i, 0))[:limit]]


def export_composers(export_dir: str) -> list[str]:
  """:func:`composers` of the export in ``export_dir``, from its ``info.json`` asset."""
  path = os.path.join(export_dir, export_contract.ASSETS_DIR, export_contract.ASSET_INFO)
  with open(path) as f:
    return composers(json.load(f)['labels'])


def main() -> None:
  """Prints the composers of the export given on the command line."""
  parser = argparse.ArgumentParser(
      description='Print the composers scripts/demo.sh generates a piece in the style of: the '
      "export's labels with an id of their own, most training pieces first, at most "
      f'{MAX_COMPOSERS}.')
  parser.add_argument('export', help='export folder (MODEL_DIR/export)')
  print(' '.join(export_composers(parser.parse_args().export)))


if __name__ == '__main__':
  main()
