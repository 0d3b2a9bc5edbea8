"""Photos classified as a few shifted copies, their answers averaged (test-time augmentation).

Why: a photographed digit comes out of the photo path (``normalise._fill_from_photo``) a pixel or so
off where MNIST would have put it, and thinner or broken where the pencil eased (a 9's loop half gone,
a 7's bar faint): the model's answer for such a digit changes with a one-pixel shift. /read already
classifies each digit as ``variants.READ_SHIFTS`` shifted copies and averages the answers
(``variants.averaged``: a renormalised geometric mean); the single-digit path does the same for the
pictures that took the photo path, and only for them -- a clean 28x28 PNG, a drawing from our page
and a raw tensor are classified once, as before -- and only when the model is unsure of the photo
(``DOUBTFUL``): a confident answer costs nothing more than before (a second onnxruntime call of
nine rows for a doubtful one, ~0.1-0.3 ms). Measured with ``bench.fieldaccuracy`` (which runs
this module too): see ``tests/test_field_pictures.py`` and bench/RESULTS.md.

The flags travel with the batch (``PictureBatch``: an ndarray that knows which of its rows are
photos), so every route that turns pictures into a batch with ``DataPlane.images_to_batch`` and runs
it with ``DataPlane.infer`` -- simple API, fast lane, V2, TF-Serving, gRPC -- gives a photo the same
answer. A slice or a copy of the batch is a plain array again (no flags: classified once).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .variants import READ_SHIFTS, averaged, shifted

__all__ = ["DOUBTFUL", "PictureBatch", "classify", "marked", "photos_of"]

#: A photo whose top probability is under this is classified again as shifted copies. On
#: bench.fieldaccuracy seed 51 (1,200 photos) 80 photos are under 0.9, and the copies of those alone
#: gave the same 1,157 right answers as copies of all 1,199 photos (1,149 once); under 0.99: 184,
#: the same 1,157. A sure answer is seldom changed by a one-pixel shift, and it costs no second call.
DOUBTFUL = 0.9


class PictureBatch(np.ndarray):
    """A float32 [N, 784] batch of normalised pictures with ``photos`` (bool [N]): which rows took the
    photo path. Only the batch itself carries the flags; views derived from it do not."""

    photos: np.ndarray


def marked(rows: np.ndarray, photos: np.ndarray) -> np.ndarray:
    """``rows`` flagged with ``photos`` (bool [N]); the plain array when no row is a photo."""
    if not photos.any():
        return rows
    batch = rows.view(PictureBatch)
    batch.photos = photos
    return batch


def photos_of(batch: np.ndarray) -> np.ndarray | None:
    """The photo flags of a ``marked`` batch, else None (a raw tensor, a batch without photos)."""
    return getattr(batch, "photos", None) if isinstance(batch, PictureBatch) else None


def classify(run: Callable[[np.ndarray], np.ndarray], rows: np.ndarray, photos: np.ndarray,
             limit: int) -> np.ndarray:
    """Probabilities [N, C] for ``rows`` [N, 784]: every row classified once; the photo rows the model
    is not sure of (top probability under ``DOUBTFUL``) classified again as ``READ_SHIFTS`` copies,
    whose averaged answer replaces the first. ``run`` classifies a batch; it is called on slices of at
    most ``limit`` rows (the copies are our own multiplication, not the client's items)."""
    rows = np.asarray(rows)
    probabilities = _in_slices(run, rows, limit)
    doubtful = photos & (probabilities.max(axis=1) < DOUBTFUL)
    if doubtful.any():
        copies = _in_slices(run, shifted(rows[doubtful], READ_SHIFTS), limit)
        probabilities[doubtful] = averaged(copies, len(READ_SHIFTS))
    return probabilities


def _in_slices(run: Callable[[np.ndarray], np.ndarray], rows: np.ndarray, limit: int) -> np.ndarray:
    step = max(1, limit)
    if len(rows) <= step:
        return np.array(run(rows), dtype=np.float32)  # a copy: the runtime's buffer is not ours to write
    return np.concatenate([run(rows[at:at + step]) for at in range(0, len(rows), step)]).astype(np.float32)
