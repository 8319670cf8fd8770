"""partita: classical music generation at corpus scale.

This file is also what Beam ships to Dataflow workers (``--setup_file ./setup.py``), so
``install_requires`` lists everything any command of the project needs at run time; the extras
hold only what their names say.
"""

import setuptools

# The demo's embedded corpus: music21 ships ~430 Bach works and more inside its package.
DEMO = ['music21>=10,<11', 'tqdm>=4.66,<5']
# gs:// paths for Beam and the Dataflow runner.
GCP = ['apache-beam[gcp]>=2.77,<3', 'google-cloud-storage>=2.14,<4']
# Submitting training to Vertex AI (python -m trainer.vertex; --dry-run needs none of it).
VERTEX = ['google-cloud-aiplatform>=2.7,<3']
# NoteSequence inputs (preprocess --note-sequences, e.g. MAESTRO's TFRecords), and the tests'
# reference for the sustain pedal. An extra, not a dependency: note-seq brings pandas (with
# librosa, IPython and more), and Beam imports pandas whenever it is installed, 0.25 s in every
# process of every Beam job (docs/experiments.md, "note-seq as an extra, one sink for the
# three splits").
NOTESEQUENCE = ['note-seq==0.0.5']
# The benchmarks' memory figures (benchmarks/preprocess_scale.py and preprocess_startup.py).
BENCH = ['psutil>=5.9,<8']
# The suite runs the demo corpus, gs:// paths and NoteSequence inputs too, so it needs those
# extras, and a developer's environment runs the benchmarks (those of the preprocessing command
# measure a plain install, without pandas: benchmarks/preprocess_scale.py).
# ruff: the linter tests/test_code_shape.py runs.
# selenium: drives Debian's chromium (through its chromedriver) to test the index.html pages.
# pytest-xdist: the suite runs one worker per core (pytest.ini), a test file to a worker.
# scipy: the tests' reference for special functions and for the near-duplicate families'
# connected components.
TEST_TOOLS = ['pytest>=8,<10', 'pytest-xdist>=3.6,<4', 'gcp-storage-emulator>=2024.8',
              'hypothesis>=6.100,<7', 'ruff>=0.17,<0.18', 'selenium>=4.20,<5', 'scipy>=1.11,<2']

setuptools.setup(
    name='partita',
    version='0.1.0',
    description='MIDI corpus -> Beam preprocessing -> tf.distribute training -> SavedModel '
    'generation',
    python_requires='>=3.10,<3.13',
    packages=setuptools.find_packages(include=['partita', 'beam_pipelines', 'trainer',
                                               'serving', 'evaluation']),
    install_requires=[
        'apache-beam>=2.77,<3',
        # Beam's TFRecord sink checksums every record with CRC32C and plain apache-beam brings
        # no implementation; google-crc32c is the C one Beam prefers (its `tfrecord` extra
        # would bring crcmod, which falls back to pure Python where it cannot compile).
        'google-crc32c>=1.5,<2',
        # The shards' gzip: ISA-L's, five times as fast as zlib's at its level 2, the job's
        # largest cost after parsing (beam_pipelines/tfrecord_sink.py).
        'isal>=1.6,<2',
        # The 2.21 line: reads and writes gs:// natively (no tensorflow-io, whose newest
        # release cannot load its ops on 2.21).
        'tensorflow>=2.21,<2.22',
        'tensorboard>=2.21,<2.22',
        'keras>=3.15,<4',
        'numpy>=1.26,<3',
        'symusic>=0.6,<0.7',  # the fast MIDI parser (~100x pretty_midi)
        'pretty_midi>=0.2.11,<0.3',  # writing MIDI
        'matplotlib>=3.8,<4',  # piano rolls
        'markdown>=3.5,<4',  # the evaluation report's tables on its index.html
        # The evaluation's composer-style classifier (evaluation/style.py): a standardised
        # multinomial logistic regression is scikit-learn's job, not ours to write.
        'scikit-learn>=1.5,<2',
        'pyyaml>=6,<7',
    ],
    extras_require={'demo': DEMO, 'gcp': GCP, 'vertex': VERTEX, 'notesequence': NOTESEQUENCE,
                    'bench': BENCH, 'dev': DEMO + GCP + NOTESEQUENCE + BENCH + TEST_TOOLS},
)
