"""Self-supervised training of an evaluation feature network: SimCLR's contrastive loss on augmented views.

Why: a classifier trained on the labels of a small colour folder (a few thousand images, a handful of classes)
learns just enough to tell the classes apart, by colour and layout, and maps a collapsed generator's checkerboards
close to real images (precision 0.80 of such a sample, seen on a 1,287-image folder). A network trained to tell
every image from every other one, whatever its crop, flip, brightness, contrast, saturation and hue (Chen et al.
2020, "A Simple Framework for Contrastive Learning of Visual Representations"), must describe the content of each
image, so noise, flat colours, textures and repeated images land far from real ones. It needs no labels; where there
are labels, a cross-entropy term on the same features trains the class logits that label accuracy is read from.

Augmentation (`augment`): per image, a random crop of 50-100% of the area at aspect ratio 3/4-4/3 resized back, a
horizontal flip (p 0.5), brightness +-0.3, contrast and saturation x0.6-1.4, a hue rotation of up to +-0.1 turn
(p 0.8 for the colour changes together), greyscale (p 0.2). Randomness is a function of (seed, step), so a training
run repeats.

Loss (`nt_xent`): for 2B views of B images, the cross-entropy of each view's cosine similarities (temperature
TEMPERATURE) to the 2B - 1 others, the other view of its own image being the target.
"""

import math
from typing import Tuple

import keras
import numpy as np
import tensorflow as tf

TEMPERATURE = 0.2
PROJECTION_DIM = 64
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ).astype(np.float32)


def _uniform(shape, seed, index: int, low: float, high: float) -> tf.Tensor:
  return tf.random.stateless_uniform(shape, seed=tf.stack([seed[0], seed[1] * 16 + index]), minval=low, maxval=high)


def augment(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """One random view of each image.

  Args:
    images: float32 [B, H, W, C] in [-1, 1], C 1 or 3.
    seed: int32 or int64 [2]: the view's randomness (e.g. (run seed, 2 * step + view)).

  Returns:
    float32 [B, H, W, C] in [-1, 1].
  """
  images = tf.convert_to_tensor(images, tf.float32)
  seed = tf.cast(seed, tf.int64)
  batch = tf.shape(images)[0]
  height, width, channels = images.shape[1], images.shape[2], images.shape[3]
  # Crop: area share and log aspect ratio, then a position where the box fits.
  area = _uniform([batch], seed, 0, 0.5, 1.0)
  ratio = tf.exp(_uniform([batch], seed, 1, math.log(3 / 4), math.log(4 / 3)))
  box_h = tf.minimum(tf.sqrt(area / ratio), 1.0)
  box_w = tf.minimum(tf.sqrt(area * ratio), 1.0)
  top = _uniform([batch], seed, 2, 0.0, 1.0) * (1.0 - box_h)
  left = _uniform([batch], seed, 3, 0.0, 1.0) * (1.0 - box_w)
  boxes = tf.stack([top, left, top + box_h, left + box_w], axis=1)
  x = tf.image.crop_and_resize(images, boxes, tf.range(batch), (height, width))
  flip = _uniform([batch, 1, 1, 1], seed, 4, 0.0, 1.0) < 0.5
  x = tf.where(flip, tf.reverse(x, axis=[2]), x)
  x = (x + 1.0) / 2.0  # [0, 1] for the colour changes.
  jitter = _uniform([batch, 1, 1, 1], seed, 5, 0.0, 1.0) < 0.8
  changed = x + _uniform([batch, 1, 1, 1], seed, 6, -0.3, 0.3)
  mean = tf.reduce_mean(changed, axis=[1, 2, 3], keepdims=True)
  changed = (changed - mean) * _uniform([batch, 1, 1, 1], seed, 7, 0.6, 1.4) + mean
  if channels == 3:
    grey = tf.reduce_sum(changed * _RGB_TO_YIQ[0], axis=-1, keepdims=True)
    changed = grey + (changed - grey) * _uniform([batch, 1, 1, 1], seed, 8, 0.6, 1.4)
    # Hue: a rotation of the chroma plane (I, Q) of YIQ.
    angle = _uniform([batch, 1, 1], seed, 9, -0.2 * math.pi, 0.2 * math.pi)
    cos, sin = tf.cos(angle), tf.sin(angle)
    zeros, ones = tf.zeros_like(angle), tf.ones_like(angle)
    rotation = tf.concat([tf.concat([ones, zeros, zeros], -1), tf.concat([zeros, cos, -sin], -1),
                          tf.concat([zeros, sin, cos], -1)], axis=1)  # [B, 3, 3]
    yiq = tf.einsum("bhwc,dc->bhwd", changed, _RGB_TO_YIQ)
    yiq = tf.einsum("bhwc,bdc->bhwd", yiq, rotation)
    changed = tf.einsum("bhwc,dc->bhwd", yiq, _YIQ_TO_RGB)
  x = tf.where(jitter, changed, x)
  if channels == 3:
    to_grey = _uniform([batch, 1, 1, 1], seed, 10, 0.0, 1.0) < 0.2
    grey = tf.reduce_sum(x * _RGB_TO_YIQ[0], axis=-1, keepdims=True)
    x = tf.where(to_grey, tf.broadcast_to(grey, tf.shape(x)), x)
  return tf.clip_by_value(x, 0.0, 1.0) * 2.0 - 1.0


def nt_xent(first: tf.Tensor, second: tf.Tensor, temperature: float = TEMPERATURE) -> tf.Tensor:
  """Per-view contrastive loss float32 [2B] of two views' projections first, second [B, D] (row i of each: one
  image)."""
  z = tf.math.l2_normalize(tf.concat([first, second], axis=0), axis=1)
  count = tf.shape(first)[0]
  logits = tf.matmul(z, z, transpose_b=True) / temperature
  logits -= 1e9 * tf.eye(2 * count)  # A view is not its own positive.
  targets = tf.concat([tf.range(count) + count, tf.range(count)], axis=0)
  return tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits)


def projection_head(feature_dim: int, seed: int) -> keras.Model:
  """features [B, feature_dim] -> projections [B, PROJECTION_DIM] (used by the loss only, then dropped)."""
  features = keras.Input((feature_dim,))
  x = keras.layers.Dense(feature_dim, activation="relu",
                         kernel_initializer=keras.initializers.GlorotUniform(seed=seed * 1000 + 901))(features)
  x = keras.layers.Dense(PROJECTION_DIM, kernel_initializer=keras.initializers.GlorotUniform(seed=seed * 1000 + 902))(x)
  return keras.Model(features, x, name="projection_head")


def make_step(model: keras.Model, head: keras.Model, optimizer: keras.optimizers.Optimizer, seed: int,
              labelled: bool):
  """A tf.function (images [B, H, W, C], labels int32 [B], step int64) -> (contrastive loss, label loss) scalars
  that takes one optimizer step on `model` and `head`: NT-Xent of two views, plus, if `labelled`, the cross-entropy
  of the first view's logits (examples labelled -1 left out)."""
  # Unlabelled, the logits get no gradient: left out (they stay as initialised either way; Keras would warn about
  # variables without gradients at every trace).
  unused = set() if labelled else {id(v) for v in model.get_layer("logits").trainable_variables}
  variables = [v for v in model.trainable_variables if id(v) not in unused] + head.trainable_variables

  @tf.function(autograph=False)
  def step(images, labels, index):
    index = tf.cast(index, tf.int64)
    first = augment(images, tf.stack([tf.constant(seed, tf.int64), 2 * index]))
    second = augment(images, tf.stack([tf.constant(seed, tf.int64), 2 * index + 1]))
    with tf.GradientTape() as tape:
      features, logits = model(tf.concat([first, second], axis=0), training=True)
      count = tf.shape(images)[0]
      projected = head(features, training=True)
      contrastive = tf.reduce_mean(nt_xent(projected[:count], projected[count:]))
      label_loss = tf.constant(0.0)
      if labelled:
        has_class = labels >= 0
        per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.maximum(labels, 0), logits[:count])
        label_loss = tf.reduce_sum(tf.where(has_class, per_example, 0.0)) / tf.maximum(
            tf.reduce_sum(tf.cast(has_class, tf.float32)), 1.0)
      loss = contrastive + label_loss
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return contrastive, label_loss

  return step


def view_match_accuracy(model, images: np.ndarray, seed: int = 0) -> float:
  """Share of images [N, H, W, C] whose nearest neighbour (cosine, features) among the other views is a view of
  the same image: two augmented views each; how well the features identify an image, with or without labels."""
  run = tf.function(lambda x: model(x, training=False)[0], autograph=False)
  x = tf.constant(images, tf.float32)
  first = tf.math.l2_normalize(run(augment(x, tf.constant([seed, 0], tf.int64))), axis=1)
  second = tf.math.l2_normalize(run(augment(x, tf.constant([seed, 1], tf.int64))), axis=1)
  nearest = tf.argmax(tf.matmul(first, second, transpose_b=True), axis=1)
  return float(tf.reduce_mean(tf.cast(tf.equal(nearest, tf.range(len(images), dtype=tf.int64)), tf.float32)))


def batch_plan(num_examples: int, batch_size: int, steps: int, seed: int) -> Tuple[np.ndarray, int]:
  """(indices [steps * b], b): the examples of `steps` batches of b = min(batch_size, num_examples), epoch after
  epoch, each epoch in an order drawn from RandomState(seed + epoch) (sorted within a batch: faster reads)."""
  b = min(batch_size, num_examples)
  per_epoch = num_examples // b
  rows, epoch = [], 0
  while len(rows) < steps:
    order = np.random.RandomState(seed + epoch).permutation(num_examples)[:per_epoch * b].reshape(per_epoch, b)
    rows.extend(np.sort(order, axis=1))
    epoch += 1
  return np.concatenate(rows[:steps]).astype(np.int64), b
