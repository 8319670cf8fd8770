"""Parsed pieces kept in a local folder, so that a local preprocessing job parses each file once.

The preprocessing job decides its dedup and near-duplicate families on fingerprints and sketches
alone, so that no notes cross its shuffle, and its writing stage needs each survivor's notes
again. On a runner whose processes share one machine (Beam's local runner), the first parse
keeps each piece here and the writing stage loads it, rather than parsing the file a second
time: a parse costs 1.1-2 ms a file here, keeping and loading a piece about 0.15 ms (the
benchmark corpora; docs/experiments.md, "One parse a file, and ISA-L's gzip"). Elsewhere
(Dataflow), or for a piece that could not be kept, the writing stage parses again.

Each process appends its pieces to one file of its own in the folder: creating a file per
piece cost 0.3 ms of the kernel's time here, an append a tenth of that. A piece's place
(``FILE:OFFSET:LENGTH``) travels with its input's name to the writing stage. A kept piece is
its notes dict pickled with the digest of the bytes it was parsed from, and is loaded only for
that digest. It takes about 13 bytes a note on disk (34 KB a file of the benchmark corpora),
for the length of the job. The folder is the job's own, made by ``tempfile.mkdtemp`` (private
to its user), which is why pickle, which must never read untrusted bytes, is fine here.
"""

from __future__ import annotations

import os
import pickle
from typing import BinaryIO

import numpy as np

# (folder, process id) -> the file this process appends its pieces to, opened at its first.
_APPENDING: dict[tuple[str, int], BinaryIO] = {}


def keep(folder: str, digest: bytes, piece: dict[str, np.ndarray]) -> str:
  """Appends ``piece``, parsed from bytes with ``digest``, to this process's file in ``folder``.

  Returns its place for :func:`load`, or '' for a piece that could not be kept (a full disk, a
  folder this process cannot see): the writing stage then parses its file again.
  """
  data = pickle.dumps((digest, piece), protocol=pickle.HIGHEST_PROTOCOL)
  key = (folder, os.getpid())
  try:
    appending = _APPENDING.get(key)
    if appending is None:
      # Unbuffered: each piece is one write, which the other processes can read at once.
      appending = _APPENDING[key] = open(os.path.join(folder, f'{key[1]}.pieces'), 'ab',
                                         buffering=0)
    offset = appending.tell()
    if appending.write(data) != len(data):
      return ''
  except OSError:
    return ''
  return f'{os.path.basename(appending.name)}:{offset}:{len(data)}'


def close(folder: str) -> None:
  """Closes this process's file in ``folder``, if it has one.

  For the process that ran a job parsing in-process (``--no-isolation``): a deleted file still
  open keeps its disk until the process exits.
  """
  appending = _APPENDING.pop((folder, os.getpid()), None)
  if appending is not None:
    appending.close()


def load(folder: str, place: str, digest: bytes) -> dict[str, np.ndarray] | None:
  """The piece kept at ``place`` in ``folder`` if it was parsed from bytes with ``digest``.

  None when it was not kept (``place`` is ''), cannot be read whole or is not there.
  """
  if not place:
    return None
  name, offset, length = place.rsplit(':', 2)
  try:
    with open(os.path.join(folder, name), 'rb') as f:
      f.seek(int(offset))
      data = f.read(int(length))
  except OSError:
    return None
  if len(data) != int(length):
    return None
  try:
    kept_digest, piece = pickle.loads(data)
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError):
    return None  # not a kept piece there: its file was replaced
  return piece if kept_digest == digest else None
