"""TFRecord shards written by Beam, gzipped by ISA-L at a level of our choosing.

Beam's ``WriteToTFRecord`` gzips with zlib at its default level (6), and nothing lets one
change it. At level 6 compression was the largest single cost of the preprocessing job after
parsing. ISA-L's gzip (the ``isal`` package, Intel's library made for fast deflate) at its
level 2 takes a ninth of zlib level 6's CPU and a quarter of zlib level 2's, for shards 8%
larger than zlib level 2's (``benchmarks/gzip_levels.py``, figures in BENCHMARKS.md). A fair
trade for shards written once and read by a trainer that decompresses them at the same speed.
The stream is plain gzip: any gzip reader
(``tf.data.TFRecordDataset(..., compression_type='GZIP')``) reads them.

:class:`WriteShards` is the transform: one Beam ``Write`` for every split, each split's shards in a
folder of its own. A ``Write`` adds 17 transforms to the pipeline and 4 stages to its run, which
cost about 0.1 s a ``Write`` to build and run whatever the corpus (docs/experiments.md, "note-seq as
an extra, one sink for the three splits"): a ``FileBasedSink`` writes one prefix, so the job needed
one per split. Beam's ``fileio.WriteToFiles`` writes several destinations, but it writes nothing for
an empty one, leaves its temporary folder behind, and logs a failed rename at debug level only.
:class:`ShardsSink` keeps ``FileBasedSink``'s way: shards appear only when complete (each bundle
writes temporary files, renamed at the end), locally or on gs://. Its elements are a split's name
and a run of records already framed (:func:`framed`): the job writes each piece's chunks as one
element, so that a piece costs the runner and the gzip stream one element and one write, not one per
chunk (a piece has 14 chunks on average).
"""

from __future__ import annotations

import collections
import struct
import uuid

import apache_beam as beam
from apache_beam.io import filesystem, filesystems, iobase
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
  """Records in TFRecord framing, one after another: an element's run for :class:`WriteShards`."""
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


class ShardsSink(iobase.Sink):
  """(name, framed records) -> ``OUTPUT/NAME/NAME-SSSSS-of-NNNNN.tfrecord.gz``, for each name.

  Plain ``.tfrecord`` shards when ``gzip_level`` is None. Each bundle writes one temporary file
  for each name it sees, in a hidden folder of the write's own inside that name's folder; the
  end renames them to their shard names, in order, and removes the folders. A name that no
  bundle saw gets one empty shard, as a ``FileBasedSink`` gives it.
  """

  def __init__(self, output: str, names: tuple[str, ...], gzip_level: int | None):
    super().__init__()
    self._output = output
    self._names = tuple(names)
    self._gzip_level = gzip_level
    self._suffix = '.tfrecord' if gzip_level is None else '.tfrecord.gz'

  def temporary_path(self, temporary: str, name: str, uid: str) -> str:
    """Where the bundle ``uid`` of the write ``temporary`` writes ``name``'s records."""
    if name not in self._names:
      raise ValueError(f'no shards named {name!r}: expected one of {self._names}')
    return filesystems.FileSystems.join(self._output, name, temporary, uid + self._suffix)

  def open(self, path: str):
    """A new file at ``path``, gzipped at the sink's level unless plain."""
    raw = filesystems.FileSystems.create(
        path, mime_type='application/octet-stream',
        compression_type=filesystem.CompressionTypes.UNCOMPRESSED)
    return raw if self._gzip_level is None else _GzipOverFile(raw, self._gzip_level)

  def initialize_write(self) -> str:
    """The name of this write's temporary folders (one per name, made by its first file)."""
    return f'.temp-{uuid.uuid4().hex}'

  def open_writer(self, init_result: str, uid: str) -> iobase.Writer:
    """A bundle's writer."""
    return _ShardsWriter(self, init_result, uid)

  def pre_finalize(self, init_result, writer_results):
    """Nothing: the job cleared the output folder before it started."""

  def finalize_write(self, init_result: str, writer_results, pre_finalize_result):
    """Renames every bundle's files to their shards' names; returns the shards' paths.

    A retry after some renames finds their files already in place and renames only the rest.
    """
    written = collections.defaultdict(list)
    for result in writer_results:
      for name, path in result:
        written[name].append(path)
    shards = []
    for name in self._names:
      sources = sorted(written[name])
      if not sources:
        sources = [self.temporary_path(init_result, name, 'empty')]
        self.open(sources[0]).close()
      destinations = [filesystems.FileSystems.join(
          self._output, name, f'{name}-{index:05d}-of-{len(sources):05d}{self._suffix}')
                      for index in range(len(sources))]
      moves = [(source, destination) for source, destination in zip(sources, destinations)
               if not (filesystems.FileSystems.exists(destination)
                       and not filesystems.FileSystems.exists(source))]
      if moves:
        filesystems.FileSystems.rename([source for source, _ in moves],
                                       [destination for _, destination in moves])
      try:
        filesystems.FileSystems.delete(
            [filesystems.FileSystems.join(self._output, name, init_result)])
      except OSError:  # Beam's BeamIOError: gs:// has no folder left once its files are renamed
        pass
      shards += destinations
    return shards


class _ShardsWriter(iobase.Writer):
  """One bundle's files of a :class:`ShardsSink`, one per name, opened at its first run."""

  def __init__(self, sink: ShardsSink, temporary: str, uid: str):
    self._sink = sink
    self._temporary = temporary
    self._uid = uid
    self._files = {}  # name -> (path, open file)

  def write(self, value: tuple[str, bytes]) -> None:
    """Appends one run of framed records to its name's file."""
    name, records = value
    if name not in self._files:
      path = self._sink.temporary_path(self._temporary, name, self._uid)
      self._files[name] = (path, self._sink.open(path))
    self._files[name][1].write(records)

  def close(self) -> tuple[tuple[str, str], ...]:
    """Closes the bundle's files; returns (name, path) of each."""
    for _, file in self._files.values():
      file.close()
    return tuple((name, path) for name, (path, _) in self._files.items())


class WriteShards(beam.PTransform):
  """(name, run of records (:func:`framed`)) -> each name's shards; outputs the shards' paths.

  ``OUTPUT/NAME/NAME-SSSSS-of-NNNNN.tfrecord.gz`` for each of ``names`` (:class:`ShardsSink`),
  ``.tfrecord`` when not ``compress``; a run's records stay together, in order.
  """

  def __init__(self, output: str, names: tuple[str, ...], compress: bool):
    super().__init__()
    self._sink = ShardsSink(output, names, GZIP_LEVEL if compress else None)

  def expand(self, runs):
    """Writes ``runs`` through the sink; returns the shards' paths."""
    return runs | 'Write' >> beam.io.Write(self._sink)
