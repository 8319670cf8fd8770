"""tf.distribute for the trainer: the strategies, mixed precision, which process writes, and
the workarounds that let Keras 3.15's ``fit`` train correctly under a strategy."""

from __future__ import annotations

import contextlib
import os
import typing

import keras
import tensorflow as tf

from trainer import config as config_lib

POLICIES = {'none': 'float32', 'float16': 'mixed_float16', 'bfloat16': 'mixed_bfloat16'}


class StrategyError(RuntimeError):
  """The configured strategy cannot run here (no TPU reachable, a bad TF_CONFIG...)."""


def make_strategy(runtime: config_lib.RuntimeConfig) -> tf.distribute.Strategy:
  """The ``tf.distribute`` strategy that ``runtime.strategy`` names."""
  if runtime.strategy == 'default':
    return tf.distribute.get_strategy()
  if runtime.strategy == 'one_device':
    return tf.distribute.OneDeviceStrategy(runtime.device)
  if runtime.strategy == 'mirrored':
    # Every GPU; on a machine without one, every logical CPU device (one unless configured).
    devices = tf.config.list_logical_devices('GPU') or tf.config.list_logical_devices('CPU')
    return tf.distribute.MirroredStrategy([device.name for device in devices])
  if runtime.strategy == 'multi_worker':
    try:
      return tf.distribute.MultiWorkerMirroredStrategy()
    except (ValueError, KeyError) as e:
      raise StrategyError(f'runtime.strategy=multi_worker: bad TF_CONFIG '
                          f'{os.environ.get("TF_CONFIG")!r}: {e}') from e
  if runtime.strategy == 'tpu':
    return _tpu_strategy(runtime.tpu)
  raise ValueError(f'unknown runtime.strategy {runtime.strategy!r}; expected one of '
                   f'{", ".join(typing.get_args(config_lib.Strategy))}')


def _tpu_strategy(tpu: str) -> tf.distribute.TPUStrategy:
  """Connects to the TPU named ``tpu`` ('local' on a TPU VM; '' reads $TPU_NAME) and
  initialises it; a clear ``StrategyError`` if none is reachable."""
  where = repr(tpu) if tpu else f"$TPU_NAME ({os.environ.get('TPU_NAME', 'not set')})"
  try:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or None)
    if tpu != 'local':
      tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
  except (ValueError, tf.errors.OpError) as e:
    reason = (str(e).strip().splitlines() or [''])[0]  # TF's op errors run to many lines
    raise StrategyError(
        f'runtime.strategy=tpu: no TPU reachable at runtime.tpu={where} '
        f'({type(e).__name__}: {reason}). On a TPU VM set runtime.tpu=local; otherwise give '
        'the TPU\'s name or grpc:// address.') from e
  return tf.distribute.TPUStrategy(resolver)


def strategy_name(strategy: tf.distribute.Strategy) -> str:
  """The strategy's class name, by its public name where TensorFlow's class has another
  (``tf.distribute.MultiWorkerMirroredStrategy`` is ``CollectiveAllReduceStrategy``)."""
  if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return 'MultiWorkerMirroredStrategy'
  return type(strategy).__name__


def mixed_precision_policy(runtime: config_lib.RuntimeConfig,
                           strategy: tf.distribute.Strategy) -> str:
  """The Keras dtype policy for ``runtime.mixed_precision``.

  ``auto`` is bfloat16 on a TPU (its native 16-bit type), float16 on a GPU (tensor cores on
  every generation since Volta, with loss scaling) and float32 on a CPU, where 16-bit types
  bring no speed.
  """
  choice = runtime.mixed_precision
  if choice == 'auto':
    if isinstance(strategy, tf.distribute.TPUStrategy):
      choice = 'bfloat16'
    elif tf.config.list_logical_devices('GPU'):
      choice = 'float16'
    else:
      choice = 'none'
  return POLICIES[choice]


@contextlib.contextmanager
def global_dtype_policy(name: str):
  """Sets Keras' global dtype policy for the block; the previous one afterwards."""
  previous = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(name)
  try:
    yield
  finally:
    keras.mixed_precision.set_global_policy(previous)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """Whether this process writes the run's outputs: always, except on a multi-worker
  cluster's workers other than the chief (or worker 0 when TF_CONFIG names no chief)."""
  resolver = getattr(strategy, 'cluster_resolver', None)
  if resolver is None or not resolver.task_type:
    return True
  if resolver.task_type == 'chief':
    return True
  return (resolver.task_type == 'worker' and resolver.task_id == 0
          and 'chief' not in resolver.cluster_spec().as_dict())


def build_for_fit(model: keras.Model, batch_spec) -> None:
  """Builds what ``fit`` would build from its first batch (the compiled losses and metrics and
  the optimizer) from ``batch_spec``, the ``(inputs, targets)`` element spec, without data.

  Call it in the strategy's scope; it is what lets :func:`keras_distributed_fit` skip Keras' own
  build.
  """
  # Keras' own build routine, given shapes instead of a batch (it only reads their shapes and
  # dtypes); Keras has no public equivalent.
  model._symbolic_build(data_batch=batch_spec)  # pylint: disable=protected-access
  unbuilt = [name for name, part in (('model', model), ('optimizer', model.optimizer),
                                     ('losses', model._compile_loss),  # pylint: disable=protected-access
                                     ('metrics', model._compile_metrics))  # pylint: disable=protected-access
             if part is not None and not part.built]
  if unbuilt:
    raise RuntimeError(f'build_for_fit left unbuilt: {", ".join(unbuilt)}')


@contextlib.contextmanager
def keras_distributed_fit(model: keras.Model, strategy: tf.distribute.Strategy):
  """Within the block, ``model.fit`` (with the validation it runs) works around two bugs of
  Keras 3.15's TensorFlow trainer under ``tf.distribute``; needs :func:`build_for_fit` first.

  1. For a model created in a strategy's scope, ``fit`` and ``evaluate`` begin with
     ``_maybe_symbolic_build``: it opens an iterator over the dataset, draws one batch,
     ``strategy.reduce('MEAN', batch)``s it, builds whatever is unbuilt from that batch's
     shapes, and throws the iterator away; training then opens a second iterator.

     * ``MultiWorkerMirroredStrategy`` cannot reduce a nested value (``Strategy.reduce``:
       "TODO: support value being a nest"), and every ``(inputs, targets)`` batch is one, so
       ``fit`` fails before its first step ("unsupported type (dict)"; tuples fail the same
       way). keras-team/keras#20585.
     * The training input reshuffles on every iteration, so the second iterator yields another
       permutation than the first would have: a ``MirroredStrategy`` run trained on other
       windows than a one-device run with the same seed (which skips this build) and their
       weights differed by up to 5e-3 after 2 steps, while one step on the same batch agrees to
       3e-8.

     After :func:`build_for_fit` that routine has nothing left to build, so skipping it
     changes nothing else.

  2. Under ``MultiWorkerMirroredStrategy`` with several workers, every step reduces its logs
     (the per-replica loss and metric values, all scalars) with ``strategy.reduce('MEAN', v,
     axis=0)``, which fails on a scalar: "Invalid reduction dimension 0 for input with 0
     dimensions" (tensorflow/tensorflow#72388). Returning each value with shape ``[1]`` from
     the step makes that the mean over workers that Keras means (a sum over axis 0 of one
     value, divided by the number of replicas), and the reduction gives back a scalar.

  Each fix is an attribute of the model instance shadowing Keras' method, removed when the block
  ends (so the export sees the plain model); ``train_step`` and ``test_step`` are Keras'
  documented places to customise ``fit``. The tests that catch a Keras upgrade changing this:
  ``test_fit_trains_on_the_first_batch_under_a_strategy``, the mirrored-versus-one-device and
  the two-worker tests in tests/test_trainer_distributed.py.
  """
  shadowed = []

  def shadow(name, value):
    if hasattr(type(model), name):  # another Keras may lack the method: then nothing to do
      setattr(model, name, value)
      shadowed.append(name)

  shadow('_maybe_symbolic_build', lambda iterator=None, data_batch=None: None)
  if (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
      and strategy.extended._in_multi_worker_mode()):  # pylint: disable=protected-access
    def rank_one_logs(step):
      def wrapped(data):
        return tf.nest.map_structure(
            lambda value: tf.reshape(value, [1]) if value.shape.rank == 0 else value,
            step(data))
      return wrapped
    shadow('train_step', rank_one_logs(model.train_step))
    shadow('test_step', rank_one_logs(model.test_step))
  try:
    yield
  finally:
    for name in shadowed:
      delattr(model, name)
