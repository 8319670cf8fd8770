"""TFRecord shards written by Beam, gzipped by ISA-L at a level of our choosing.

Beam's ``WriteToTFRecord`` gzips with zlib at its default level (6), and nothing lets one
change it. At level 6 compression was the largest single cost of the preprocessing job after
parsing. ISA-L's gzip (the ``isal`` package, Intel's library made for fast deflate) at its
level 2 takes a ninth of zlib level 6's CPU and a quarter of zlib level 2's, for shards 8%
larger than zlib level 2's (``benchmarks/gzip_levels.py``, figures in BENCHMARKS.md). A fair
trade for shards written once and read by a trainer that decompresses them at the same speed.
The stream is plain gzip: any gzip reader
(``tf.data.TFRecordDataset(..., compression_type='GZIP')``) reads them.

:class:`WriteTFRecords` is the transform; its sink is a plain :class:`FileBasedSink`, so
shards appear only when complete (Beam writes them under a temporary name and renames them at
the end), locally or on gs://. Its elements are runs of records already framed
(:func:`framed`): the job writes each piece's chunks as one element, so that a piece costs the
runner and the gzip stream one element and one write, not one per chunk (a piece has 14 chunks
on average).
"""

from __future__ import annotations

import struct

import apache_beam as beam
from apache_beam.io import filebasedsink, filesystem
import google_crc32c
from isal import igzip

# ISA-L's levels run from 0 to 3; 2 is its default (BENCHMARKS.md, "Shard compression").
GZIP_LEVEL = 2


def masked_crc32c(data: bytes) -> int:
  """The checksum TFRecord framing stores: CRC32C rotated and offset (``crc32c::Mask``).

  ``crc32c::Mask`` is TensorFlow's; masking keeps a checksum of data holding checksums
  informative.
  """
  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + 0xa282ead8) & 0xffffffff


def tfrecord(data: bytes) -> bytes:
  """One record in TFRecord framing: length, its checksum, the data, its checksum."""
  length = struct.pack('<Q', len(data))
  return b''.join((length, struct.pack('<I', masked_crc32c(length)), data,
                   struct.pack('<I', masked_crc32c(data))))


def framed(records) -> bytes:
  """Records in TFRecord framing, one after another: an element of :class:`WriteTFRecords`."""
  return b''.join(map(tfrecord, records))


class _GzipOverFile(igzip.IGzipFile):
  """A gzip stream over a file Beam opened; closing it closes that file too."""

  def __init__(self, raw, level: int):
    # No name and no time in the header: the same records give the same bytes.
    super().__init__(filename='', mode='wb', compresslevel=level, fileobj=raw, mtime=0)
    self._raw = raw

  def close(self):
    try:
      super().close()
    finally:
      self._raw.close()


class TFRecordSink(filebasedsink.FileBasedSink):
  """Runs of framed records -> TFRecord files, gzipped at ``gzip_level`` (or plain when None)."""

  def __init__(self, file_path_prefix: str, file_name_suffix: str, gzip_level: int | None):
    super().__init__(file_path_prefix, coder=beam.coders.BytesCoder(),
                     file_name_suffix=file_name_suffix, mime_type='application/octet-stream',
                     compression_type=filesystem.CompressionTypes.UNCOMPRESSED)
    self._gzip_level = gzip_level

  def open(self, temp_path):
    """Opens the temporary file, gzipped at the sink's level unless plain."""
    raw = super().open(temp_path)
    return raw if self._gzip_level is None else _GzipOverFile(raw, self._gzip_level)

  def write_encoded_record(self, file_handle, encoded_value):
    """Writes one run of records, already in TFRecord framing."""
    file_handle.write(encoded_value)


class WriteTFRecords(beam.PTransform):
  """Runs of records (:func:`framed`) -> ``PREFIX-SSSSS-of-NNNNN.tfrecord.gz``; outputs the paths.

  The shards are ``.tfrecord`` when not ``compress``; a run's records stay together, in order.
  """

  def __init__(self, file_path_prefix: str, compress: bool):
    super().__init__()
    self._sink = TFRecordSink(file_path_prefix, '.tfrecord.gz' if compress else '.tfrecord',
                              GZIP_LEVEL if compress else None)

  def expand(self, records):
    """Writes ``records`` through the sink; returns the shards' paths."""
    return records | 'Write' >> beam.io.Write(self._sink)
