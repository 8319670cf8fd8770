"""Constants every stage shares, each defined once (as note-seq's ``constants.py`` does).

Nothing here imports Beam or TensorFlow, so the preprocessing workers, the trainer and serving
all read the same values.
"""

# MIDI pitches are 0..127: the pitch head's classes and the range every stage checks.
PITCHES = 128
# MIDI velocities are 1..127 for a sounding note; the model's velocity head is a fraction of it.
MAX_VELOCITY = 127
# A window position of velocity 0 holds no note (as a MIDI note-on of velocity 0 is none): the
# model's encoder reads it, but the heads' pitch memory and timing anchors skip it. The neutral
# prime of `--no-prime` is made of such positions, so that the heads do not copy its one note.
NO_NOTE_VELOCITY = 0
# What a note sounds like: all that a MIDI file or a piano roll needs of it.
SOUND_FEATURES = ('pitch', 'step', 'duration', 'velocity')
# Where a note falls in the metre (partita.metre): the tempo at its onset (seconds per quarter
# note), its position in its bar and the bar's length (quarter notes); all 0 without a grid.
METRE_FEATURES = ('quarter_seconds', 'bar_position', 'bar_quarters')
# A note's features, in the order they are stored, fed to the model and generated.
NOTE_FEATURES = (*SOUND_FEATURES, *METRE_FEATURES)
# File name endings taken as MIDI files, compared case-insensitively.
MIDI_SUFFIXES = ('.mid', '.midi')
# General MIDI programs (instruments) are 0..127.
PROGRAMS = 128
