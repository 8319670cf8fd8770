"""The training config tree, with YAML presets and ``--set key=value`` overrides.

The mechanism is ``partita.config_tree``, which every stage shares.

The defaults below are the full model, sized for one GPU or TPU (``configs/full.yaml`` names
them). Presets in ``configs/*.yaml`` hold only their differences from these defaults;
``--set model.lstm_units=64`` overrides any leaf. Leaves typed ``typing.Literal`` accept only
the listed values. The resolved tree is saved as ``config.yaml`` next to what it produced.
"""

from __future__ import annotations

import dataclasses
import typing

from partita import config_tree, originality


@dataclasses.dataclass
class DataConfig:
  """The input pipeline: batch size, shuffling, augmentation and label dropout."""
  batch_size: int = 256  # global batch, split across replicas
  shuffle_buffer: int = 50_000  # windows
  # Training-split augmentation, applied on the fly in tf.data (never on disk).
  transpose_semitones: int = 0  # random transposition in [-n, n]; 0 disables
  tempo_stretch: float = 0.0  # random step/duration scale in [1 - x, 1 + x]; 0 disables
  # Share of training windows whose label is replaced by the unconditional id (partita.labels),
  # so that the same model also generates with no label.
  label_dropout: float = 0.1


NoteOrder = typing.Literal['step_pitch_duration', 'pitch_step_duration', 'step_duration_pitch',
                           'independent']

Encoder = typing.Literal['bilstm', 'causal']
Metre = typing.Literal['full', 'inputs', 'none']
LabelConditioning = typing.Literal['input', 'heads']


@dataclasses.dataclass
class ModelConfig:
  """The network: its sizes, encoder, heads, metre, label conditioning, n-grams and loss weights."""
  embedding_dim: int = 64
  lstm_units: int = 256
  dropout: float = 0.2
  # The order in which the heads predict the parts of the next note, each seeing the parts
  # before its own (trainer/model.py); independent: none sees another.
  note_order: NoteOrder = 'step_pitch_duration'
  # bilstm: a bidirectional LSTM then an LSTM read the window, and predict the note after it;
  # causal: two LSTMs read it left to right and predict the note after every position, and
  # generation carries their state from note to note instead of rereading the window.
  encoder: Encoder = 'bilstm'
  timing_components: int = 8  # logistic components of the step and duration mixtures
  # More components of each timing mixture, anchored at the window's last N values of their
  # part (the last steps, or durations): music repeats its times (trainer/timing_distribution.py).
  timing_anchors: int = 8
  # Whether the step's mixture also anchors at the last timing_anchors onset steps (the steps
  # that are not 0): in chords most of the last steps are 0, and a continuation sampled from
  # those anchors alone loses its prime's rate of onsets (docs/experiments.md, "The step
  # anchored at its last onsets, and what still tells the demo's pieces apart").
  onset_anchors: bool = True
  # What the model sees of the metre (partita.metre: each note's tempo and place in its bar).
  # inputs: the encoder reads each note's position in its bar and beat, the tempo and the bar's
  # length, the later heads the next onset's position in the beat, and generation moves each
  # sampled step onto the grid; full: also components of the timing mixtures at note values and
  # at the next grid points at the current tempo (trainer/model.py); none: none of it (the model
  # as it was before the metre).
  metre: Metre = 'full'
  # Whether the pitch head also weighs how often each pitch sounded in the last 1 to 64 notes
  # (trainer/model.py, pitch_memory).
  pitch_memory: bool = True
  # Whether the pitch memory also holds, for every pitch, its pitch class's share of the last 64
  # notes, whether the class is absent from them and the log of its count: the key as the
  # window has it, so that the head can tell out-of-key pitches (docs/experiments.md, "Key
  # memory" and "The key in three features, and the notes still sounding").
  key_memory: bool = True
  # Whether the heads after the step see which of the last 32 notes still sound at the next
  # onset: how many (every head after the step) and which pitches (the pitch head's memory), so
  # that a new note joins the voices that hold (trainer/model.py, sounding_notes;
  # docs/experiments.md, "The key in three features, and the notes still sounding").
  sounding: bool = True
  label_embedding_dim: int = 16  # the piece label's embedding (partita.labels)
  # Where the label enters: input: beside every note's features, into the recurrence;
  # heads: beside the encoder's vector, into every head.
  label_conditioning: LabelConditioning = 'input'
  # The order of the Kneser-Ney n-grams of the training pieces' pitches (one of every piece and
  # one per label) mixed into the pitch distribution after training (trainer/pitch_ngram.py);
  # 0: the network alone. On classical-midi 4 gains as much from the label as 5 (and more than
  # 7) with a third of the tables (docs/experiments.md, "Label n-grams").
  ngram_order: int = 4
  # Hidden ReLU units of each head before its output layer; 0: the output layer alone (linear
  # in the encoder's vector and the earlier parts: measured worse, docs/experiments.md, "Note
  # order and heads").
  head_units: int = 256
  pitch_loss_weight: float = 1.0
  step_loss_weight: float = 1.0
  duration_loss_weight: float = 1.0
  velocity_loss_weight: float = 1.0


# The model settings that shape no weight (the loss, the n-grams fitted after training): a run
# may change them and still resume from another's checkpoints (trainer.task.check_resumable).
# Not the dropout: above 0 it keeps a seed generator's state among the weights.
WEIGHTLESS_MODEL_SETTINGS = frozenset({
    'ngram_order', 'pitch_loss_weight', 'step_loss_weight', 'duration_loss_weight',
    'velocity_loss_weight'})


LearningRateSchedule = typing.Literal['constant', 'cosine']


@dataclasses.dataclass
class TrainConfig:
  """The optimisation: steps, epochs, checkpoints, validation, learning rate, clipping and seed."""
  steps: int = 20_000  # total training steps (batches)
  steps_per_epoch: int = 1_000  # steps between validations and logs; the last epoch may be short
  # Steps between checkpoints (what a preempted run resumes from; it loses at most this many
  # steps); 0: one at the end of every epoch. A checkpoint is also written after the last step.
  checkpoint_steps: int = 0
  # Validation windows per evaluation, spread evenly over the split (0: all of them).
  validation_windows: int = 20_000
  learning_rate: float = 1e-3
  # constant: learning_rate throughout; cosine: from learning_rate down to 0 at the last step
  # (the schedule follows the optimizer's step count, so a resumed run continues it).
  learning_rate_schedule: LearningRateSchedule = 'constant'
  clipnorm: float = 1.0
  seed: int = 0


Strategy = typing.Literal['default', 'one_device', 'mirrored', 'multi_worker', 'tpu']
MixedPrecision = typing.Literal['auto', 'none', 'float16', 'bfloat16']


@dataclasses.dataclass
class RuntimeConfig:
  """Where and in what precision training runs (see ``trainer.distribute.make_strategy``)."""
  # default: TensorFlow's default device; one_device: ``device``; mirrored: every local GPU
  # (or the CPU); multi_worker: every worker named by TF_CONFIG; tpu: the TPU named by ``tpu``.
  strategy: Strategy = 'default'
  device: str = '/cpu:0'  # for one_device
  tpu: str = ''  # for tpu: 'local' on a TPU VM, a TPU name or grpc:// address; '' reads $TPU_NAME
  # Compute dtype of the hidden layers (the output heads always compute in float32).
  # auto: bfloat16 on a TPU, float16 on a GPU, none (float32) otherwise.
  mixed_precision: MixedPrecision = 'auto'


@dataclasses.dataclass
class ExportConfig:
  """What the export bundles besides the model."""
  num_primes: int = 16  # validation windows bundled with the export as default primes
  # The originality guard's table holds the training split's runs of copy_limit + 1 pitches:
  # serving rejects a piece repeating more than copy_limit (or more than a higher limit asked
  # for) consecutive pitches of a training piece (partita.originality). Above the dataset's
  # window length, the table is of that length (the chunks hold no longer runs whole).
  copy_limit: int = originality.DEFAULT_LIMIT


@dataclasses.dataclass
class Config:
  """The whole training config: the data, model, train, runtime and export sections."""
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
  runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)
  export: ExportConfig = dataclasses.field(default_factory=ExportConfig)

  def to_dict(self) -> dict:
    """The config as plain nested dicts."""
    return config_tree.to_dict(self)

  def to_yaml(self) -> str:
    """The config as YAML, as ``config.yaml`` stores it."""
    return config_tree.to_yaml(self)


def load(preset_path: str | None = None, overrides: typing.Sequence[str] = ()) -> Config:
  """Defaults, then the preset file (if any), then each ``KEY=VALUE`` override in order."""
  return config_tree.load(Config, preset_path, overrides)


def from_yaml(text: str) -> Config:
  """The config that YAML text describes."""
  return config_tree.from_yaml(Config, text)
