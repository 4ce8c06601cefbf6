"""tf.distribute strategies for ``python -m kseg.train --strategy ...``.

``auto`` picks, in order: ``TPUStrategy`` when a TPU is reachable (``TPU_NAME`` set or a
TPU VM's ``/dev/accel0``), ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` lists more
than one task, ``MirroredStrategy`` for more than one GPU (or for ``--cpu-replicas N>1``),
otherwise the default (single-device) strategy.

``--cpu-replicas N`` splits the host CPU into N logical devices before TensorFlow
initialises, so the multi-replica code path (replica-split batches, gradient all-reduce,
synchronised BatchNorm, distributed evaluation) runs on a CPU-only machine; it is how the
tests check that N replicas reproduce one device.

The recipe's ``train.global_batch_size`` is the batch of one optimizer step over all
replicas (and all micro-batches of ``train.accumulate_steps``): each replica gets
``global / replicas`` samples; :func:`per_replica_batch` checks the division.
"""

from __future__ import annotations

import json
import logging
import os

log = logging.getLogger("kseg.train")

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")


class StrategyError(ValueError):
    """A strategy cannot be built here, or the batch does not split over its replicas."""


def configure_cpu_replicas(n: int) -> None:
    """Splits the (first) physical CPU into ``n`` logical devices.

    Must run before TensorFlow creates its context (before any op, dataset or model).
    Raises: StrategyError when TensorFlow is already initialised with another split.
    """
    import tensorflow as tf

    n = int(n)
    if n < 1:
        raise StrategyError(f"--cpu-replicas must be >= 1, got {n}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == n:
        return
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError as e:
        have = len(tf.config.list_logical_devices("CPU"))
        if have == n:
            return
        raise StrategyError(
            f"cannot split the CPU into {n} logical devices: TensorFlow is already initialised "
            f"with {have}. Configure --cpu-replicas before building any model or dataset."
        ) from e


def tf_config() -> dict:
    """The parsed ``TF_CONFIG`` environment variable ({} when unset)."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise StrategyError(f"TF_CONFIG is not valid JSON: {e}") from e


def _num_cluster_tasks(config: dict) -> int:
    cluster = config.get("cluster", {})
    return sum(len(cluster.get(k, [])) for k in ("chief", "worker"))


def _tpu_available() -> bool:
    return bool(os.environ.get("TPU_NAME")) or os.path.exists("/dev/accel0")


def resolve_strategy_name(name: str = "auto", cpu_replicas: int = 0) -> str:
    """The concrete strategy ``auto`` stands for on this machine (others pass through)."""
    import tensorflow as tf

    if name not in STRATEGIES:
        raise StrategyError(f"--strategy {name!r}: valid strategies are {', '.join(STRATEGIES)}")
    if name != "auto":
        return name
    if _tpu_available():
        return "tpu"
    if _num_cluster_tasks(tf_config()) > 1:
        return "multi_worker"
    if len(tf.config.list_physical_devices("GPU")) > 1 or int(cpu_replicas or 0) > 1:
        return "mirrored"
    return "default"


def build_strategy(name: str = "auto", cpu_replicas: int = 0):
    """Returns a ``tf.distribute.Strategy`` for ``--strategy name``.

    Args:
      name: auto | one_device | mirrored | multi_worker | tpu.
      cpu_replicas: >1 splits the CPU into that many logical devices first (mirrored /
        multi_worker replicas on a CPU-only machine); must be called before TF initialises.
    Raises: StrategyError for an unknown name, a TPU that is not there, or multi_worker
      without a TF_CONFIG cluster.
    """
    if cpu_replicas and int(cpu_replicas) > 1:
        configure_cpu_replicas(cpu_replicas)
    import tensorflow as tf

    resolved = resolve_strategy_name(name, cpu_replicas)
    # Listing logical devices initialises TensorFlow's context, after which collective ops
    # (MultiWorkerMirroredStrategy) and TPUs can no longer be configured: only look here.
    if resolved == "default":
        return tf.distribute.get_strategy()
    if resolved == "one_device":
        gpus = tf.config.list_physical_devices("GPU")
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if resolved == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            devices = [d.name for d in gpus]
        else:
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if resolved == "multi_worker":
        if _num_cluster_tasks(tf_config()) < 1:
            raise StrategyError("--strategy multi_worker needs TF_CONFIG with a cluster "
                                "(see README, 'Multi-host training')")
        comm = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.AUTO)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=comm)
    if resolved == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
                tpu=os.environ.get("TPU_NAME", "local"))
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, RuntimeError, tf.errors.OpError) as e:
            raise StrategyError(f"--strategy tpu: no TPU could be initialised ({e})") from e
        return tf.distribute.TPUStrategy(resolver)
    raise StrategyError(f"unknown strategy {resolved!r}")


def per_replica_batch(global_batch_size: int, num_replicas: int, accumulate_steps: int = 1) -> int:
    """Samples each replica processes per micro-batch: ``global / (replicas * accumulate)``.

    Raises: StrategyError naming the numbers and the fix when it does not divide.
    """
    global_batch_size, num_replicas = int(global_batch_size), int(num_replicas)
    accumulate_steps = int(accumulate_steps)
    parts = num_replicas * accumulate_steps
    if global_batch_size < parts or global_batch_size % parts:
        raise StrategyError(
            f"train.global_batch_size={global_batch_size} does not split into {num_replicas} "
            f"replica(s) x {accumulate_steps} accumulation step(s): it must be a multiple of "
            f"{parts}. Set train.global_batch_size to {max(parts, global_batch_size // parts * parts)}"
            f" or {(global_batch_size // parts + 1) * parts}."
        )
    return global_batch_size // parts


def is_chief(strategy=None) -> bool:
    """True on the task that writes checkpoints, summaries and evaluation files: the only
    task of a single-host run, the ``chief`` task of a cluster, or ``worker 0`` of a cluster
    without a chief."""
    resolver = getattr(strategy, "cluster_resolver", None) if strategy is not None else None
    if resolver is not None and getattr(resolver, "task_type", None) is not None:
        task_type, task_id = resolver.task_type, resolver.task_id
    else:
        task = tf_config().get("task")
        if not task:
            return True
        task_type, task_id = task.get("type"), task.get("index", 0)
    if task_type == "chief":
        return True
    has_chief = bool(tf_config().get("cluster", {}).get("chief"))
    return task_type == "worker" and int(task_id or 0) == 0 and not has_chief


def describe(strategy) -> str:
    """One line naming the strategy and its replica devices (for the run banner)."""
    name = type(strategy).__name__
    if name == "CollectiveAllReduceStrategy":  # what MultiWorkerMirroredStrategy() returns
        name = "MultiWorkerMirroredStrategy"
    if name == "_DefaultDistributionStrategy":
        return "single device"
    try:
        devices = strategy.extended.worker_devices or ()
    except (RuntimeError, AttributeError):
        devices = ()
    n = strategy.num_replicas_in_sync
    return f"{name} x{n}" + (f" ({', '.join(d.split('/')[-1] for d in devices)})" if devices else "")


def prebuild_for_fit(model, strategy, dataset):
    """Builds the compiled model's metrics and optimizer variables from a zero batch shaped
    like ``dataset.element_spec`` and makes ``fit`` skip its own symbolic build.

    Keras 3.15's ``fit`` under a strategy first reduces a *distributed* input batch with
    ``strategy.reduce("MEAN", batch)`` to build the model; MultiWorkerMirroredStrategy's
    cross-device ops reject that (``Attempt to convert a value (PerReplica ...)``,
    keras-team/keras#20585). A batch built from the element spec builds the same things.
    It must not be drawn from ``dataset``: every new iterator of a dataset that shuffles with
    ``reshuffle_each_iteration`` advances its shuffle seeds, so the workers would then train
    on other batches than a single process with the same seed.
    Needed for MultiWorkerMirroredStrategy; harmless for the others.
    """
    import tensorflow as tf

    def zeros(spec):
        return tf.zeros([1 if d is None else d for d in spec.shape], spec.dtype)

    batch = tf.nest.map_structure(zeros, dataset.element_spec)
    with strategy.scope():
        model._symbolic_build(data_batch=batch)
    object.__setattr__(model, "_maybe_symbolic_build", lambda iterator=None, data_batch=None: None)
    return model
