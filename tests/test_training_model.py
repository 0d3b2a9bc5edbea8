"""Every CLI option reaches the Keras model: parse real argv, build the real model, inspect it.

No training here: ``build_model`` is the function the trainer uses, so what these tests see is what
gets trained.
"""

from __future__ import annotations

import shlex

import keras
import pytest

from training.cli import build_parser, config_from_args
from training.config import TrainConfig
from training.model import build_model


def model_for(*argv: str, steps_per_epoch: int = 100) -> keras.Model:
    return build_model(config_for(*argv), steps_per_epoch)


def config_for(*argv: str) -> TrainConfig:
    return config_from_args(build_parser().parse_args(["train", *argv]))


def dense_layers(model: keras.Model) -> list[keras.layers.Dense]:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]


def test_default_is_the_design_recipe():
    config = config_for()
    assert (config.epochs, config.batch_size, config.lr_schedule) == (10, 32, "constant")
    model = build_model(config)
    dense = dense_layers(model)
    assert [d.units for d in dense] == [32, 64, 10]
    assert [d.activation.__name__ for d in dense] == ["relu", "relu", "softmax"]
    assert model.input_shape == (None, 784) and model.output_shape == (None, 10)
    assert len(model.layers) == 3  # nothing but the three Dense layers
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3)
    assert model.loss == "categorical_crossentropy"
    assert all(d.kernel_regularizer is None for d in dense)


def test_hidden_sizes():
    assert [d.units for d in dense_layers(model_for("--hidden", "16,8"))] == [16, 8, 10]
    assert [d.units for d in dense_layers(model_for("--hidden", "128"))] == [128, 10]


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "gelu"])
def test_activation(activation):
    hidden = dense_layers(model_for("--activation", activation))[:-1]
    assert {d.activation.__name__ for d in hidden} == {activation}


def test_momentum_is_sgd_with_momentum_0_9_by_default():
    optimizer = model_for("--optimizer", "momentum").optimizer
    assert type(optimizer) is keras.optimizers.SGD and optimizer.momentum == pytest.approx(0.9)
    assert model_for("--optimizer", "momentum", "--momentum", "0.5").optimizer.momentum == pytest.approx(0.5)
    assert model_for("--optimizer", "sgd").optimizer.momentum == 0.0


@pytest.mark.parametrize(
    ("name", "cls"),
    [("sgd", keras.optimizers.SGD), ("rmsprop", keras.optimizers.RMSprop), ("adam", keras.optimizers.Adam)],
)
def test_optimizer_and_learning_rate(name, cls):
    optimizer = model_for("--optimizer", name, "--learning-rate", "0.05").optimizer
    assert type(optimizer) is cls
    assert float(optimizer.learning_rate) == pytest.approx(0.05)


@pytest.mark.parametrize(
    ("schedule", "cls"),
    [
        ("cosine", keras.optimizers.schedules.CosineDecay),
        ("exponential", keras.optimizers.schedules.ExponentialDecay),
        ("step", keras.optimizers.schedules.PiecewiseConstantDecay),
    ],
)
def test_lr_schedule_decays_over_the_whole_run(schedule, cls):
    model = model_for(
        "--lr-schedule", schedule, "--learning-rate", "0.01", "--epochs", "5", steps_per_epoch=100
    )
    lr = model.optimizer._learning_rate
    assert isinstance(lr, cls)
    assert float(lr(0)) == pytest.approx(0.01)
    assert float(lr(500)) <= 0.01 / 99  # 5 epochs x 100 steps: fully decayed at the end


def test_regularizers():
    dense = dense_layers(model_for("--l2", "1e-4"))
    assert all(d.kernel_regularizer is not None for d in dense)
    assert dense[0].kernel_regularizer.l2 == pytest.approx(1e-4) and dense[0].kernel_regularizer.l1 == 0.0
    l1 = dense_layers(model_for("--l1", "1e-5"))[0].kernel_regularizer
    assert l1.l1 == pytest.approx(1e-5) and l1.l2 == 0.0


def test_loss_and_dropout():
    model = model_for("--loss", "mse", "--dropout", "0.2")
    assert model.loss == "mse"
    dropouts = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert [d.rate for d in dropouts] == [0.2, 0.2]


def test_augment_never_enters_the_model():
    config = config_for("--augment")
    assert config.augment is True
    model = build_model(config)
    assert [type(layer) for layer in model.layers] == [keras.layers.Dense] * 3


def test_training_options_reach_the_config():
    config = config_for(
        *shlex.split("--epochs 7 --batch-size 64 --validation-split 0.1 --early-stopping 3 --seed 5"),
        *shlex.split("--distribute mirrored --cpu-devices 2 --dataset fashion-mnist"),
    )
    assert (config.epochs, config.batch_size, config.validation_split) == (7, 64, 0.1)
    assert (config.early_stopping, config.seed) == (3, 5)
    assert (config.distribute, config.cpu_devices, config.dataset) == ("mirrored", 2, "fashion-mnist")
    assert config.as_dict()["hidden"] == [32, 64]


@pytest.mark.parametrize(
    "bad",
    [["--hidden", "32,x"], ["--hidden", "0"], ["--validation-split", "1.5"], ["--optimizer", "adagrad"]],
)
def test_bad_options_are_usage_errors(bad, capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["train", *bad])
    assert info.value.code == 2
