"""Differentiable augmentation of D's inputs: DiffAugment (Zhao et al. 2020) and ADA (Karras et al. 2020).

Every transform maps float32 images [b, H, W, C] in [-1, 1] to images of the same shape and is differentiable with
respect to them (G's gradient flows through the augmentation of its images). Geometric transforms are one
resampling per axis: out = Ry @ x @ Rx^T with per-example interpolation matrices Ry [b, H, H], Rx [b, W, W]
(integer shifts and flips give permutation matrices, so they move pixels exactly; scaling interpolates
bilinearly), which is plain matrix algebra: differentiable, deterministic, and compiled by XLA on every device.

Randomness: the parameters of example i of a batch are drawn for the whole global batch from a stateless seed
(the caller's: a function of --seed, the step, the batch draw and real/fake), and each replica keeps its rows
(`rows`), as the train step does for noise. The same example is therefore augmented the same way on 1 replica or
8, and in a resumed run as in an uninterrupted one.

Probability: each transform is applied to each example independently with probability p (ADA's p, a scalar
tensor; DiffAugment is p = 1). Where it is not applied the example passes through unchanged, bit for bit (a
select, or an exact identity matrix), so p = 0 is exactly no augmentation. Consecutive scalings and mirrored
shifts (int_translation, scale, aniso) are composed into one resampling.
"""

import math
from typing import Callable, Dict, Sequence

import tensorflow as tf


Rows = Callable[[tf.Tensor], tf.Tensor]

# DiffAugment's ranges: translation up to 1/8 of the image, a cutout square of half its side.
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5
# ADA's: integer translation up to 1/8 of the image; log2 of the scale factors ~ N(0, 0.2); hue angle uniform in
# (-pi, pi) (ADA's hue_max = 1).
INT_TRANSLATION_RATIO = 0.125
SCALE_STD = 0.2


def _identity_rows(values: tf.Tensor) -> tf.Tensor:
  return values


class _Draws:
  """Stateless draws of one transform for the global batch, each cut to this replica's rows."""

  def __init__(self, seed: tf.Tensor, global_batch: int, rows: Rows):
    self._seed, self._n, self._rows, self._count = seed, global_batch, rows, 0

  def _next_seed(self) -> tf.Tensor:
    self._count += 1
    return tf.random.experimental.stateless_fold_in(self._seed, self._count)

  def uniform(self, minval=0.0, maxval=1.0) -> tf.Tensor:
    """float32 [b]."""
    return self._rows(tf.random.stateless_uniform([self._n], self._next_seed(), minval, maxval))

  def normal(self, stddev: float) -> tf.Tensor:
    """float32 [b]."""
    return self._rows(tf.random.stateless_normal([self._n], self._next_seed(), stddev=stddev))

  def integers(self, minval: int, maxval: int) -> tf.Tensor:
    """int32 [b] in [minval, maxval)."""
    return self._rows(tf.random.stateless_uniform([self._n], self._next_seed(), minval, maxval, dtype=tf.int32))


def _select(apply: tf.Tensor, augmented: tf.Tensor, images: tf.Tensor) -> tf.Tensor:
  """Per example: `augmented` where `apply` [b] is true, else `images` unchanged."""
  return tf.where(tf.reshape(apply, [-1, 1, 1, 1]), augmented, images)


def _axis_matrix(source: tf.Tensor, size: int, reflect: bool) -> tf.Tensor:
  """Bilinear interpolation weights [b, n, size]: output pixel j of example i reads source coordinate
  source[i, j] (float32 [b, n], in pixels). Outside [0, size - 1] the image is mirrored (reflect) or zero."""
  if reflect and size > 1:
    period = 2.0 * (size - 1)
    source = tf.math.floormod(source, period)
    source = tf.where(source > size - 1, period - source, source)
  low = tf.floor(source)
  frac = source - low
  low = tf.cast(low, tf.int32)
  # tf.one_hot of an index outside [0, size) is a zero row: the zero padding, and the unused right neighbour of the
  # last pixel.
  return (tf.one_hot(low, size) * (1.0 - frac)[..., None] + tf.one_hot(low + 1, size) * frac[..., None])


def _resample(images: tf.Tensor, scale_y: tf.Tensor, scale_x: tf.Tensor, shift_y: tf.Tensor, shift_x: tf.Tensor,
              reflect: bool) -> tf.Tensor:
  """Scales each example about its centre by (scale_y, scale_x) and shifts it by (shift_y, shift_x) pixels
  (float32 [b] each): out[y, x] = in[(y - c) / scale_y + c - shift_y, (x - c) / scale_x + c - shift_x]."""
  height, width = images.shape[1], images.shape[2]

  def matrix(size, scale, shift):
    centre = (size - 1) / 2.0
    out = tf.range(size, dtype=tf.float32)[None, :]
    return _axis_matrix((out - centre) / scale[:, None] + centre - shift[:, None], size, reflect)

  rows = matrix(height, scale_y, shift_y)  # [b, H, H]
  cols = matrix(width, scale_x, shift_x)  # [b, W, W]
  out = tf.einsum("byk,bkxc->byxc", rows, images)
  return tf.einsum("bxk,bykc->byxc", cols, out)


def brightness(images, draws: _Draws, apply):
  """Adds b ~ U(-0.5, 0.5) to every pixel (DiffAugment)."""
  return _select(apply, images + draws.uniform(-0.5, 0.5)[:, None, None, None], images)


def saturation(images, draws: _Draws, apply):
  """Scales each pixel's distance from its grey level by s ~ U(0, 2) (DiffAugment); no-op on one channel."""
  factor = draws.uniform(0.0, 2.0)
  if images.shape[-1] == 1:
    return images
  grey = tf.reduce_mean(images, axis=3, keepdims=True)
  return _select(apply, grey + (images - grey) * factor[:, None, None, None], images)


def contrast(images, draws: _Draws, apply):
  """Scales the distance from the image mean by c ~ U(0.5, 1.5) (DiffAugment)."""
  factor = draws.uniform(0.5, 1.5)
  mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
  return _select(apply, mean + (images - mean) * factor[:, None, None, None], images)


def translation(images, draws: _Draws, apply):
  """Shifts by whole pixels, up to 1/8 of the size each way, zero-padded (DiffAugment)."""
  height, width = images.shape[1], images.shape[2]
  max_y, max_x = int(height * TRANSLATION_RATIO + 0.5), int(width * TRANSLATION_RATIO + 0.5)
  shift_y = tf.cast(draws.integers(-max_y, max_y + 1), tf.float32)
  shift_x = tf.cast(draws.integers(-max_x, max_x + 1), tf.float32)
  ones = tf.ones_like(shift_y)
  return _select(apply, _resample(images, ones, ones, shift_y, shift_x, reflect=False), images)


def cutout(images, draws: _Draws, apply):
  """Sets a square of half the image size, centred anywhere in the image, to 0 (DiffAugment)."""
  height, width = images.shape[1], images.shape[2]
  size_y, size_x = int(height * CUTOUT_RATIO + 0.5), int(width * CUTOUT_RATIO + 0.5)
  centre_y = draws.integers(0, height + (1 - size_y % 2))
  centre_x = draws.integers(0, width + (1 - size_x % 2))
  ys = tf.range(height)[None, :] - (centre_y[:, None] - size_y // 2)  # [b, H]
  xs = tf.range(width)[None, :] - (centre_x[:, None] - size_x // 2)
  inside_y = tf.logical_and(ys >= 0, ys < size_y)
  inside_x = tf.logical_and(xs >= 0, xs < size_x)
  keep = tf.logical_not(tf.logical_and(inside_y[:, :, None], inside_x[:, None, :]))  # [b, H, W]
  return _select(apply, images * tf.cast(keep, images.dtype)[..., None], images)


def flip(images, draws: _Draws, apply):
  """Mirrors horizontally with probability 1/2 (ADA's xflip)."""
  heads = draws.uniform() < 0.5
  return _select(tf.logical_and(apply, heads), tf.reverse(images, axis=[2]), images)


def rot90(images, draws: _Draws, apply):
  """Rotates by k * 90 degrees, k uniform in {0, 1, 2, 3} (ADA's rotate90); square images only."""
  k = draws.integers(0, 4)
  if images.shape[1] != images.shape[2]:
    raise ValueError(f"rot90 needs square images, got {images.shape[1]}x{images.shape[2]}")
  turned = [images]
  for _ in range(3):
    turned.append(tf.reverse(tf.transpose(turned[-1], [0, 2, 1, 3]), axis=[1]))  # 90 degrees anticlockwise.
  out = images
  for quarter in range(1, 4):
    out = _select(tf.equal(k, quarter), turned[quarter], out)
  return _select(apply, out, images)


def _int_translation_params(images, draws: _Draws):
  height, width = images.shape[1], images.shape[2]
  shift_y = tf.round(draws.uniform(-INT_TRANSLATION_RATIO, INT_TRANSLATION_RATIO) * height)
  shift_x = tf.round(draws.uniform(-INT_TRANSLATION_RATIO, INT_TRANSLATION_RATIO) * width)
  ones = tf.ones_like(shift_y)
  return ones, ones, shift_y, shift_x


def _scale_params(images, draws: _Draws):
  del images
  factor = tf.pow(2.0, draws.normal(SCALE_STD))
  zeros = tf.zeros_like(factor)
  return factor, factor, zeros, zeros


def _aniso_params(images, draws: _Draws):
  del images
  factor = tf.pow(2.0, draws.normal(SCALE_STD))
  zeros = tf.zeros_like(factor)
  return 1.0 / factor, factor, zeros, zeros


# The transforms that scale and shift with mirrored borders: consecutive ones in a policy are composed into one
# resampling (one interpolation, as ADA composes its geometric transforms into one matrix).
_MIRRORED_AFFINE = {"int_translation": _int_translation_params, "scale": _scale_params, "aniso": _aniso_params}


def _composed_resample(images, steps) -> tf.Tensor:
  """Applies affine maps in order, each where its `apply` [b] holds, as one resampling with mirrored borders.

  Args:
    images: [b, H, W, C].
    steps: [(apply [b] bool, (scale_y, scale_x, shift_y, shift_x) float32 [b] each)], in the order applied.

  An output pixel u reads f_1(f_2(...f_k(u))) with f_i(u) = (u - c) / s_i + c - t_i; composed, that is again
  (u - c) / s + c - t with s = s_1 ... s_k and t = t_1 + t_2 / s_1 + t_3 / (s_1 s_2) + ... An example none of
  whose maps applies gets s = 1, t = 0: the identity matrix, which reproduces it exactly.
  """
  ones = tf.ones_like(steps[0][0], tf.float32)
  scale_y = scale_x = ones
  shift_y = shift_x = 0.0 * ones
  for apply, (sy, sx, ty, tx) in steps:
    sy, sx = tf.where(apply, sy, 1.0), tf.where(apply, sx, 1.0)
    ty, tx = tf.where(apply, ty, 0.0), tf.where(apply, tx, 0.0)
    shift_y, shift_x = shift_y + ty / scale_y, shift_x + tx / scale_x
    scale_y, scale_x = scale_y * sy, scale_x * sx
  return _resample(images, scale_y, scale_x, shift_y, shift_x, reflect=True)


def int_translation(images, draws: _Draws, apply):
  """Shifts by whole pixels, up to 1/8 of the size each way, the image mirrored at its borders (ADA's xint)."""
  return _composed_resample(images, [(apply, _int_translation_params(images, draws))])


def scale(images, draws: _Draws, apply):
  """Scales both axes by 2^N(0, 0.2) about the centre, bilinear, mirrored borders (ADA's isotropic scaling)."""
  return _composed_resample(images, [(apply, _scale_params(images, draws))])


def aniso(images, draws: _Draws, apply):
  """Scales x by s = 2^N(0, 0.2) and y by 1/s (ADA's anisotropic scaling)."""
  return _composed_resample(images, [(apply, _aniso_params(images, draws))])


def hue(images, draws: _Draws, apply):
  """Rotates colours about the grey axis by an angle uniform in (-pi, pi) (ADA's hue); no-op on one channel."""
  angle = draws.uniform(-math.pi, math.pi)
  if images.shape[-1] != 3:
    return images
  # Rodrigues' rotation about the unit grey axis k = (1, 1, 1) / sqrt(3): R = cI + s[k]x + (1 - c)kk^T.
  k = tf.constant([1.0, 1.0, 1.0]) / math.sqrt(3.0)
  kx = tf.constant([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]]) / math.sqrt(3.0)  # [k]x, the cross product.
  kk = tf.tensordot(k, k, axes=0)
  cos, sin = tf.cos(angle)[:, None, None], tf.sin(angle)[:, None, None]
  rotation = cos * tf.eye(3)[None] + sin * kx[None] + (1.0 - cos) * kk[None]  # [b, 3, 3]
  return _select(apply, tf.einsum("bij,byxj->byxi", rotation, images), images)


TRANSFORMS: Dict[str, Callable] = dict(
    brightness=brightness, saturation=saturation, contrast=contrast, translation=translation, cutout=cutout,
    flip=flip, rot90=rot90, int_translation=int_translation, scale=scale, aniso=aniso, hue=hue)


def apply(images: tf.Tensor, policy: Sequence[str], seed: tf.Tensor, p, global_batch: int,
          rows: Rows = _identity_rows) -> tf.Tensor:
  """Augments a batch: the transforms of `policy` in order, each applied to each example with probability p.

  Args:
    images: [b, H, W, C] in [-1, 1] (any float dtype; computed and returned in float32).
    policy: transform names (`config.augment_policy(cfg)`).
    seed: int64 [2], the stateless seed of this batch's augmentation.
    p: float32 scalar (tensor or number): each transform's probability per example.
    global_batch: rows of the global batch the parameters are drawn for; b = global_batch / replicas.
    rows: this replica's rows of a [global_batch] tensor (`train_step.replica_rows`); identity on one device.

  Returns:
    float32 [b, H, W, C].
  """
  images = tf.cast(images, tf.float32)
  p = tf.cast(p, tf.float32)
  pending = []  # Consecutive mirrored affine transforms, resampled together.
  for index, name in enumerate(policy):
    draws = _Draws(tf.random.experimental.stateless_fold_in(seed, index), global_batch, rows)
    applied = draws.uniform() < p
    if name in _MIRRORED_AFFINE:
      pending.append((applied, _MIRRORED_AFFINE[name](images, draws)))
      continue
    if pending:
      images, pending = _composed_resample(images, pending), []
    images = TRANSFORMS[name](images, draws, applied)
  if pending:
    images = _composed_resample(images, pending)
  return images


def ada_update(p: tf.Tensor, r_t: tf.Tensor, target: float, kimg: float, images: int) -> tf.Tensor:
  """ADA's step of p after `images` real images whose D outputs had r_t = E[sign(D(real))] (all replicas').

  p moves by sign(r_t - target) * images / (kimg * 1000): up while D is over-confident on reals (r_t above the
  target), down otherwise, and can cross [0, 1] in `kimg` thousand images. Clipped to [0, 1].
  """
  step = tf.sign(tf.cast(r_t, tf.float32) - target) * (images / (kimg * 1000.0))
  return tf.clip_by_value(tf.cast(p, tf.float32) + step, 0.0, 1.0)
