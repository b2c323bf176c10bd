"""Sampling as a library: the inputs of a generator (noise, labels, latent walks), running it, and image grids.

Used alike by the trainer's sample grids, `gan_dist.sample`, `gan_dist.plots`, the evaluation CLIs, the exports and
the web demo, so that image i of seed s is the same everywhere. Labels are always an int32 array: unconditional
models ignore them (`models.Gan.generate` drops them), so no caller branches on whether a model is conditional.

Noise of seed s: row i of `numpy.random.RandomState(s).standard_normal((num, latent_dim))`, so the first k images of
a grid do not depend on how many are drawn; with a truncation T > 0 (BigGAN's truncation trick) each value is then
mapped onto the normal truncated to [-T, T] (`truncate`), which keeps that property. Labels: class i mod
num_classes for image i (0 for unconditional models), or one fixed class.
"""

import math
import numbers
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from gan_dist import config as config_lib
from gan_dist import errors

MAX_SEED = config_lib.MAX_SEED


def truncate(values: np.ndarray, threshold: float) -> np.ndarray:
  """Maps standard normal `values` (any shape) onto the normal truncated to [-threshold, threshold]; 0: unchanged.

  BigGAN's truncation trick (Brock et al. 2019) redraws the values outside [-T, T]; here each value goes through
  the truncated normal's inverse CDF at its own CDF, Phi^-1(Phi(-T) + Phi(z) (Phi(T) - Phi(-T))): the same
  distribution, but value i stays a function of the value drawn at i (no redraws from the shared stream), and it
  is monotonic, so an image changes smoothly as T shrinks and each image keeps its seed.
  """
  if not threshold:
    return values
  z = tf.constant(values, tf.float64)
  low, high = (0.5 * (1.0 + math.erf(t / math.sqrt(2.0))) for t in (-threshold, threshold))
  mapped = tf.math.ndtri(low + 0.5 * (1.0 + tf.math.erf(z / math.sqrt(2.0))) * (high - low))
  # The CDF of a float64 rounds to 0 or 1 past |z| ~ 8 and 38; keep the map inside the interval there.
  return np.clip(mapped.numpy(), -threshold, threshold).astype(values.dtype)


def noise(num: int, latent_dim: int, seed: int, truncation: float) -> np.ndarray:
  """float32 [num, latent_dim]: standard normal rows (truncated to [-truncation, truncation] when it is > 0, see
  `truncate`), row i a function of (seed, i) only."""
  if not _is_int(num) or num < 1:
    raise errors.UserError(f"num={num!r}: the number of images must be an integer >= 1")
  if not _is_int(seed) or not 0 <= seed <= MAX_SEED:
    raise errors.UserError(f"seed={seed!r}: a seed is an integer in [0, 2**32 - 1]")
  values = np.random.RandomState(seed).standard_normal((num, latent_dim)).astype(np.float32)
  return truncate(values, truncation)


def _is_int(value) -> bool:
  """Whether `value` is an integer (Python's or NumPy's; not a bool, a float such as 3.7 or a string)."""
  return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def class_named(name: str, class_names: Sequence[str]) -> Optional[int]:
  """The id of the class called `name` in `class_names` (label k is the k-th name: a run's classes.json, an
  export's facts), or None where none is; "" is no name (a class the data did not name)."""
  return class_names.index(name) if name and name in class_names else None


def class_label(k: int, class_names: Sequence[str]) -> str:
  """Class `k` for people: "3 (cat)" where `class_names` names it, else "3"."""
  name = class_names[k] if 0 <= k < len(class_names) else ""
  return f"{k} ({name})" if name else str(k)


def named_classes(class_names: Sequence[str]) -> str:
  """The classes `class_names` names, for a message: "0 (zero), 1 (one), 3 (three)"; "" where it names none."""
  return ", ".join(class_label(k, class_names) for k, name in enumerate(class_names) if name)


def labels(num: int, num_classes: int, label: Optional[int] = None) -> np.ndarray:
  """int32 [num]: all `label`, or cycling through the classes (image i has class i mod num_classes).

  Unconditional models (num_classes 0) get zeros, which they ignore.

  Raises:
    errors.UserError (a ValueError): `label` is not a class of the model.
  """
  if label is not None:
    if not _is_int(label):
      raise errors.UserError(f"--label={label!r} must be a class id (an integer)")
    if not 0 <= label < num_classes:
      raise errors.UserError(f"--label={label} outside [0, {num_classes})" if num_classes else
                             f"--label={label}: the model is not conditional (it has no classes)")
    return np.full([num], label, np.int32)
  return (np.arange(num) % max(num_classes, 1)).astype(np.int32)


def inputs(num: int, latent_dim: int, num_classes: int, seed: int, label: Optional[int] = None, *,
           truncation: float) -> Tuple[np.ndarray, np.ndarray]:
  """(noise float32 [num, latent_dim], labels int32 [num]) of seed `seed` (see `noise` and `labels`)."""
  return noise(num, latent_dim, seed, truncation), labels(num, num_classes, label)


def class_rows(num: int, latent_dim: int, num_classes: int, seed: int,
               truncation: float) -> Tuple[np.ndarray, np.ndarray, int]:
  """A grid with one row per class (conditional) or a near-square one: (noise, labels, rows; 0 = near-square).

  Conditional models: `num // num_classes` images per class (at least one), row k all of class k, the layout of
  the training sample grids.
  """
  if not num_classes:
    z, y = inputs(num, latent_dim, 0, seed, truncation=truncation)
    return z, y, 0
  per_class = max(1, num // num_classes)
  z = noise(per_class * num_classes, latent_dim, seed, truncation)
  return z, np.repeat(np.arange(num_classes, dtype=np.int32), per_class), num_classes


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
  """Spherical interpolation of vectors a, b [D] at fractions t [T] -> [T, D].

  Gaussian noise vectors concentrate near a sphere; a straight line between two of them passes through shorter,
  atypical vectors (washed-out images mid-way), the great circle does not.
  """
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  t = np.asarray(t, np.float64)
  cos = np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))
  omega = np.arccos(np.clip(cos, -1.0, 1.0))
  if omega < 1e-6:
    return (1 - t)[:, None] * a + t[:, None] * b
  return (np.sin((1 - t) * omega)[:, None] * a + np.sin(t * omega)[:, None] * b) / np.sin(omega)


def make_generate_fn(generator, gan) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
  """A tf.function (noise float32 [b, latent_dim], labels int32 [b]) -> images [b, H, W, C] in [-1, 1] of
  `generator` (e.g. `state.sampling_generator`) in inference mode; traced once per batch shape."""
  @tf.function(autograph=False)
  def run(z, y):
    return gan.generate(z, y, generator=generator)
  return run


# Peak bytes per image pixel while sampling: the generator's float32 batches, their concatenation and to_uint8's
# float32 temporaries, and the uint8 result.
_BYTES_PER_PIXEL = 16


def _available_memory() -> Optional[int]:
  """MemAvailable of /proc/meminfo in bytes (Linux), or None where it cannot be read."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    pass
  return None


def check_memory(num: int, image_shape: Sequence[int], latent_dim: int, flag: str = "num") -> None:
  """Refuses `num` samples (all held in memory, e.g. to be written as one .npz) that would not fit in this machine's
  available memory, before sampling: without it, num=10**11 was a MemoryError traceback after loading, or the
  kernel's OOM killer. `flag` names the number in the message (--num on the command line).

  Raises:
    errors.UserError: the estimate and what is available.
  """
  needed = num * (int(np.prod(image_shape)) * _BYTES_PER_PIXEL + 4 * latent_dim)
  available = _available_memory()
  if available is not None and needed > available:
    raise errors.UserError(
        f"{flag}={num}: sampling {num:,} images of {'x'.join(map(str, image_shape))} needs about "
        f"{needed / 2**30:.1f} GiB of memory, more than the {available / 2**30:.1f} GiB available; sample fewer "
        "(several runs with other seeds give other images)")


def generate(run: Callable, noise_: np.ndarray, labels_: np.ndarray, batch_size: int = 256) -> np.ndarray:
  """Runs a `make_generate_fn` function in batches; returns float32 images [N, H, W, C] in [-1, 1]."""
  out = []
  for start in range(0, len(noise_), batch_size):
    z = tf.constant(noise_[start:start + batch_size], tf.float32)
    y = tf.constant(labels_[start:start + batch_size], tf.int32)
    out.append(np.asarray(tf.cast(run(z, y), tf.float32)))
  return np.concatenate(out)


def to_uint8(images) -> tf.Tensor:
  """Images in [-1, 1] (float, any shape; a Tensor or an array) -> uint8 in [0, 255], rounded.

  A TensorFlow op, so that exported signatures use it too; NumPy callers take `.numpy()`.
  """
  return tf.cast(tf.clip_by_value(tf.round((tf.cast(images, tf.float32) + 1.0) * 127.5), 0, 255), tf.uint8)


def image_grid(images, rows: Optional[int] = None) -> np.ndarray:
  """Tiles images into one picture, row by row; cells left over in the last row are black.

  Args:
    images: [N, H, W, C], float in [-1, 1] or uint8.
    rows: rows of the grid; default (None or 0) a near-square grid of floor(sqrt(N)) rows.

  Returns:
    uint8 [rows * H, ceil(N / rows) * W, C].
  """
  images = np.asarray(images)
  if images.dtype != np.uint8:
    images = to_uint8(images).numpy()
  n, h, w, c = images.shape
  rows = rows or max(1, int(math.floor(math.sqrt(n))))
  cols = int(math.ceil(n / rows))
  padded = np.concatenate([images, np.zeros((rows * cols - n, h, w, c), np.uint8)])
  return padded.reshape(rows, cols, h, w, c).transpose(0, 2, 1, 3, 4).reshape(rows * h, cols * w, c)


def grid_columns(num: int, num_classes: int = 0) -> int:
  """Columns of a grid of `num` images: one per class when the images cycle through `num_classes` classes (and
  fill a row), else those of `image_grid`'s near-square grid."""
  if num_classes and num >= num_classes:
    return num_classes
  return math.ceil(num / max(1, math.floor(math.sqrt(num))))


def tile(images: np.ndarray, columns: int, scale: int = 1) -> np.ndarray:
  """uint8 images [N, H, W, C] -> one uint8 grid [rows * H * scale, columns * W * scale, C], empty cells black."""
  rows = math.ceil(len(images) / columns)
  padded = np.concatenate([images, np.zeros((rows * columns - len(images),) + images.shape[1:], np.uint8)])
  grid = image_grid(padded, rows)
  if scale > 1:
    grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)
  return grid
