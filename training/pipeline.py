"""tf.data input pipelines, including the optional augmentation.

Augmentation runs here, on batches of training images, and never inside the model: the exported ONNX
graph must be the pure inference function [N, 784] -> [N, 10], identical to what the service runs.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from training.data import IMAGE_SIDE, NUM_CLASSES


def augmenter(seed: int) -> keras.Sequential:
    """Small random shifts (+-2 px), rotations (+-10 deg) and zoom (+-10 %), black fill.

    Mild on purpose: a 7 rotated by 30 degrees starts to look like a 1, and digits are centred by
    centre of mass in MNIST, so large shifts would teach the model positions it never sees.
    """
    return keras.Sequential(
        [
            keras.layers.RandomTranslation(0.07, 0.07, fill_mode="constant", seed=seed),
            keras.layers.RandomRotation(10 / 360, fill_mode="constant", seed=seed + 1),
            keras.layers.RandomZoom(0.1, fill_mode="constant", seed=seed + 2),
        ],
        name="augment",
    )


def one_hot(labels: np.ndarray) -> np.ndarray:
    return keras.utils.to_categorical(labels, NUM_CLASSES).astype(np.float32)


def _distribution_options() -> tf.data.Options:
    # Our data is in memory, not in files: shard by element when running on several workers.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options


def train_dataset(
    x: np.ndarray, y: np.ndarray, batch_size: int, *, seed: int, augment: bool
) -> tf.data.Dataset:
    """Shuffled, batched, optionally augmented training data. ``x`` is float32 [N, 784] in [0, 1]."""
    ds = tf.data.Dataset.from_tensor_slices((x, one_hot(y)))
    ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    if augment:
        layers = augmenter(seed)

        def _augment(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            images = tf.reshape(images, (-1, IMAGE_SIDE, IMAGE_SIDE, 1))
            images = tf.clip_by_value(layers(images, training=True), 0.0, 1.0)
            return tf.reshape(images, (-1, IMAGE_SIDE * IMAGE_SIDE)), labels

        ds = ds.map(_augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_distribution_options())


def eval_dataset(x: np.ndarray, y: np.ndarray, batch_size: int) -> tf.data.Dataset:
    ds = tf.data.Dataset.from_tensor_slices((x, one_hot(y))).batch(batch_size)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_distribution_options())
