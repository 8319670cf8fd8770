"""The export contract: what ``trainer.export`` writes and every reader of an export relies on.

A SavedModel with two functions and three plain files in its ``assets/`` folder. Readers
(``serving``, ``evaluation``, or anyone's code with only TensorFlow) need nothing else, so the
names and limits live here, with no TensorFlow import, for the writer and the readers alike.

``predict_next(pitch, step, duration, velocity)``: ``[batch, window]`` windows ->
``pitch_logits [batch, 128]``, ``step``, ``duration``, ``velocity`` ``[batch]``.

``generate(pitch, step, duration, velocity, num_notes, temperature, top_k, top_p, seed)``: prime
windows and scalar sampling parameters -> ``pitch``, ``step``, ``duration``, ``velocity``
``[batch, num_notes]``, the whole sampling loop running inside the graph.
"""

# The file every SavedModel reader looks for first; written last, so it marks a complete export.
SAVED_MODEL_FILE = 'saved_model.pb'
ASSETS_DIR = 'assets'
ASSET_CONFIG = 'config.yaml'  # the resolved training config
ASSET_INFO = 'info.json'  # the dataset contract the model was trained on
ASSET_PRIMES = 'primes.json'  # a few validation windows: the default primes
ASSET_FILES = (ASSET_CONFIG, ASSET_INFO, ASSET_PRIMES)

PREDICT_NEXT = 'predict_next'
GENERATE = 'generate'
SIGNATURES = (PREDICT_NEXT, GENERATE)
# The scalar arguments of ``generate`` after the four prime windows, in order.
GENERATE_PARAMETERS = ('num_notes', 'temperature', 'top_k', 'top_p', 'seed')

# Notes per ``generate`` call; the graph asserts it, and serving refuses more before calling.
MAX_GENERATED_NOTES = 10_000
# The seed is an int64 in the graph.
MAX_SEED = 2**63 - 1
