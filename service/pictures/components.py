"""Connected components of a binary mask, in numpy only (8-connected), computed on runs of pixels.

The one labelling of the service: the photo pipeline (``photo``: hysteresis, the digit's cluster)
and the number reader (``segment``: pieces of ink, groups, cuts) both use it.

Why not scipy or OpenCV: either would add ~150 MB to the image (and scipy.ndimage ~0.5 s to every
worker's start-up) for one function. A mask of a digit photo at working size holds a few thousand
horizontal runs; labelling the runs (overlapping runs in adjacent rows are joined, by vectorised
root hooking with pointer jumping) costs well under a millisecond there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Components", "label_runs"]


@dataclass(frozen=True)
class Components:
    """The runs of a mask and the component each belongs to.

    ``row[i]``, ``start[i]``, ``stop[i]`` (end-exclusive) describe run ``i``; ``label[i]`` is its
    component, numbered 0..count-1. Per-component statistics come from ``np.bincount`` over runs.
    """

    shape: tuple[int, int]
    row: np.ndarray
    start: np.ndarray
    stop: np.ndarray
    label: np.ndarray
    count: int

    def area(self) -> np.ndarray:
        """Pixels per component."""
        return np.bincount(self.label, weights=self.stop - self.start, minlength=self.count)

    def boxes(self) -> np.ndarray:
        """[count, 4] int boxes (top, bottom, left, right), end-exclusive."""
        out = np.empty((self.count, 4), np.int64)
        out[:, 0], out[:, 2] = self.shape[0], self.shape[1]
        out[:, 1] = out[:, 3] = 0
        np.minimum.at(out[:, 0], self.label, self.row)
        np.maximum.at(out[:, 1], self.label, self.row + 1)
        np.minimum.at(out[:, 2], self.label, self.start)
        np.maximum.at(out[:, 3], self.label, self.stop)
        return out

    def corners(self) -> np.ndarray:
        """[count, 4] int boxes as (x0, y0, x1, y1), end-exclusive: the order boxes are reported in."""
        return self.boxes()[:, [2, 0, 3, 1]]

    def label_image(self) -> np.ndarray:
        """int32 (H, W): 0 for background, ``label + 1`` on each component's pixels (numbered in raster
        order of their first pixel). For work that looks at windows of the picture (which pixels of a
        column belong to a group of components), where runs would have to be clipped one by one."""
        height, width = self.shape
        flat = np.zeros(height * (width + 1) + 1, np.int32)
        base = self.row * (width + 1)
        value = self.label.astype(np.int32) + 1
        # runs of a row are separated by at least one pixel, so no start shares a place with a stop
        flat[base + self.start] = value
        flat[base + self.stop] = -value
        return np.cumsum(flat[:-1], dtype=np.int32).reshape(height, width + 1)[:, :width]

    def label_at(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """The component of each given mask pixel (they must be set in the mask)."""
        width = self.shape[1] + 1
        keys = self.row * width + self.start
        runs = np.searchsorted(keys, ys * width + xs, side="right") - 1
        return self.label[runs]

    def mask(self, keep: np.ndarray) -> np.ndarray:
        """The mask of the components whose ``keep`` entry is true."""
        height, width = self.shape
        out = np.zeros(height * width, bool)
        out[self._pixels(keep[self.label])[0]] = True
        return out.reshape(height, width)

    def holding(self, pixels: np.ndarray) -> Components:
        """The components holding at least one of the set pixels of ``pixels`` (a bool image of this shape,
        set only on the mask's pixels): hysteresis, with the strong ink as ``pixels``. Found per pixel by
        a binary search in the runs (a few hundred strong pixels, not every weak one)."""
        held = np.flatnonzero(pixels)
        width = self.shape[1]
        return self.subset(np.bincount(self.label_at(held // width, held % width), minlength=self.count) > 0)

    def subset(self, keep: np.ndarray) -> Components:
        """The components whose ``keep`` entry is true, renumbered 0..n-1 in their order (the mask of
        the rest removed, without labelling again)."""
        runs = keep[self.label]
        renumber = np.cumsum(keep) - 1
        return Components(
            self.shape, self.row[runs], self.start[runs], self.stop[runs], renumber[self.label[runs]], int(keep.sum())
        )

    def run_sums(self, values: np.ndarray) -> np.ndarray:
        """The sum of ``values`` (an image of this shape) over each run: per-component totals are a
        ``np.bincount`` of these by ``label`` (the ink in a component, its strong pixels)."""
        index, run = self._pixels(np.ones(self.row.size, bool))
        return np.bincount(run, weights=values.ravel()[index], minlength=self.row.size)

    def _pixels(self, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flat indices of the pixels of the chosen runs, and the run each belongs to.

        Proportional to the ink, not the picture (a cumulative sum over every pixel cost more than the
        rest of the labelling).
        """
        runs = np.flatnonzero(chosen)
        lengths = self.stop[runs] - self.start[runs]
        first = self.row[runs] * self.shape[1] + self.start[runs]
        before = np.cumsum(lengths) - lengths
        index = np.arange(int(lengths.sum())) + np.repeat(first - before, lengths)
        return index, np.repeat(runs, lengths)


def label_runs(mask: np.ndarray) -> Components:
    """Label the 8-connected components of a 2-D bool mask."""
    height, width = mask.shape
    padded = np.zeros((height, width + 2), bool)
    padded[:, 1:-1] = mask
    change = padded[:, 1:] != padded[:, :-1]  # where a run starts, and one past where it ends (np.diff: 4x slower)
    # row-major: each row's starts and stops alternate (flatnonzero + divmod: 2-D nonzero is ~10x slower)
    rows, cols = np.divmod(np.flatnonzero(change), width + 1)
    rows, starts, stops = rows[0::2], cols[0::2], cols[1::2]
    count = rows.size
    if count == 0:
        empty = np.zeros(0, np.int64)
        return Components((height, width), empty, empty, empty, empty, 0)
    # Runs are in row-major order. For each run, the runs of the next row that touch it (8-connected:
    # overlapping or diagonally adjacent) are a contiguous range, found by binary search.
    key = width + 2
    start_keys = rows * key + starts
    stop_keys = rows * key + stops
    lo = np.searchsorted(stop_keys, (rows + 1) * key + starts, side="left")  # next-row runs ending at/after start
    hi = np.searchsorted(start_keys, (rows + 1) * key + stops, side="right")  # ... starting at/before stop
    spans = np.maximum(hi - lo, 0)
    upper = np.repeat(np.arange(count), spans)
    lower = (np.arange(spans.sum()) - np.repeat(np.cumsum(spans) - spans, spans)) + np.repeat(lo, spans)
    labels = np.arange(count)  # each run's parent; parents are always smaller, roots point at themselves
    while upper.size:
        # hook the larger root of every joined pair onto the smaller, then jump pointers to the roots:
        # a logarithmic number of rounds, whatever the shape
        root_upper, root_lower = labels[upper], labels[lower]
        apart = root_upper != root_lower
        if not apart.any():
            break
        root_upper, root_lower = root_upper[apart], root_lower[apart]
        upper, lower = upper[apart], lower[apart]
        np.minimum.at(labels, np.maximum(root_upper, root_lower), np.minimum(root_upper, root_lower))
        while True:
            jumped = labels[labels]
            if np.array_equal(jumped, labels):
                break
            labels = jumped
    # number the roots 0..n-1 in their order (what np.unique's inverse gives, without its sort)
    roots = labels == np.arange(count)
    dense = (np.cumsum(roots) - 1)[labels]
    return Components((height, width), rows, starts, stops, dense, int(np.count_nonzero(roots)))
