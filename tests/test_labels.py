"""Piece labels: the sources a label comes from, the vocabulary, and a preprocessing run.

The preprocessing run labels its pieces from every source at once.
"""

import collections
import os

import midi_builders
import pytest
import tensorflow as tf

from beam_pipelines import preprocess
from partita import contract, failures
from partita import dataset as dataset_lib
from partita import labels as labels_lib
from partita import notes as notes_lib
from serving import validation


def test_names_are_normalised():
  assert labels_lib.normalize('  Carl   Czerny ') == 'carl_czerny'
  assert labels_lib.normalize('Bach') == 'bach'


def test_a_csv_maps_paths_relative_to_itself(tmp_path):
  text = ('composer,title,midi\nAlbeniz,Tango,Albeniz/alb_esp2.mid\n,untitled,x/blank.mid\n'
          'Johann Sebastian Bach,Prelude,/abs/bwv846.mid\n')
  labels = labels_lib.read_csv(text, str(tmp_path / 'metadata.csv'), 'composer')
  assert labels == {str(tmp_path / 'Albeniz' / 'alb_esp2.mid'): 'albeniz',
                    '/abs/bwv846.mid': 'johann_sebastian_bach'}
  with pytest.raises(ValueError, match=r"no label column 'era'; its columns are \['composer', "):
    labels_lib.read_csv(text, 'm.csv', 'era')
  with pytest.raises(ValueError, match="no path column 'file'"):
    labels_lib.read_csv(text, 'm.csv', 'composer', path_column='file')


def test_sources_take_precedence_in_order_and_unknown_names_mean_no_label(tmp_path):
  root = str(tmp_path / 'corpus')
  sources = labels_lib.LabelSources(
      csv_labels={os.path.join(root, 'chopin', 'bach-prelude.mid'): 'csv_says'},
      name_regex=r'^(?P<label>[a-z_]+)-', folder_roots=(root,))
  assert sources.from_name(os.path.join(root, 'chopin', 'bach-prelude.mid')) == 'csv_says'
  assert sources.from_name(os.path.join(root, 'chopin', 'bach-fugue.mid')) == 'bach'
  assert sources.from_name(os.path.join(root, 'chopin', 'nocturne.mid')) == 'chopin'
  # 'unknown_artist-' means unknown: the folder then names the label.
  assert sources.from_name(os.path.join(root, 'liszt', 'unknown_artist-x.mid')) == 'liszt'
  assert sources.from_name(os.path.join(root, 'unknown', 'unknown-x.mid')) is None
  assert sources.from_name(os.path.join(root, 'top.mid')) is None  # no folder below the root
  assert sources.from_name('/elsewhere/a/b.mid') is None
  first_group = labels_lib.LabelSources(name_regex=r'^([^-]+)-')
  assert first_group.from_name('gs://b/x/Haydn-op76.mid') == 'haydn'


def test_the_vocabulary_gives_rare_labels_the_other_id():
  pieces = {'bach': {'train': 30, 'test': 4}, 'unknown': {'train': 5},
            'liszt': {'train': 2, 'validation': 1}, 'chopin': {'train': 20}}
  labels = labels_lib.vocabulary(pieces, 20, 'composer')
  assert labels == {
      'name': 'composer', 'min_pieces': 20,
      'vocabulary': ['unknown', 'other', 'bach', 'chopin'],
      'ids': {'bach': 2, 'chopin': 3, 'liszt': 1, 'unknown': 0},
      'pieces': {'bach': {'test': 4, 'train': 30}, 'chopin': {'train': 20},
                 'liszt': {'train': 2, 'validation': 1}, 'unknown': {'train': 5}}}
  assert labels_lib.requested_id(labels, 'Chopin') == 3
  assert labels_lib.requested_id(labels, 'unknown') == labels_lib.UNCONDITIONAL_ID
  with pytest.raises(KeyError, match="'liszt' had 2 training piece"):
    labels_lib.requested_id(labels, 'liszt')
  with pytest.raises(KeyError, match="no composer 'mahler'; known: unknown, other, bach, chopin"):
    labels_lib.requested_id(labels, 'mahler')
  with pytest.raises(failures.RejectionError, match='no composer') as info:
    validation.label_id(labels, 'mahler')
  assert info.value.reason == 'unknown_label'
  assert validation.label_id(labels, None) == labels_lib.UNCONDITIONAL_ID


def note_sequence(seed: int, composer: str) -> bytes:
  sequence = notes_lib.note_seq_protos().NoteSequence()
  for pitch, start, end, velocity in midi_builders.random_melody(seed, 30):
    sequence.notes.add(pitch=pitch, start_time=start, end_time=end, velocity=velocity)
  if composer:
    sequence.sequence_metadata.composers.append(composer)
  return sequence.SerializeToString()


def chunk_labels(data_dir: str, info: dict) -> dict[str, collections.Counter]:
  """Per split, how many chunks carry each label id."""
  table = dataset_lib.label_table(info['labels'])
  counts = {}
  for split in contract.SPLITS:
    counts[split] = collections.Counter()
    for path in tf.io.gfile.glob(os.path.join(data_dir, contract.shard_pattern(split))):
      for record in tf.data.TFRecordDataset(path, compression_type='GZIP'):
        counts[split][int(dataset_lib.parse_chunk(record, table)[contract.LABEL_FEATURE])] += 1
  return counts


def test_a_run_labels_pieces_from_every_source_and_counts_them(tmp_path):
  corpus = tmp_path / 'corpus'
  melody = midi_builders.random_melody
  # Folders name composers; file names name some too; the CSV names one.
  for seed in range(4):
    midi_builders.write_midi(corpus / 'bach' / f'piece{seed}.mid', melody(seed, 30))
  midi_builders.write_midi(corpus / 'bach' / 'handel-water.mid', melody(10, 30))
  midi_builders.write_midi(corpus / 'misc' / 'unknown_artist-x.mid', melody(11, 30))
  midi_builders.write_midi(corpus / 'misc' / 'listed.mid', melody(12, 30))
  midi_builders.write_midi(corpus / 'top.mid', melody(13, 30))
  # Two copies of one piece with different known labels: a conflict; the smaller name wins.
  midi_builders.write_midi(corpus / 'bach' / 'twin.mid', melody(20, 30))
  midi_builders.write_midi(corpus / 'mozart' / 'twin.mid', melody(20, 30))
  # An unknown copy never overrides a known one: 'misc/' is not a known label here.
  midi_builders.write_midi(corpus / 'a_unknown' / 'same.mid', melody(21, 30))
  midi_builders.write_midi(corpus / 'mozart' / 'same.mid', melody(21, 30))
  (tmp_path / 'meta.csv').write_text('path,composer\ncorpus/misc/listed.mid,Scarlatti\n')
  sequences = str(tmp_path / 'sequences.tfrecord')
  with tf.io.TFRecordWriter(sequences) as writer:
    writer.write(note_sequence(30, 'Chopin'))
    writer.write(note_sequence(31, ''))
  config = preprocess.PreprocessConfig(
      input=(str(corpus),), note_sequences=(sequences,), output=str(tmp_path / 'out'),
      window_length=8, stride=8, label_csv=str(tmp_path / 'meta.csv'),
      label_regex=r'^([a-z_]+)-', label_from_folder=True, unknown_labels=('unknown_artist',
                                                                          'unknown', 'misc',
                                                                          'a_unknown'),
      min_label_pieces=1, split_ratios=(('train', 1.0),), isolate_parser=False)
  info = preprocess.run(config)
  labels = info['labels']
  assert {name: counts['train'] for name, counts in labels['pieces'].items()} == {
      'bach': 5,  # piece0-3 and twin (bach/twin.mid < mozart/twin.mid)
      'handel': 1, 'mozart': 1, 'scarlatti': 1, 'chopin': 1,
      'unknown': 3}  # unknown_artist-x, top.mid and the unlabelled NoteSequence
  assert labels['vocabulary'] == ['unknown', 'other', 'bach', 'chopin', 'handel', 'mozart',
                                  'scarlatti']
  assert info['counts']['label_conflicts'] == 1
  assert info['counts']['duplicates'] == 2
  assert info['splits']['train']['labels'] == {name: counts['train']
                                               for name, counts in labels['pieces'].items()}
  # Every chunk carries its piece's label; 30 notes at window 8 and stride 8 are 3 chunks.
  assert chunk_labels(config.output, info)['train'] == {
      labels['ids'][name]: 3 * counts['train'] for name, counts in labels['pieces'].items()}


def test_labels_with_too_few_training_pieces_share_the_other_id(tmp_path):
  for seed in range(3):
    midi_builders.write_midi(tmp_path / 'in' / f'bach-{seed}.mid',
                             midi_builders.random_melody(seed, 20))
  midi_builders.write_midi(tmp_path / 'in' / 'liszt-0.mid', midi_builders.random_melody(9, 20))
  config = preprocess.PreprocessConfig(
      input=(str(tmp_path / 'in'),), output=str(tmp_path / 'out'), window_length=8,
      label_regex=r'^([a-z]+)-', min_label_pieces=2, split_ratios=(('train', 1.0),),
      isolate_parser=False)
  info = preprocess.run(config)
  assert info['labels']['vocabulary'] == ['unknown', 'other', 'bach']
  assert info['labels']['ids'] == {'bach': 2, 'liszt': labels_lib.OTHER_ID, 'unknown': 0}
  assert chunk_labels(config.output, info)['train'] == {2: 3, labels_lib.OTHER_ID: 1}


def test_a_bad_label_option_is_refused_before_anything_runs():
  with pytest.raises(SystemExit):
    preprocess.parse_args(['--input', 'x', '--output', 'y', '--label-regex', '('])
  with pytest.raises(SystemExit):
    preprocess.parse_args(['--input', 'x', '--output', 'y', '--min-label-pieces', '0'])
