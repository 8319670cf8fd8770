"""Tests for near-duplicate families: partita.near_duplicates alone, then the Beam job's options.

The pieces are built in code: a work is a legato melody over an off-beat bass; its copies are
transposed, slower, cut short or without the bass. Two unrelated works share a scale run, and a
chain of excerpts links two pieces that share little.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import os

from apache_beam.testing import test_pipeline
import midi_builders
import numpy as np
import pytest
from scipy import sparse
from scipy.sparse import csgraph

from beam_pipelines import families, preprocess, runner
from partita import contract, near_duplicates
from partita import notes as notes_lib

SPLIT_RATIOS = (('train', 1 / 3), ('validation', 1 / 3), ('test', 1 / 3))
WINDOW_LENGTH = 16
# Two octaves of C major, up, in eighth notes (0.125 s at 120 bpm).
SCALE_RUN = [60, 62, 64, 65, 67, 69, 71, 72, 74, 76, 77, 79, 81, 83, 84]


def melody(seed: int, num_notes: int, start: float = 0.0) -> list[midi_builders.Note]:
  """A legato random-walk melody (60..84) on a 0.25 s grid: each note ends as the next starts."""
  rng = np.random.default_rng(seed)
  pitches = np.clip(72 + np.cumsum(rng.integers(-4, 5, num_notes)), 60, 84)
  lengths = rng.choice([0.25, 0.5, 0.5, 0.75, 1.0], num_notes)
  onsets = start + np.concatenate([[0.0], np.cumsum(lengths)[:-1]])
  return [(int(p), float(t), float(t + d), 80) for p, t, d in zip(pitches, onsets, lengths)]


def bass(seconds: float) -> list[midi_builders.Note]:
  """An off-beat bass (36..52, half a second at x.5 s) under a melody that lasts ``seconds``."""
  return [(36 + (7 * beat) % 17, beat + 0.5, beat + 1.0, 70) for beat in range(int(seconds) - 1)]


def end_of(notes) -> float:
  return max(end for _, _, end, _ in notes)


def work(seed: int, num_notes: int = 160) -> list[midi_builders.Note]:
  tune = melody(seed, num_notes)
  return tune + bass(end_of(tune))


def transposed(notes, semitones: int = 5):
  return [(p + semitones, start, end, v) for p, start, end, v in notes]


def slower(notes, factor: float = 1.5):
  return [(p, start * factor, end * factor, v) for p, start, end, v in notes]


def excerpt(notes, share: float = 0.6):
  return [note for note in notes if note[1] < share * end_of(notes)]


def melody_only(notes):
  return [note for note in notes if note[0] >= 60]


def with_scale_run(seed: int) -> list[midi_builders.Note]:
  """A work of its own, with :data:`SCALE_RUN` between two halves of its melody."""
  first = melody(seed, 80)
  run_start = end_of(first)
  run = [(p, run_start + 0.125 * i, run_start + 0.125 * (i + 1), 80)
         for i, p in enumerate(SCALE_RUN)]
  second = melody(seed + 1000, 80, start=end_of(run))
  tune = first + run + second
  return tune + bass(end_of(tune))


def chain_of_excerpts() -> dict[str, list[midi_builders.Note]]:
  """A long melody and its first and last 60%, which share only its middle fifth."""
  whole = melody(21, 400)
  seconds = end_of(whole)
  return {'chain_b_whole.mid': whole,
          'chain_a_start.mid': [n for n in whole if n[1] < 0.6 * seconds],
          'chain_c_end.mid': [n for n in whole if n[1] >= 0.4 * seconds]}


def corpus_pieces() -> dict[str, list[midi_builders.Note]]:
  original = work(1)
  return {
      'a_original.mid': original,
      'b_transposed.mid': transposed(original),
      'c_slower.mid': slower(original),
      'd_excerpt.mid': excerpt(original),
      'e_without_bass.mid': melody_only(original),
      **chain_of_excerpts(),
      'scale_p.mid': with_scale_run(30),
      'scale_q.mid': with_scale_run(31),
  }


FAMILIES = [['a_original.mid', 'b_transposed.mid', 'c_slower.mid', 'd_excerpt.mid',
             'e_without_bass.mid'], ['chain_a_start.mid', 'chain_b_whole.mid', 'chain_c_end.mid']]


def parsed(notes) -> dict[str, np.ndarray]:
  return midi_builders.expected_notes(notes)


def sketch_of(notes) -> near_duplicates.Sketch:
  return near_duplicates.sketch(parsed(notes))


# --- partita.near_duplicates -----------------------------------------------------------------


def test_top_line_keeps_the_highest_note_of_each_onset_unless_a_higher_one_still_sounds():
  notes = [(72, 0.0, 1.0, 80), (48, 0.0, 0.5, 80),  # a chord: its top note
           (43, 0.5, 1.0, 80),  # under the sounding 72: covered
           (74, 1.0, 1.5, 80), (41, 1.5, 2.0, 80),  # 74 has ended: the bass note is the top
           (76, 2.0, 2.5, 80), (77, 2.01, 2.5, 80)]  # a rolled chord: one onset, its top
  piece = parsed(notes)
  tops = near_duplicates.onset_tops(piece['pitch'], piece['step'], piece['duration'])
  assert tops[0].tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]
  assert tops[1].tolist() == [72, 43, 74, 41, 77]
  assert tops[2] == pytest.approx([1.0, 1.0, 1.5, 2.0, 2.5])
  onset, pitch = near_duplicates.top_line(*tops)
  assert onset.tolist() == [0.0, 1.0, 1.5, 2.0]
  assert pitch.tolist() == [72, 74, 41, 77]


def test_tokens_are_intervals_and_quantised_onset_ratios():
  onset = np.array([0.0, 0.5, 1.0, 2.0, 2.25, 2.5])
  pitch = np.array([60, 62, 64, 60, 72, 71])
  ratio_steps = 2 * near_duplicates.RHYTHM_MAX_STEPS + 1
  expected = [(interval + 128) * ratio_steps + ratio + near_duplicates.RHYTHM_MAX_STEPS
              for interval, ratio in [(2, 0), (-4, 2), (12, -4), (-1, 0)]]
  assert near_duplicates.tokens(onset, pitch).tolist() == expected


def test_a_transposed_or_slower_copy_has_the_same_sketch():
  original = sketch_of(work(1))
  assert sketch_of(transposed(work(1))) == original
  assert sketch_of(slower(work(1))) == original
  assert len(original.minhash) == 2 * near_duplicates.BINS


def test_a_copy_without_its_bass_keeps_the_top_line_shingles():
  piece, tune = parsed(work(1)), parsed(melody_only(work(1)))
  tops = near_duplicates.onset_tops(piece['pitch'], piece['step'], piece['duration'])
  tune_tops = near_duplicates.onset_tops(tune['pitch'], tune['step'], tune['duration'])
  # The bass never reaches the top line, only the onsets' tops where the melody holds a note.
  assert all(np.array_equal(a, b) for a, b in zip(near_duplicates.top_line(*tops),
                                                    near_duplicates.top_line(*tune_tops)))
  assert len(tops[0]) > len(tune_tops[0])
  original, copy = sketch_of(work(1)), sketch_of(melody_only(work(1)))
  # The copy's shingles are (nearly) a subset: a low Jaccard similarity, a high containment.
  similarity = near_duplicates.jaccard(original.minhash, copy.minhash)
  assert similarity == pytest.approx(copy.shingles / original.shingles, abs=0.1)
  assert near_duplicates.containment(similarity, original.shingles, copy.shingles) > 0.8
  assert near_duplicates.same_work(original, copy)


def test_an_excerpt_is_contained_in_its_whole():
  whole, part = sketch_of(work(1)), sketch_of(excerpt(work(1)))
  similarity = near_duplicates.jaccard(whole.minhash, part.minhash)
  assert part.shingles / whole.shingles == pytest.approx(0.6, abs=0.05)
  assert similarity == pytest.approx(part.shingles / whole.shingles, abs=0.12)
  assert near_duplicates.containment(similarity, whole.shingles, part.shingles) > 0.8
  assert near_duplicates.same_work(whole, part)


def test_unrelated_pieces_that_share_a_scale_run_are_not_one_work():
  p, q = (parsed(with_scale_run(seed)) for seed in (30, 31))
  shared = np.intersect1d(*(near_duplicates.shingles(near_duplicates.tokens(
      *near_duplicates.onset_tops(x['pitch'], x['step'], x['duration'])[:2])) for x in (p, q)))
  assert len(shared) >= 7  # the run's own shingles
  assert not near_duplicates.same_work(near_duplicates.sketch(p), near_duplicates.sketch(q))
  minhashes = np.stack([np.frombuffer(near_duplicates.sketch(x).minhash, '<u2') for x in (p, q)])
  assert len(near_duplicates.candidate_pairs(minhashes)) == 0  # not even a candidate pair


def test_a_chain_of_excerpts_links_pieces_that_are_not_one_work_directly():
  sketches = {name: sketch_of(notes) for name, notes in chain_of_excerpts().items()}
  start, whole, end = (sketches[f'chain_{x}.mid'] for x in ('a_start', 'b_whole', 'c_end'))
  assert near_duplicates.same_work(start, whole) and near_duplicates.same_work(whole, end)
  assert not near_duplicates.same_work(start, end)


def test_a_piece_with_too_few_shingles_has_no_sketch():
  assert near_duplicates.sketch(parsed(melody(1, near_duplicates.MIN_SHINGLES + 2))) is None


def test_band_values_pack_each_bands_bins_into_one_integer():
  minhashes = np.arange(2 * near_duplicates.BINS, dtype=np.uint16).reshape(2, -1)
  assert near_duplicates.BANDS == 42
  # Band 1 of the first row holds bins 3, 4 and 5; of the second, bins 131, 132 and 133.
  assert near_duplicates.band_values(minhashes, 1).tolist() == [
      (3 << 32) | (4 << 16) | 5, (131 << 32) | (132 << 16) | 133]


def test_candidate_pairs_share_a_band_and_a_crowded_band_pairs_neighbours_only():
  rng = np.random.default_rng(0)
  minhashes = rng.integers(0, 2**16, (200, near_duplicates.BINS), dtype=np.uint16)
  minhashes[7, 30:33] = minhashes[3, 30:33]  # rows 3 and 7 share band 10
  minhashes[9] = minhashes[3]                # row 9 is row 3 again: every band
  crowded = np.arange(100, 100 + near_duplicates.MAX_BAND_PIECES + 1)
  minhashes[crowded, :3] = 5                 # band 0 shared by 65 rows
  pairs = near_duplicates.candidate_pairs(minhashes)
  expected = {(3, 7), (3, 9), (7, 9)} | {(int(a), int(a) + 1) for a in crowded[:-1]}
  assert {tuple(pair) for pair in pairs.tolist()} == expected


def test_families_are_connected_components_keyed_by_the_smallest_fingerprint():
  rng = np.random.default_rng(1)
  minhashes = rng.integers(0, 2**16, (7, near_duplicates.BINS), dtype=np.uint16)
  # c~b, b~a (a chain: a and c share only a quarter of their bins), d~e, x~y.
  minhashes[1, :80] = minhashes[0, :80]
  minhashes[2, 48:128] = minhashes[1, 48:128]
  minhashes[4] = minhashes[3]
  minhashes[6, :64] = minhashes[5, :64]
  names = ['z.mid', 'y.mid', 'x.mid', 'd.mid', 'e.mid', 'x.mid', 'y.mid']
  fingerprints = [b'a', b'b', b'c', b'd', b'e', b'x', b'y']
  table = near_duplicates.SketchTable(
      fingerprints[::-1], names[::-1], np.array([100, 300, 300, 5, 5, 1, 2][::-1]),
      np.full(7, 500), minhashes[::-1])
  found = near_duplicates.find_families(table)
  member = near_duplicates.Member
  assert found.members == {
      b'a': member(b'a', False), b'b': member(b'a', False), b'c': member(b'a', True),
      b'd': member(b'd', True), b'e': member(b'd', False),
      b'x': member(b'x', False), b'y': member(b'x', True)}
  assert found.verified_pairs == 4 <= found.candidate_pairs
  assert near_duplicates.family_counts(found) == {
      'families': 3, 'pieces_in_families': 7, 'largest_family': 3,
      'candidate_pairs': found.candidate_pairs, 'verified_pairs': 4}


@pytest.mark.parametrize('seed', range(5))
def test_smallest_connected_names_scipys_connected_components_by_their_smallest_row(seed):
  rng = np.random.default_rng(seed)
  count = 300
  # Random pairs, some rows in none, and a long chain in reverse order (the slowest case).
  pairs = np.concatenate([rng.integers(0, count, (120, 2)),
                          np.stack([np.arange(299, 260, -1), np.arange(298, 259, -1)], axis=1)])
  label = near_duplicates.smallest_connected(pairs, count)
  graph = sparse.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])),
                            shape=(count, count))
  _, component = csgraph.connected_components(graph, directed=False)
  smallest = {}
  for row in range(count):
    smallest.setdefault(component[row], row)
  assert label.tolist() == [smallest[component[row]] for row in range(count)]


def test_a_familys_split_is_drawn_uniformly_though_its_id_is_its_smallest_fingerprint():
  rng = np.random.default_rng(0)
  ratios = {'train': 0.8, 'validation': 0.1, 'test': 0.1}
  ids = [min(rng.bytes(16) for _ in range(5)) for _ in range(4000)]
  drawn = collections.Counter(
      notes_lib.split_for(near_duplicates.family_split_key(family), ratios) for family in ids)
  assert {split: count / len(ids) for split, count in drawn.items()} == pytest.approx(
      ratios, abs=0.02)
  # Why the id is hashed again: the smallest of five hashes almost always falls in train.
  biased = collections.Counter(notes_lib.split_for(family.hex(), ratios) for family in ids)
  assert biased['train'] / len(ids) > 0.99


# --- the Beam job ----------------------------------------------------------------------------


def fingerprints() -> dict[str, bytes]:
  return {name: bytes.fromhex(notes_lib.content_fingerprint(parsed(notes)))[
      :preprocess.FINGERPRINT_BYTES] for name, notes in corpus_pieces().items()}


def expected_splits(by_family: bool) -> dict[str, str]:
  """Each piece's split: by a hash of its family's smallest fingerprint, or by its own."""
  keys = {name: key.hex() for name, key in fingerprints().items()}
  if by_family:
    for family in FAMILIES:
      smallest = min(fingerprints()[name] for name in family)
      keys.update({name: hashlib.sha256(smallest).hexdigest() for name in family})
  return {name: notes_lib.split_for(key, dict(SPLIT_RATIOS)) for name, key in keys.items()}


def run_job(root, mode: str) -> dict:
  corpus = os.path.join(root, 'corpus')
  if not os.path.isdir(corpus):
    for name, notes in corpus_pieces().items():
      midi_builders.write_midi(os.path.join(corpus, name), notes)
    # An exact copy of a piece that keep-one drops, and a file that is no MIDI.
    midi_builders.write_midi(os.path.join(corpus, 'z_excerpt_copy.mid'), excerpt(work(1)))
    midi_builders.write_file(os.path.join(corpus, 'not_midi.mid'), b'no MIDI here')
  config = preprocess.PreprocessConfig(
      input=corpus, output=os.path.join(root, mode), window_length=WINDOW_LENGTH,
      stride=WINDOW_LENGTH, split_ratios=SPLIT_RATIOS, near_duplicates=mode)
  pipeline = test_pipeline.TestPipeline(runner.LOCAL_RUNNER)
  preprocess.build_pipeline(pipeline, config)
  pipeline.run().wait_until_finish()
  with open(os.path.join(config.output, contract.INFO_FILE)) as f:
    return json.load(f)


def pieces_and_notes_per_split(splits: dict[str, str], names) -> dict[str, tuple[int, int]]:
  expected = {split: (0, 0) for split in contract.SPLITS}
  for name in names:
    pieces, notes = expected[splits[name]]
    expected[splits[name]] = (pieces + 1, notes + len(corpus_pieces()[name]))
  return expected


def split_sizes(info) -> dict[str, tuple[int, int]]:
  return {split: (info['splits'][split]['pieces'], info['splits'][split]['notes'])
          for split in contract.SPLITS}


@pytest.fixture(scope='module')
def jobs(tmp_path_factory):
  root = tmp_path_factory.mktemp('near_duplicates')
  return {mode: run_job(root, mode) for mode in families.MODES}


def test_off_splits_every_piece_by_its_own_notes(jobs):
  splits = expected_splits(by_family=False)
  # The test means something only if the families straddle splits when split piece by piece.
  assert all(len({splits[name] for name in family}) > 1 for family in FAMILIES)
  info = jobs['off']
  assert split_sizes(info) == pieces_and_notes_per_split(splits, corpus_pieces())
  assert info['near_duplicates'] == {'mode': 'off', 'families': 0, 'pieces_in_families': 0,
                                     'largest_family': 0, 'candidate_pairs': 0,
                                     'verified_pairs': 0, 'dropped': 0}
  assert info['counts']['near_duplicates'] == 0


def test_same_split_puts_every_family_in_the_split_of_a_hash_of_its_smallest_fingerprint(jobs):
  info = jobs['same-split']
  splits = expected_splits(by_family=True)
  assert split_sizes(info) == pieces_and_notes_per_split(splits, corpus_pieces())
  # Pairs: all 10 of the five copies of one work, and the chain's two links (its ends are no
  # candidate); the two pieces that share a scale run are not even a candidate.
  assert info['near_duplicates'] == {'mode': 'same-split', 'families': 2,
                                     'pieces_in_families': 8, 'largest_family': 5,
                                     'candidate_pairs': 12, 'verified_pairs': 12, 'dropped': 0}
  assert info['counts'] == {'files_in': 12, 'pieces_written': 10, 'duplicates': 1,
                            'near_duplicates': 0, 'dead_letters': 1,
                            'dead_letter_reasons': {'not_midi': 1}, 'label_conflicts': 0}


def test_keep_one_keeps_each_familys_longest_member_and_accounts_for_the_others(jobs):
  info = jobs['keep-one']
  kept = ['a_original.mid', 'chain_b_whole.mid', 'scale_p.mid', 'scale_q.mid']
  splits = expected_splits(by_family=True)
  assert split_sizes(info) == pieces_and_notes_per_split(splits, kept)
  # 12 inputs = 4 pieces + 1 exact copy (of a dropped excerpt) + 6 near-duplicates + 1 dead letter.
  assert info['counts'] == {'files_in': 12, 'pieces_written': 4, 'duplicates': 1,
                            'near_duplicates': 6, 'dead_letters': 1,
                            'dead_letter_reasons': {'not_midi': 1}, 'label_conflicts': 0}
  assert info['near_duplicates'] == {'mode': 'keep-one', 'families': 2, 'pieces_in_families': 8,
                                     'largest_family': 5, 'candidate_pairs': 12,
                                     'verified_pairs': 12, 'dropped': 6}
  dropped = {split: info['splits'][split]['near_duplicates'] for split in contract.SPLITS}
  assert dropped == {split: sum(1 for family in FAMILIES for name in family
                                if splits[name] == split and name not in kept)
                     for split in contract.SPLITS}


def test_the_summary_prints_the_accounting_and_the_families(jobs):
  printed = io.StringIO()
  preprocess.print_summary(jobs['keep-one'], printed)
  lines = printed.getvalue().splitlines()
  assert lines[:2] == [
      'inputs: 12 = pieces written 4 + duplicates 1 + near-duplicates 6 + dead letters 1',
      '  near-duplicates (keep-one): 2 families of 8 pieces (largest 5), 6 dropped']
  printed = io.StringIO()
  preprocess.print_summary(jobs['off'], printed)
  assert 'families' not in printed.getvalue()


def test_the_option_is_checked_and_printed():
  with pytest.raises(SystemExit):
    preprocess.parse_args(['--input', 'x', '--output', 'y', '--near-duplicates', 'some'])
  config, _ = preprocess.parse_args(['--input', 'x', '--output', 'y'])
  assert config.near_duplicates == 'same-split'
  config, _ = preprocess.parse_args(['--input', 'x', '--output', 'y',
                                     '--near-duplicates', 'keep-one'])
  assert config.near_duplicates == 'keep-one'
