"""tf.distribute for the trainer: the strategies, mixed precision and which process writes."""

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
  """Connects to the TPU named ``tpu`` and initialises it.

  ``tpu`` is 'local' on a TPU VM; '' reads $TPU_NAME. A clear ``StrategyError`` if none is
  reachable.
  """
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
  """The strategy's class name, by its public name where TensorFlow's class has another.

  ``tf.distribute.MultiWorkerMirroredStrategy`` is ``CollectiveAllReduceStrategy``.
  """
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
  """Whether this process writes the run's outputs: always, except on some workers of a cluster.

  On a multi-worker cluster, only the chief writes them (or worker 0 when TF_CONFIG names no
  chief).
  """
  resolver = getattr(strategy, 'cluster_resolver', None)
  if resolver is None or not resolver.task_type:
    return True
  if resolver.task_type == 'chief':
    return True
  return (resolver.task_type == 'worker' and resolver.task_id == 0
          and 'chief' not in resolver.cluster_spec().as_dict())

