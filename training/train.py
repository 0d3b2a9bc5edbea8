"""The training loop: seed, strategy, fit, evaluate. Everything here needs TensorFlow.

``train`` returns a plain (non-distributed) Keras model holding the trained weights, so export and
evaluation never depend on how training was distributed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from training import pipeline
from training.config import TrainConfig
from training.data import Dataset, preprocess
from training.distribute import make_strategy, patch_for_multi_worker
from training.model import build_model


@dataclass
class TrainResult:
    model: keras.Model  # plain, un-distributed; what gets exported
    history: dict[str, list[float]]
    epoch_seconds: list[float]
    replicas: int
    test_loss: float
    test_accuracy: float
    test_probabilities: np.ndarray  # float32 [N, 10], the Keras reference for the ONNX parity gate
    x_test: np.ndarray  # float32 [N, 784], preprocessed

    @property
    def epochs_run(self) -> int:
        return len(self.epoch_seconds)

    @property
    def seconds_per_epoch(self) -> float:
        return float(np.mean(self.epoch_seconds)) if self.epoch_seconds else 0.0


class EpochTimer(keras.callbacks.Callback):
    """Wall-clock seconds per epoch (including validation), for the summary and the model card."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def seed_everything(seed: int) -> None:
    """Same seed -> same weights, same shuffles, same augmentations -> same model (on CPU)."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def split_validation(x: np.ndarray, y: np.ndarray, fraction: float):
    """Hold out the last ``fraction`` of the training set, as Keras' ``validation_split`` does."""
    if not fraction:
        return (x, y), None
    cut = len(x) - max(1, int(round(len(x) * fraction)))
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])


def with_extra(
    x: np.ndarray, y: np.ndarray, extra: Sequence[tuple[np.ndarray, np.ndarray]], repeats: int
) -> tuple[np.ndarray, np.ndarray]:
    """The training rows plus every own picture ``repeats`` times (the shuffle mixes them in)."""
    if not extra or not any(len(ey) for _, ey in extra):
        return x, y
    xs = [x, *(np.repeat(ex, repeats, axis=0) for ex, _ in extra)]
    ys = [y, *(np.repeat(ey, repeats, axis=0) for _, ey in extra)]
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys)


def train(
    config: TrainConfig,
    dataset: Dataset,
    verbose: int = 2,
    *,
    extra: Sequence[tuple[np.ndarray, np.ndarray]] = (),
    repeats: int = 1,
    init_weights: list[np.ndarray] | None = None,
) -> TrainResult:
    """Fit on ``dataset`` (plus ``extra`` own pictures, float rows, each ``repeats`` times), starting
    from ``init_weights`` when fine-tuning."""
    strategy = make_strategy(config.distribute)  # first: multi-worker must start before other TF ops
    seed_everything(config.seed)
    replicas = strategy.num_replicas_in_sync
    global_batch = config.batch_size * replicas

    x_train, x_test = preprocess(dataset.x_train), preprocess(dataset.x_test)
    (x_fit, y_fit), validation = split_validation(x_train, dataset.y_train, config.validation_split)
    x_fit, y_fit = with_extra(x_fit, y_fit, extra, repeats)  # validation stays the dataset's own
    steps_per_epoch = -(-len(x_fit) // global_batch)
    train_ds = pipeline.train_dataset(x_fit, y_fit, global_batch, seed=config.seed, augment=config.augment)
    val_ds = pipeline.eval_dataset(*validation, global_batch) if validation else None

    timer = EpochTimer()
    callbacks: list[keras.callbacks.Callback] = [timer]
    if config.early_stopping is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss" if val_ds is not None else "loss",
                patience=config.early_stopping,
                restore_best_weights=True,
                verbose=1,
            )
        )
    with strategy.scope():  # variables are created on (mirrored across) every replica
        model = build_model(config, steps_per_epoch)
        if init_weights is not None:
            model.set_weights(init_weights)
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            patch_for_multi_worker(model)
        history = model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=config.epochs,
            callbacks=callbacks,
            shuffle=False,  # train_ds shuffles itself, reproducibly, from the seed
            verbose=verbose,
        )

    # Rebuild outside the strategy: export and evaluation see an ordinary single-device model.
    plain = build_model(config, steps_per_epoch)
    plain.set_weights(model.get_weights())
    test_loss, _ = plain.evaluate(x_test, pipeline.one_hot(dataset.y_test), batch_size=1000, verbose=0)
    probabilities = plain.predict(x_test, batch_size=1000, verbose=0).astype(np.float32)
    # Accuracy from the same argmax the service (and the ONNX check) uses.
    test_accuracy = float(np.mean(probabilities.argmax(axis=1) == dataset.y_test))
    return TrainResult(
        model=plain,
        history={k: [float(v) for v in vs] for k, vs in history.history.items()},
        epoch_seconds=timer.seconds,
        replicas=replicas,
        test_loss=float(test_loss),
        test_accuracy=test_accuracy,
        test_probabilities=probabilities,
        x_test=x_test,
    )
