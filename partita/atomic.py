"""Atomic writes, local or on ``gs://``: a reader sees the previous file or the complete new one.

Every writer outside the Beam jobs goes through :func:`replacing`, so all give the same
guarantees: the MIDI, piano rolls and WAV audio of ``serving.generate`` and of the evaluation
report, the report's other files, ``config.yaml`` and ``metrics.json`` of the trainer, the demo
corpus and the benchmarks' results. The Beam jobs write through Beam's FileSystems instead
(``beam_pipelines.outputs.write_atomically``, the same scheme). This module imports neither Beam
nor TensorFlow.

``gs://`` paths go through ``google-cloud-storage``, imported only for such a path (it comes
with the ``[gcp]`` extra, which ``gs://`` needs). Why this client: it honours
``STORAGE_EMULATOR_HOST``, so the tests write through it to a ``gcp-storage-emulator`` server as
they run the Beam jobs (whose own ``gs://`` filesystem is built on it). TensorFlow's
``tf.io.gfile`` has no setting for an emulator's endpoint, so its ``gs://`` writes could not be
tested; Beam's FileSystems would load Beam into the trainer and the evaluation, which must not
load it (``tests/test_code_shape.py``); fsspec's ``gcsfs`` is not a dependency.
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import mimetypes
import os
import tempfile
import uuid

GCS_PREFIX = 'gs://'


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[str]:
  """Yields a local temporary path whose file replaces ``path`` when the block completes.

  The block (or a program it runs) writes the temporary file. It is hidden and unique
  (``.NAME.<random>.tmp``, so it never looks like a finished file, and writers of one name do
  not collide). On any exception, KeyboardInterrupt included, the temporary is removed and
  ``path`` is left as it was.

  For a local ``path`` the temporary lies in its folder (which must exist: see
  :func:`makedirs`), since ``os.replace`` is atomic only within one file system; it is synced to
  disk before the rename, so a crash cannot leave a complete-looking file with missing data.
  For a ``gs://`` path the temporary is in the local temporary folder and is then uploaded:
  Cloud Storage makes an object visible only once its upload is complete, so an interrupted
  upload leaves the previous object, or none.
  """
  path = os.fspath(path)
  remote = path.startswith(GCS_PREFIX)
  directory, name = os.path.split(path)
  if remote:
    directory = tempfile.gettempdir()
  temporary = os.path.join(directory, f'.{name}.{uuid.uuid4().hex}.tmp')
  try:
    yield temporary
    if remote:
      _upload(temporary, path)
    else:
      with open(temporary, 'rb') as file:
        os.fsync(file.fileno())
      os.replace(temporary, path)
  finally:
    # Gone after a local rename; otherwise what an interrupted block or an upload left.
    with contextlib.suppress(FileNotFoundError):
      os.remove(temporary)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
  """Writes ``data`` to ``path`` atomically (see :func:`replacing`).

  The temporary is created with ``open``, so the file gets the usual umask permissions
  (``tempfile``'s 0600 would make results unreadable to other users).
  """
  with replacing(path) as temporary:
    with open(temporary, 'xb') as file:
      file.write(data)


def makedirs(path: str | os.PathLike[str]) -> None:
  """Creates the folder ``path`` and its parents where missing.

  Nothing on ``gs://``, where a folder is only a prefix of its objects' names.
  """
  if not os.fspath(path).startswith(GCS_PREFIX):
    os.makedirs(path, exist_ok=True)


def _upload(local: str, url: str) -> None:
  """Uploads the file ``local`` as the object ``url`` (``gs://BUCKET/NAME``).

  With the content type its name implies (so that a browser shows a report's page as a page).
  """
  from google.cloud import storage  # noqa: PLC0415 (the [gcp] extra, for gs:// paths only)

  bucket, _, name = url[len(GCS_PREFIX):].partition('/')
  storage.Client().bucket(bucket).blob(name).upload_from_filename(
      local, content_type=mimetypes.guess_type(name)[0])
