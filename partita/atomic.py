"""Atomic writes of local files: a reader sees the previous file or the complete new one.

Every local writer of the project (MIDI and piano rolls of ``serving.generate``, WAV audio, the
demo corpus) goes through :func:`replacing`, so all give the same guarantees. The Beam jobs,
whose outputs may be on ``gs://``, write through Beam's FileSystems instead
(``beam_pipelines.outputs.write_atomically``, the same scheme); this module imports neither Beam
nor TensorFlow.
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import os
import uuid


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[str]:
  """Yields a temporary path whose file replaces ``path`` when the block completes.

  The block (or a program it runs) writes the temporary file. It is hidden and unique
  (``.NAME.<random>.tmp``, so it never looks like a finished file, and writers of one name do
  not collide) and in ``path``'s folder, since ``os.replace`` is atomic only within one file
  system. It is synced to disk before the rename, so a crash cannot leave a complete-looking
  file with missing data. On any exception, KeyboardInterrupt included, the temporary is removed
  and ``path`` is left as it was.
  """
  directory, name = os.path.split(os.fspath(path))
  temporary = os.path.join(directory, f'.{name}.{uuid.uuid4().hex}.tmp')
  try:
    yield temporary
    with open(temporary, 'rb') as file:
      os.fsync(file.fileno())
    os.replace(temporary, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(temporary)
    raise


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
  """Writes ``data`` to ``path`` atomically (see :func:`replacing`).

  The temporary is created with ``open``, so the file gets the usual umask permissions
  (``tempfile``'s 0600 would make results unreadable to other users).
  """
  with replacing(path) as temporary:
    with open(temporary, 'xb') as file:
      file.write(data)
