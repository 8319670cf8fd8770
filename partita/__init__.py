"""Music logic shared by every stage: notes, MIDI files, the data contract.

Pure Python and numpy (plus the parsers); no Beam and no TensorFlow, so the preprocessing
workers, the trainer and the serving jobs can all import it.
"""
