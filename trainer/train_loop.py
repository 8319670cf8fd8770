"""The training loop: what one step does, when the loop validates, logs and checkpoints.

A step is a ``tf.function`` that runs :meth:`Trainer.replica_step` on every replica with
``strategy.run``: forward pass, the per-window loss summed and divided by the *global* batch
size, gradients clipped as their sum over the replicas, and Adam's update of that sum. So two
replicas of 8 windows take the very step one replica of 16 takes, on any strategy. Several
steps run in one call (a ``tf.range`` loop in the graph) between the points where Python has
something to do: a checkpoint every ``train.checkpoint_steps`` steps, and validation, console
and TensorBoard every ``train.steps_per_epoch`` steps and after the last.

Steps and validation compute ``trainer.metrics.TRAINING_METRICS`` (``window_metrics``); the
console and TensorBoard show them under those names, the same in ``logs/train`` and
``logs/validation``, so that TensorBoard draws both runs of a tag in one chart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
import contextlib
import os
import shutil
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from trainer import config as config_lib
from trainer import metrics as metrics_lib
from trainer import model as model_lib

SUM = tf.distribute.ReduceOp.SUM


def make_optimizer(train_config: config_lib.TrainConfig, policy: str,
                   variables: list) -> keras.optimizers.Optimizer:
  """Adam, built for ``variables``, with the configured learning-rate schedule.

  Call it in the strategy's scope. (The trainer clips the gradients: see :meth:`Trainer.clip`.)

  Under ``mixed_float16`` it is wrapped in a ``LossScaleOptimizer`` (dynamic loss scaling, so
  that small float16 gradients do not flush to zero); bfloat16 has float32's range and needs
  none.
  """
  learning_rate = train_config.learning_rate
  if train_config.learning_rate_schedule == 'cosine':
    learning_rate = keras.optimizers.schedules.CosineDecay(learning_rate, train_config.steps)
  optimizer = keras.optimizers.Adam(learning_rate)
  if policy == 'mixed_float16':
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
  # Built here, not on the first step: variables are created in the strategy's scope, and
  # exist before a checkpoint is restored into them.
  optimizer.build(variables)
  return optimizer


class Trainer:
  """A model, its optimizer and their strategy, and the compiled steps that train and validate.

  The steps train and validate the model on batches distributed by that strategy.
  """

  def __init__(self, model: keras.Model, optimizer: keras.optimizers.Optimizer,
               strategy: tf.distribute.Strategy, config: config_lib.Config):
    self.model = model
    self.optimizer = optimizer
    self.strategy = strategy
    self.loss_weights = config.model
    self.clipnorm = config.train.clipnorm
    self.global_batch_size = config.data.batch_size

  @tf.function
  def train_steps(self, batches: tf.distribute.DistributedIterator,
                  num_steps: tf.Tensor) -> tf.Tensor:
    """Trains ``num_steps`` steps on the next batches of ``batches``.

    Returns, for each of ``TRAINING_METRICS``, the sum over the steps of its mean over each step's
    global batch.
    """
    sums = tf.zeros([len(metrics_lib.TRAINING_METRICS)])
    for _ in tf.range(num_steps):
      per_replica = self.strategy.run(self.replica_step, args=next(batches))
      sums += self.strategy.reduce(SUM, per_replica, axis=None)
    return sums

  def replica_step(self, inputs: dict, targets: dict) -> tf.Tensor:
    """One replica's part of a training step, on its share of the global batch.

    Returns the share's sums of ``TRAINING_METRICS`` divided by the global number of targets (the
    global batch size, times the window length for a causal encoder: its training metrics are
    means over every position, its validation metrics, like the BiLSTM's, over the last).
    """
    # A causal encoder learns the note after every position of the window, not only the last.
    every_position = self.model.causal
    if every_position:
      targets = model_lib.every_position_targets(inputs, targets)
    targets_per_window = inputs['pitch'].shape[1] if every_position else 1
    with tf.GradientTape() as tape:
      # Teacher forcing: each head sees the true parts before its own.
      outputs = self.model(inputs, targets, training=True, every_position=every_position)
      values = metrics_lib.window_metrics(outputs, targets, self.loss_weights)
      # This replica's part of the global batch's mean loss: the optimizer sums the parts'
      # gradients over the replicas, which is the mean's gradient for any number of them.
      loss = tf.nn.compute_average_loss(
          values['loss'], global_batch_size=self.global_batch_size * targets_per_window)
      scaled_loss = self.optimizer.scale_loss(loss)  # times the loss scale under float16
    # Dense: the embedding's gradient comes as IndexedSlices, a row per occurrence of a pitch,
    # and from those Keras' Adam takes the sum of the rows' squares for the square of their sum
    # (the gradient's), unlike Adam and TensorFlow's own Adam.
    gradients = [tf.convert_to_tensor(gradient) for gradient in
                 tape.gradient(scaled_loss, self.model.trainable_variables)]
    # Sums the parts over the replicas, unscales and steps; under float16 it skips a step
    # whose gradients are not finite, and lowers the loss scale.
    self.optimizer.apply(self.clip(gradients), self.model.trainable_variables)
    return tf.stack([tf.reduce_sum(values[name]) for name in metrics_lib.TRAINING_METRICS]) / (
        self.global_batch_size * targets_per_window)

  def clip(self, parts: list) -> list[tf.Tensor]:
    """This replica's parts of the gradients, scaled so that the sums over the replicas are clipped.

    Scaled so that their sums over the replicas (what the optimizer applies) have norms of at most
    ``clipnorm``, variable by variable.

    Keras' own ``clipnorm`` clips each replica's part before the sum, so that N replicas
    clip at up to N times the norm one device clips at (measured on two devices: weights
    3e-3 apart after 10 steps with ``train.clipnorm=0.01``). So the parts are summed here, and
    every replica scales its own part by the factor that clips the sum. Where a sum is not
    finite, the variable's part becomes NaN on every replica, not only on those whose part
    overflowed, so that under float16 they all skip the step. ``clipnorm`` 0 does not clip.
    """
    if not self.clipnorm:
      return parts
    sums = tf.distribute.get_replica_context().all_reduce(SUM, parts)
    loss_scale = self.optimizer.scale_loss(1.0)  # 1 but under float16
    clipped = []
    for part, total in zip(parts, sums):
      norm = tf.norm(total) / loss_scale
      factor = tf.where(tf.math.is_finite(norm), tf.minimum(1.0, self.clipnorm / norm), np.nan)
      clipped.append(part * factor)
    return clipped

  def validate(self, batches: tf.distribute.DistributedDataset) -> dict[str, float]:
    """Means of ``TRAINING_METRICS`` over every window of ``batches``."""
    sums = np.zeros(len(metrics_lib.TRAINING_METRICS) + 1)
    for batch in batches:
      sums += self.validation_sums(batch).numpy()
    # Every worker reads the whole validation set (no sharding), so the sums count each
    # window once per worker, the number of windows too, and their ratio is the mean.
    return dict(zip(metrics_lib.TRAINING_METRICS, (sums[:-1] / sums[-1]).tolist()))

  @tf.function
  def validation_sums(self, batch: tuple) -> tf.Tensor:
    """The sums of ``TRAINING_METRICS`` over one distributed batch, then its number of windows."""
    def replica_sums(inputs, targets):
      values = metrics_lib.window_metrics(self.model(inputs, targets, training=False), targets,
                              self.loss_weights)
      count = tf.cast(tf.shape(targets['pitch'])[0], tf.float32)
      return tf.stack([tf.reduce_sum(values[name]) for name in metrics_lib.TRAINING_METRICS]
                      + [count])
    return self.strategy.reduce(SUM, self.strategy.run(replica_sums, args=batch), axis=None)


def pauses(start: int, total: int, steps_per_epoch: int,
           checkpoint_every: int) -> Iterator[int]:
  """The steps after ``start`` at which training stops for Python's work.

  Each multiple of ``checkpoint_every`` and of ``steps_per_epoch``, and ``total``.

  Epoch k ends at step ``(k + 1) * steps_per_epoch``, so a run resumed mid-epoch first
  finishes that epoch, and validation happens at the same steps however often a run was
  interrupted; the last epoch may be short, so training stops at exactly ``total``.
  """
  step = start
  while step < total:
    step = min((step // interval + 1) * interval for interval in
               (steps_per_epoch, checkpoint_every, total))
    yield step


def run(trainer: Trainer, train_data: Callable[[tf.distribute.InputContext, int],
                                               tf.data.Dataset],
        validation_data: tf.data.Dataset, checkpoint_dir: str, log_dir: str, chief: bool,
        config: config_lib.TrainConfig) -> int:
  """Trains from the newest checkpoint in ``checkpoint_dir`` up to ``config.steps``.

  From scratch if there is none; returns the step reached.

  ``train_data(input_context, seed)`` is one input pipeline's training batches.
  """
  step = tf.Variable(0, dtype=tf.int64, trainable=False, name='step')
  checkpoint = tf.train.Checkpoint(model=trainer.model, optimizer=trainer.optimizer, step=step)
  latest = tf.train.latest_checkpoint(checkpoint_dir)
  if latest:
    checkpoint.restore(latest).assert_existing_objects_matched()
    print(f'resuming from step {int(step)} ({latest})', flush=True)
  start = int(step)
  # The seed depends on the start, so that a resumed run does not replay the windows that
  # the interrupted run started with.
  batches = iter(trainer.strategy.distribute_datasets_from_function(
      lambda context: train_data(context, config.seed + start)))
  validation_batches = trainer.strategy.experimental_distribute_dataset(validation_data)
  every = config.checkpoint_steps or config.steps_per_epoch
  with checkpoints(checkpoint, step, checkpoint_dir, chief, every) as manager, \
       EpochLog(log_dir, chief, config.steps, trainer.global_batch_size) as log:
    for stop in pauses(start, config.steps, config.steps_per_epoch, every):
      num_steps = stop - int(step)
      started = time.perf_counter()
      sums = trainer.train_steps(batches, tf.constant(num_steps)).numpy()
      log.add(sums, num_steps, time.perf_counter() - started)
      step.assign(stop)
      # Every `every` steps (the manager counts them on `step`), and after the last.
      manager.save(check_interval=stop < config.steps)
      if stop % config.steps_per_epoch == 0 or stop == config.steps:
        learning_rate = float(keras.ops.convert_to_numpy(trainer.optimizer.learning_rate))
        log.end_epoch(stop, trainer.validate(validation_batches), learning_rate)
  return int(step)


@contextlib.contextmanager
def checkpoints(checkpoint: tf.train.Checkpoint, step: tf.Variable, directory: str,
                chief: bool, every: int):
  """A ``tf.train.CheckpointManager`` keeping the newest checkpoint.

  It saves when ``step`` has reached the next multiple of ``every``.

  The manager writes a checkpoint's files first and then names it in the small ``checkpoint``
  state file (an atomic write, also on ``gs://``), so a run killed while saving resumes from
  the previous complete checkpoint. Every worker of a multi-worker run saves (saving
  distributed variables can need every worker); the chief into ``directory``, the others into
  a temporary folder removed when the block ends.
  """
  scratch = None if chief else tempfile.mkdtemp(prefix='partita-checkpoints-')
  start = int(step)
  try:
    # Intervals counted from the last multiple of `every`, so that saves stay on its multiples
    # after a run that stopped between two (its last step, then a larger train.steps).
    yield tf.train.CheckpointManager(
        checkpoint, scratch or directory, max_to_keep=1, step_counter=step,
        checkpoint_interval=every, last_checkpoint_step=start - start % every)
  finally:
    if scratch:
      shutil.rmtree(scratch, ignore_errors=True)


class EpochLog:
  """Per epoch, the training metrics' means over its steps and its windows/s.

  At its end, one console line and the TensorBoard scalars (the chief's only) against the step.

  Steps, not epochs, on TensorBoard's x axis keep a resumed run's curves continuous. The
  windows/s count the time spent in training steps, not in validation or checkpoints.
  """

  def __init__(self, log_dir: str, chief: bool, total_steps: int, batch_size: int):
    self.total_steps = total_steps
    self.batch_size = batch_size
    self.writers = {run: (tf.summary.create_file_writer(os.path.join(log_dir, run)) if chief
                          else tf.summary.create_noop_writer())
                    for run in ('train', 'validation')}
    self.start_epoch()

  def start_epoch(self):
    """Starts a new epoch's sums."""
    self.sums = np.zeros(len(metrics_lib.TRAINING_METRICS))
    self.steps = 0
    self.seconds = 0.0

  def add(self, sums: np.ndarray, num_steps: int, seconds: float):
    """Adds what ``Trainer.train_steps`` returned for ``num_steps`` steps in ``seconds``."""
    self.sums += sums
    self.steps += num_steps
    self.seconds += seconds

  def end_epoch(self, step: int, validation: dict[str, float], learning_rate: float):
    """Prints and logs the epoch that ended at ``step``, then starts the next."""
    train = dict(zip(metrics_lib.TRAINING_METRICS, (self.sums / self.steps).tolist()))
    windows_per_second = self.steps * self.batch_size / self.seconds
    shown = {'loss': train['loss'], 'pitch_nll': train['pitch_nll'],
             'val_pitch_accuracy': validation['pitch_accuracy'],
             'val_pitch_nll': validation['pitch_nll'], 'val_note_nll': validation['note_nll']}
    print(f'step {step}/{self.total_steps} '
          + ' '.join(f'{name}={value:.4f}' for name, value in shown.items())
          + f' ({windows_per_second:.0f} windows/s)', flush=True)
    train.update(learning_rate=learning_rate, windows_per_second=windows_per_second)
    for run, values in (('train', train), ('validation', validation)):
      with self.writers[run].as_default(step=step):
        for name, value in values.items():
          tf.summary.scalar(name, value)
      self.writers[run].flush()
    self.start_epoch()

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    for writer in self.writers.values():
      writer.close()
