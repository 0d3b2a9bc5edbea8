"""Build and compile the MLP from a ``TrainConfig``.

Kept free of data and training-loop concerns so tests can check that every CLI option really reaches
the model (layer sizes, activation, optimizer, schedule, regularizers) without training anything.
Augmentation deliberately does not appear here: it lives in the input pipeline (``pipeline.py``) so the
exported model is exactly the inference graph.
"""

from __future__ import annotations

import keras

from service.contract import FEATURES, INPUT_NAME, NUM_CLASSES, OUTPUT_NAME
from training.config import TrainConfig
from training.deskew import TRAINING_JITTER, Deskew

INPUT_DIM = FEATURES


def make_learning_rate(
    config: TrainConfig, steps_per_epoch: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """A constant rate, or a schedule that decays over the whole run (all decay by ~100x at the end)."""
    lr = config.learning_rate
    total_steps = max(1, config.epochs * steps_per_epoch)
    schedules = keras.optimizers.schedules
    if config.lr_schedule == "constant":
        return lr
    if config.lr_schedule == "cosine":
        return schedules.CosineDecay(lr, decay_steps=total_steps, alpha=0.0)
    if config.lr_schedule == "exponential":
        return schedules.ExponentialDecay(lr, decay_steps=total_steps, decay_rate=0.01)
    if config.lr_schedule == "step":  # the classic: divide by 10 at 50 % and again at 75 % of training
        boundaries = [max(1, total_steps // 2), max(2, total_steps * 3 // 4)]
        return schedules.PiecewiseConstantDecay(boundaries, [lr, lr / 10, lr / 100])
    raise ValueError(f"unknown learning-rate schedule {config.lr_schedule!r}")


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    lr = make_learning_rate(config, steps_per_epoch)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=lr)
    if config.optimizer == "momentum":
        return keras.optimizers.SGD(learning_rate=lr, momentum=config.momentum)
    if config.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=lr)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=lr)
    raise ValueError(f"unknown optimizer {config.optimizer!r}")


def build_model(config: TrainConfig, steps_per_epoch: int = 1) -> keras.Model:
    """784 -> (deskew) -> hidden layers -> 10 softmax, compiled. ``steps_per_epoch`` only sizes LR schedules."""
    regularizer = None
    if config.l1 or config.l2:
        regularizer = keras.regularizers.L1L2(l1=config.l1, l2=config.l2)
    layers: list[keras.layers.Layer] = [keras.Input(shape=(INPUT_DIM,), name=INPUT_NAME)]
    if config.deskew:  # no weights: a fixed function of the picture, exported in front of the Dense stack
        layers.append(Deskew(jitter=TRAINING_JITTER, seed=config.seed))
    for i, units in enumerate(config.hidden, start=1):
        layers.append(
            keras.layers.Dense(
                units, activation=config.activation, kernel_regularizer=regularizer, name=f"dense_{i}"
            )
        )
        if config.dropout:
            layers.append(keras.layers.Dropout(config.dropout, name=f"dropout_{i}"))
    output = keras.layers.Dense(NUM_CLASSES, "softmax", kernel_regularizer=regularizer, name=OUTPUT_NAME)
    layers.append(output)
    model = keras.Sequential(layers, name="mnist_mlp")
    model.compile(
        optimizer=make_optimizer(config, steps_per_epoch),
        loss=config.loss,
        metrics=["accuracy"],
    )
    return model
