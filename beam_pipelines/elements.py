"""The elements that cross the preprocessing job's stages, each a NamedTuple read by field name.

From input to chunks: :class:`MatchedFile` (matched) -> :class:`InputBytes` (read) ->
``(fingerprint, Copy)`` (parsed; the dedup's key and value, combined in a
:class:`DedupAccumulator`) -> :class:`Kept` (the dedup's verdict) -> :class:`Survivor` -> read
again: :class:`SurvivorBytes`, or :class:`Lost` when it can no longer be read or parsed. The
near-duplicate search (``beam_pipelines.families``) reads a :class:`PieceSketch` per parsed
input, straight from the parse.

Each type is registered with Beam's ``RowCoder``: a PCollection typed with one
(``with_output_types``: the dedup's input, accumulator and output, and the survivors grouped
by TFRecord file) is encoded field by field, compactly and deterministically, rather than
pickled, which keeps the shuffle as small as plain tuples kept it. Beam derives each row's
schema from the field annotations, so they are real types, not strings (no ``from __future__
import annotations`` here), and a nullable field is ``Optional[...]``: Beam 2.78 reads
``X | None`` as "any", and would pickle it. Fields only, no methods: a worker that decodes a
row before importing this module gets a NamedTuple of Beam's making with the same fields.
"""

from typing import NamedTuple, Optional

from apache_beam import coders


class MatchedFile(NamedTuple):
  """A file an input pattern or list matched, before it is read: its path and size in bytes."""
  path: str
  size: int


class InputBytes(NamedTuple):
  """One input read: its name and its bytes.

  The name is a file's path, or ``path#index`` for the ``index``-th NoteSequence of a TFRecord
  file (:func:`beam_pipelines.inputs.note_sequence_name`).
  """
  name: str
  data: bytes


class Input(NamedTuple):
  """An input that parsed, as the dedup knows it: its name, kind, a digest of its bytes, its place.

  The kind (:data:`beam_pipelines.inputs.MIDI` or :data:`~beam_pipelines.inputs.NOTE_SEQUENCES`)
  says how to read and parse it again; the digest
  (:func:`beam_pipelines.preprocess.input_digest`) tells the second read whether the bytes
  changed; ``kept`` is where the first parse kept its notes (:func:`partita.kept_pieces.keep`),
  or '' when it did not.
  """
  name: str
  kind: str
  digest: bytes
  kept: str = ''


class Copy(NamedTuple):
  """One input of a piece and its label: the dedup's value, keyed by the piece's fingerprint.

  The label is a label name, or ``partita.labels.UNKNOWN``.
  """
  input: Input
  label: str


class NameAndLabel(NamedTuple):
  """A copy's name and its known label."""
  name: str
  label: str


class DedupAccumulator(NamedTuple):
  """What the dedup holds of some copies of a piece, and what combiner lifting shuffles.

  The dedup is ``beam_pipelines.preprocess.KeepFirstPathFn``. It holds the smallest-named copy
  (``smallest``; None for no copy), the number of ``copies``, the smallest-named copy with a
  known label (``labelled``; None when that is ``smallest`` itself or no copy has one, so that
  each name is held once) and whether two known labels differ (``conflict``).
  """
  smallest: Optional[Copy]  # noqa: UP045 (see the module docstring)
  copies: int
  labelled: Optional[NameAndLabel]  # noqa: UP045
  conflict: bool


class Kept(NamedTuple):
  """The dedup's verdict on one piece: its :class:`Survivor` without the fingerprint.

  The fingerprint is the dedup's key; ``input`` is None only for no copy at all.
  """
  input: Optional[Input]  # noqa: UP045
  copies: int
  label: str
  conflict: bool


class Survivor(NamedTuple):
  """One distinct piece after the dedup, the input that is read again to write it.

  ``fingerprint``: the first bytes of the piece's content fingerprint (the dedup's key, and
  the hash its split is drawn from); ``input``: the smallest-named of its copies, the one kept;
  ``copies``: how many inputs hold these notes (``copies - 1`` are duplicates); ``label``: the
  label of the smallest-named copy that has a known one (``partita.labels.UNKNOWN`` if none
  has); ``conflict``: its copies carried two different known labels; ``family``: the id of its
  near-duplicate family, whose hash draws its split (empty: a family of its own, the
  fingerprint).
  """
  fingerprint: bytes
  input: Input
  copies: int
  label: str
  conflict: bool
  family: bytes = b''


class PieceSketch(NamedTuple):
  """What the near-duplicate search knows of a parsed input (``beam_pipelines.families``).

  Its piece's fingerprint (the dedup's key), its name, its number of notes, and its
  ``partita.near_duplicates.Sketch`` (``shingles``, ``minhash``). Every copy of a piece has
  one; the search keeps the smallest-named, the copy the dedup keeps.
  """
  fingerprint: bytes
  name: str
  notes: int
  shingles: int
  minhash: bytes


class SurvivorBytes(NamedTuple):
  """A survivor and its input's bytes, read a second time."""
  survivor: Survivor
  data: bytes


class Lost(NamedTuple):
  """A survivor that could not be read or parsed again (it changed or vanished during the run).

  It carries its dead letter's ``reason`` and ``detail``.
  """
  survivor: Survivor
  reason: str
  detail: str


for element_type in (MatchedFile, InputBytes, Input, Copy, NameAndLabel, DedupAccumulator, Kept,
                     Survivor, SurvivorBytes, Lost, PieceSketch):
  coders.registry.register_row(element_type)
