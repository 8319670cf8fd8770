"""What both Beam jobs write the same way: dead letters, and single files written atomically.

The preprocessing job (``beam_pipelines.preprocess``) and the generation job
(``serving.beam_generate``) share these, so both have one dead-letter shape and one place for it
(:mod:`partita.failures`) and one guarantee for their single files. The generation job imports
it from here: ``serving`` may depend on ``beam_pipelines`` (never the reverse), and
``serving.generate`` loads no Beam (``tests/test_code_shape.py`` checks both).

* Every DoFn that rejects an input yields :func:`dead_letter` on the output tagged :data:`TAG`;
  each job flattens those outputs and writes them with :class:`WriteDeadLetters` to
  ``OUT/dead_letter/dead_letters-SSSSS-of-NNNNN.jsonl``, and counts them with
  :class:`CountByReason`.
* :func:`write_atomically` writes ``info.json``, the ``COMPLETED`` marker, generated MIDI and
  PNG files and ``summary.json``, local or on ``gs://``. (Shards and dead letters are Beam sinks,
  which do the same themselves; local commands without Beam use :mod:`partita.atomic`.)
"""

from __future__ import annotations

import json
import uuid

import apache_beam as beam
from apache_beam import metrics
from apache_beam.io import filesystem, filesystems

from partita import failures

TAG = 'dead_letter'


def dead_letter(input_name: str, reason: str, detail: str) -> beam.pvalue.TaggedOutput:
  """The dead letter of one input, for a DoFn to yield; counted per reason in Beam's metrics."""
  metrics.Metrics.counter('dead_letter', reason).inc()
  return beam.pvalue.TaggedOutput(TAG, failures.dead_letter_record(input_name, reason, detail))


class WriteDeadLetters(beam.PTransform):
  """Dead-letter records -> JSON lines in ``OUT/dead_letter/``; outputs the files' paths.

  With no dead letter it still writes one, empty, file.
  """

  def __init__(self, output_dir: str):
    super().__init__()
    self._output_dir = output_dir

  def expand(self, records):
    """Writes ``records`` as JSON lines under the dead-letter prefix; returns the files' paths."""
    prefix = filesystems.FileSystems.join(self._output_dir, failures.DEAD_LETTER_DIR,
                                          failures.DEAD_LETTER_PREFIX)
    return (records
            | 'ToJson' >> beam.Map(json.dumps)
            | 'Write' >> beam.io.WriteToText(prefix,
                                             file_name_suffix=failures.DEAD_LETTER_SUFFIX))


class CountByReason(beam.PTransform):
  """Dead-letter records -> (reason, count) per reason present."""

  def expand(self, records):
    """Counts ``records`` per reason."""
    return (records
            | 'Reason' >> beam.Map(lambda record: (record['reason'], 1))
            | 'Sum' >> beam.CombinePerKey(sum))


def write_atomically(path: str, data: bytes) -> None:
  """Writes ``data`` to ``path`` under a temporary name in the same folder, then renames it.

  A reader never sees a partial file at ``path``. The temporary is hidden and unique
  (``.NAME.<random>.tmp``: concurrent or retried writers of one name do not collide, and it
  never looks like an output), and it is deleted if anything fails, interruptions included.
  On gs://, where a rename is a copy and a delete, the object at ``path`` still only ever
  appears whole.
  """
  directory, name = filesystems.FileSystems.split(path)
  temporary = filesystems.FileSystems.join(directory, f'.{name}.{uuid.uuid4().hex}.tmp')
  try:
    with filesystems.FileSystems.create(
        temporary, compression_type=filesystem.CompressionTypes.UNCOMPRESSED) as f:
      f.write(data)
    filesystems.FileSystems.rename([temporary], [path])
  except BaseException:
    if filesystems.FileSystems.exists(temporary):
      filesystems.FileSystems.delete([temporary])
    raise
