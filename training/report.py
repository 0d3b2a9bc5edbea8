"""What a training run tells a human: metrics.json, two PNGs and a summary table on stdout.

Plots are rendered to PNG bytes (matplotlib's Agg backend, no display needed) rather than written
straight to disk, so publishing can place them atomically alongside the model.
"""

from __future__ import annotations

import io
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

from service.contract import NUM_CLASSES  # noqa: E402


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """counts[true, predicted]."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (y_true, y_pred), 1)
    return counts


def per_class_accuracy(matrix: np.ndarray, labels: list[str]) -> dict[str, float]:
    totals = matrix.sum(axis=1)
    return {label: float(matrix[i, i] / totals[i]) if totals[i] else 0.0 for i, label in enumerate(labels)}


def metrics(
    history: dict[str, list[float]],
    epoch_seconds: list[float],
    test_loss: float,
    test_accuracy: float,
    matrix: np.ndarray,
    labels: list[str],
) -> dict:
    """The full numeric record of a run (metrics.json)."""
    return {
        "test_accuracy": test_accuracy,
        "test_loss": test_loss,
        "per_class_accuracy": per_class_accuracy(matrix, labels),
        "confusion_matrix": {"labels": labels, "rows_true_columns_predicted": matrix.tolist()},
        "epoch_seconds": epoch_seconds,
        "seconds_per_epoch": float(np.mean(epoch_seconds)) if epoch_seconds else 0.0,
        "history": history,
    }


def metrics_json(data: dict) -> bytes:
    return json.dumps(data, indent=2).encode() + b"\n"


def _png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def learning_curves_png(history: dict[str, list[float]], title: str) -> bytes:
    """Loss and accuracy per epoch, training vs validation when there is one."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        epochs = np.arange(1, len(history.get(metric, [])) + 1)
        ax.plot(epochs, history.get(metric, []), marker="o", label="train")
        if f"val_{metric}" in history:
            ax.plot(epochs, history[f"val_{metric}"], marker="o", label="validation")
        ax.set(xlabel="epoch", ylabel=metric, title=metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return _png(fig)


def confusion_matrix_png(matrix: np.ndarray, labels: list[str], title: str) -> bytes:
    fig, ax = plt.subplots(figsize=(8, 7))
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax)
    ax.set(
        xticks=range(len(labels)), yticks=range(len(labels)), xlabel="predicted", ylabel="true", title=title
    )
    ax.set_xticklabels(labels, rotation=45, ha="right")
    ax.set_yticklabels(labels)
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(
            j,
            i,
            str(count),
            ha="center",
            va="center",
            fontsize=7,
            color="white" if count > threshold else "black",
        )
    return _png(fig)


def summary_table(data: dict, labels: list[str]) -> str:
    """The plain-text summary printed at the end of ``train``."""
    rows = [
        ("test accuracy", f"{data['test_accuracy']:.4f}"),
        ("test loss", f"{data['test_loss']:.4f}"),
        ("epochs run", str(len(data["epoch_seconds"]))),
        ("seconds / epoch", f"{data['seconds_per_epoch']:.2f}"),
    ]
    rows += [(f"accuracy [{label}]", f"{data['per_class_accuracy'][label]:.4f}") for label in labels]
    width = max(len(name) for name, _ in rows)
    rule = "-" * (width + 12)
    lines = [rule, *(f"{name:<{width}}  {value:>8}" for name, value in rows), rule]
    return "\n".join(lines)
