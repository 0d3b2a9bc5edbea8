"""Distribution strategies: one process (default), all local devices, or a cluster of workers.

``--distribute mirrored``
    ``tf.distribute.MirroredStrategy`` over every local GPU: each replica gets ``--batch-size``
    examples, so the global batch is ``batch_size x replicas``, and gradients are all-reduced every
    step. Without GPUs, ``--cpu-devices N`` (or ``$TRAIN_CPU_DEVICES``) splits the CPU into N logical
    devices and mirrors over those -- slower than one device, but it exercises the exact same code path,
    which is how the tests check it on a CPU-only machine.

``--distribute multi-worker``
    ``tf.distribute.MultiWorkerMirroredStrategy``, configured by the standard ``TF_CONFIG``
    environment variable. Start the same command on every machine, each with its own task index::

        # on host-a (the chief: it alone exports and publishes the model)
        TF_CONFIG='{"cluster": {"worker": ["host-a:12345", "host-b:12345"]},
                    "task": {"type": "worker", "index": 0}}' \\
            python -m training train --distribute multi-worker --data /data/mnist --repository /shared/models

        # on host-b
        TF_CONFIG='{"cluster": {"worker": ["host-a:12345", "host-b:12345"]},
                    "task": {"type": "worker", "index": 1}}' \\
            python -m training train --distribute multi-worker --data /data/mnist --repository /shared/models

    Every worker needs the same data and options (each reads its shard of every batch); the ports must
    be reachable between the hosts. Worker 0 is the chief and publishes; the others write their report
    to a temporary folder, delete it and exit 0. The global batch is ``batch_size x total replicas``.
    Keras 3's ``fit`` needs two small workarounds under this strategy; see ``patch_for_multi_worker``.

TensorFlow is imported lazily: ``configure_cpu_devices`` must run before TensorFlow initialises its
devices, and ``promote``/``rollback`` must not pay for importing it at all.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras
    import tensorflow as tf


def configure_cpu_devices(count: int) -> None:
    """Split the (first) physical CPU into ``count`` logical devices. Call before any TF op runs."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
    )


def is_chief() -> bool:
    """True for a single process, the "chief" task, or worker 0 of a chief-less cluster."""
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = config.get("task") or {}
    if not task:
        return True
    if "chief" in config.get("cluster", {}):
        return task.get("type") == "chief"
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0


def make_strategy(kind: str) -> tf.distribute.Strategy:
    """The strategy for ``--distribute``; the default (no-op) strategy for "none"."""
    import tensorflow as tf

    if kind == "none":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus or tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if kind == "multi-worker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError("--distribute multi-worker needs the TF_CONFIG environment variable")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown distribution strategy {kind!r}")


def patch_for_multi_worker(model: keras.Model) -> None:
    """Make Keras 3 ``fit`` work under MultiWorkerMirroredStrategy (call ``fit`` inside its scope).

    Two Keras 3 bugs (keras-team/keras#20585) break ``fit`` across workers, both in how it combines
    values from the replicas for logging, never in the gradient all-reduce itself:

    1. ``fit`` starts with an eager "symbolic build" that all-reduces a whole nested batch, which the
       cross-worker collectives reject. Clearing the model's recorded strategy skips it; building then
       happens in the traced train step, and ``fit`` takes the strategy from ``strategy.scope()``.
    2. The per-step logs (each replica's running loss/accuracy) are combined with
       ``reduce("MEAN", axis=0)``, which fails on scalars. Returning them as 1-element vectors makes
       that reduce a plain cross-replica mean, so every worker logs -- and early stopping compares --
       the same numbers.
    """
    import tensorflow as tf

    def as_vectors(step):
        def wrapped(data):
            return {key: tf.reshape(value, [1]) for key, value in step(data).items()}

        return wrapped

    model._distribute_strategy = None
    model.train_step = as_vectors(model.train_step)
    model.test_step = as_vectors(model.test_step)
