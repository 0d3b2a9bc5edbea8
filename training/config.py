"""Every training option in one dataclass, so the CLI, the model builder and the model card agree.

The defaults are the design's recipe exactly: 784 -> Dense 32 relu -> Dense 64 relu -> Dense 10 softmax,
Adam, categorical cross-entropy, 10 epochs, batch 32. No TensorFlow here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu")
OPTIMIZERS = ("sgd", "momentum", "rmsprop", "adam")
LR_SCHEDULES = ("constant", "cosine", "exponential", "step")
LOSSES = ("categorical_crossentropy", "mse")
DISTRIBUTE = ("none", "mirrored", "multi-worker")


@dataclass
class TrainConfig:
    dataset: str = "mnist"
    data: str | None = None
    hidden: tuple[int, ...] = (32, 64)
    activation: str = "relu"
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.9
    lr_schedule: str = "constant"
    loss: str = "categorical_crossentropy"
    l1: float = 0.0
    l2: float = 0.0
    dropout: float = 0.0
    deskew: bool = False  # shear each digit upright inside the model (training/deskew.py)
    epochs: int = 10
    batch_size: int = 32  # per replica; the global batch is this times the number of replicas
    validation_split: float = 0.0
    early_stopping: int | None = None
    augment: bool = False
    seed: int = 42
    limit_train: int | None = None
    limit_test: int | None = None
    distribute: str = "none"
    cpu_devices: int | None = None
    extra_data: tuple[str, ...] = ()  # folders of own labelled pictures, one sub-folder per class
    holdout: float = 0.2  # share of each extra folder held out for evaluation (by sha256)
    oversample: int | None = None  # repeats of each own picture per epoch; None = about 1/10 of the data
    init_from: str | None = None  # a published version folder whose weights training starts from

    def as_dict(self) -> dict:
        """JSON-ready options for the model card (tuples become lists)."""
        options = asdict(self)
        options["hidden"] = list(self.hidden)
        options["extra_data"] = list(self.extra_data)
        return options
