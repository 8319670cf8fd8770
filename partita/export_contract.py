"""The export contract: what ``trainer.export`` writes and every reader of an export relies on.

A SavedModel with two functions and three plain files in its ``assets/`` folder. Readers
(``serving``, ``evaluation``, or anyone's code with only TensorFlow) need nothing else, so the
names and limits live here, with no TensorFlow import, for the writer and the readers alike.

**Arguments by name.** Both functions take named tensors (:data:`ARGUMENTS`) and readers pass
every one by keyword, ``export.generate(pitch=..., ..., label=...)``; their order is not part of
the contract. An argument added later comes last, with a default that keeps the behaviour from
before it (as ``label_guidance=1.0`` and ``tempo=0.0`` would have): a SavedModel keeps a
``tf.function``'s Python defaults, so a reader that does not know the new argument leaves it out
and still gets its old behaviour, and a reader that needs it refuses an export without it
(``serving.generate.load_export``). One argument holding a dict of tensors, the other way to
name them, would not be additive: a dict must hold exactly the keys it was traced with, so a new
key breaks every reader that does not pass it. (The SavedModel's serving signatures, for TF
Serving, are keyword-only either way, and fill no defaults.) Exports written before readers
passed arguments by name have the same parameter names, so they are called the same way; one
that lacks an argument of today's (from before ``label_guidance`` or the metre) is refused.

``predict_next(pitch, step, duration, velocity, quarter_seconds, bar_position, bar_quarters,
next_step, next_pitch, next_duration, label)``: ``[batch, window]`` windows of the seven note
features (``constants.NOTE_FEATURES``; the metre's three are 0 for a piece without a grid,
``partita.metre``), ``[batch]`` values of the next note's parts and ``[batch]`` int32
label ids -> the distribution of each part of the next note. In every window a position of
velocity 0 (``constants.NO_NOTE_VELOCITY``) holds no note for the heads' pitch memory and timing
anchors (the encoder still reads it): the neutral prime of ``--no-prime`` is made of them.
The model predicts the parts in an order (its config's ``model.note_order``, e.g. step, then
pitch, then duration) and each part's distribution is conditioned on the values given for the
parts before it; the values of its own and later parts are ignored (to score a real note, pass
the note). Outputs:

* ``pitch_logits [batch, 128]``: unnormalised log-probabilities of the pitch (normalised ones
  when the model mixes the training pieces' pitch n-grams into its own, ``model.ngram_order``
  in the config asset; the label then also chooses the label's n-gram);
* ``step_chord_logit [batch]``: log-odds that the step is exactly 0 (the note joins a chord);
* ``step_mixture_logits``, ``step_locations``, ``step_scales`` ``[batch, components]``: the
  rest of the step's distribution, a mixture of logistic distributions over log-seconds with
  weights ``softmax(mixture_logits)``, locations and scales in log-seconds; the last
  ``model.timing_anchors`` components after the free ones (the config asset's) sit on the
  window's last steps, and one the window lacks (a step of 0) has the logit -1e9, a weight of 0;
  with ``model.metre`` full, the last ones sit at the metre's times (``trainer.model``,
  ``metre_anchors``);
* ``duration_mixture_logits``, ``duration_locations``, ``duration_scales``: the duration's;
* ``velocity [batch]``: the predicted MIDI velocity, 1..127.

``generate(pitch, step, duration, velocity, quarter_seconds, bar_position, bar_quarters,
num_notes, temperature, top_k, top_p, label_guidance, tempo, seed, label)``: the seven prime
windows, scalar sampling parameters, int64 seeds and ``[batch]`` int32 label ids -> the seven
note features ``[batch, num_notes]``, the whole sampling loop running inside the graph: every
part of each note is sampled, in the model's order, at ``temperature`` (top-k and top-p cut the
pitch only); a sampled step or duration is at most ``timing_bins.LONGEST_SECONDS`` (30 s, the
likelihood grid's last bin). In a row with a grid (unless ``model.metre`` is none) each sampled
step is moved onto the 1/24-quarter grid after the last onset, and the generated notes' metre
continues the prime's: its tempo and bar length, the position advanced by each step. ``tempo``
(quarter notes per minute, :data:`MIN_TEMPO` to :data:`MAX_TEMPO`; 0 keeps the prime's) first
scales a gridded row's times so that its last note is at that tempo. ``seed`` is one per row
(``[batch]``), or a scalar ``s`` standing for the seeds :func:`row_seeds` gives (``s, s + 1,
...``). A row's random numbers are drawn from
its own seed and the note index alone, so its notes depend only on its prime, the parameters
and its seed: the same request gives the same notes alone, in any batch and at any row.

``label``: the id of the piece's label (a composer) in the vocabulary of the ``labels`` section
of the export's ``info.json`` asset (``partita.labels``): ``vocabulary[i]`` is the name of id
``i``; id 0 (``unknown``) asks for no label in particular. ``label_guidance`` (float32, 0 to
:data:`MAX_LABEL_GUIDANCE`) is classifier-free guidance: at 1 each part is drawn from the
model's distribution given the label; otherwise from parameters ``unconditional +
label_guidance * (labelled - unconditional)`` (the pitch logits, the velocity, and the step's
and duration's mixture logits, chord logit and locations, their scales in log space), so 0
ignores the label and values above 1 exaggerate what it changes, at twice the cost per note.
``predict_next`` returns one label's distribution: call it with the label and with id 0 to
guide by hand.
"""

from partita import constants

# The file every SavedModel reader looks for first; written last, so it marks a complete export.
SAVED_MODEL_FILE = 'saved_model.pb'
ASSETS_DIR = 'assets'
ASSET_CONFIG = 'config.yaml'  # the resolved training config
ASSET_INFO = 'info.json'  # the dataset contract the model was trained on
ASSET_PRIMES = 'primes.json'  # a few validation windows: the default primes
# The training split's runs of pitches, hashed: the originality guard's table
# (partita.originality, an .npz file).
ASSET_TRAINING_RUNS = 'training_runs.npz'
ASSET_FILES = (ASSET_CONFIG, ASSET_INFO, ASSET_PRIMES, ASSET_TRAINING_RUNS)
# The critic that chooses among candidates (serving.critic, JSON). Not written by the trainer:
# ``python -m evaluation.critic`` fits it on an export and adds it to the export's assets.
ASSET_CRITIC = 'critic.json'

PREDICT_NEXT = 'predict_next'
GENERATE = 'generate'
SIGNATURES = (PREDICT_NEXT, GENERATE)
# The next note's parts that ``predict_next``'s heads condition on.
PREDICT_NEXT_CONDITIONS = ('next_step', 'next_pitch', 'next_duration')
# The sampling parameters of ``generate`` (``serving.sampling.Sampling``'s fields).
GENERATE_PARAMETERS = ('num_notes', 'temperature', 'top_k', 'top_p', 'label_guidance',
                       'tempo', 'seed')
# The label ids, an argument of both functions.
LABEL_ARGUMENT = 'label'
# Each function's arguments by name: the windows (constants.NOTE_FEATURES), then its own.
ARGUMENTS = {
    PREDICT_NEXT: (*constants.NOTE_FEATURES, *PREDICT_NEXT_CONDITIONS, LABEL_ARGUMENT),
    GENERATE: (*constants.NOTE_FEATURES, *GENERATE_PARAMETERS, LABEL_ARGUMENT),
}

# Notes per ``generate`` call; the graph asserts it, and serving refuses more before calling.
MAX_GENERATED_NOTES = 10_000
# Guidance beyond a few times the label's effect only sharpens the distributions further.
MAX_LABEL_GUIDANCE = 10.0
# Quarter notes per minute that ``generate`` accepts as a tempo (0: the prime's own): from a
# very slow largo to beyond any prestissimo.
MIN_TEMPO = 10.0
MAX_TEMPO = 400.0
# The seed is an int64 in the graph.
MAX_SEED = 2**63 - 1

# What each scalar parameter of ``generate`` must be, in the words of every refusal: the Python
# checks' (``serving.sampling.Sampling.check``: ``FIELD must be ALLOWED, got VALUE``) and the
# graph's own assertions (:func:`refusal`, without the value, which a graph cannot format).
ALLOWED = {
    'num_notes': f'in 1..{MAX_GENERATED_NOTES}',
    'temperature': '> 0',
    'top_k': f'in 1..{constants.PITCHES}',
    'top_p': 'in (0, 1]',
    'label_guidance': f'in 0..{MAX_LABEL_GUIDANCE:g}',
    # No apostrophe: TensorFlow escapes it in an assertion's message.
    'tempo': f'0 (as the prime) or in {MIN_TEMPO:g}..{MAX_TEMPO:g} quarter notes per minute',
    'seed': 'in 0..2**63-1',
}


def refusal(parameter: str) -> str:
  """``PARAMETER must be ALLOWED``: the graph's message for a value out of range."""
  return f'{parameter} must be {ALLOWED[parameter]}'


def row_seeds(seed: int, rows: int) -> list[int]:
  """The per-row seeds a scalar ``seed`` stands for in ``generate``.

  ``seed + row``, modulo 2**63 (as the graph computes them).
  """
  return [(seed + row) & MAX_SEED for row in range(rows)]
