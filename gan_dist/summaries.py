"""TensorBoard scalars and image grids, and PNG grids on disk. Only the chief writes; other workers get no-ops."""

import math
from typing import Dict, Optional

import numpy as np
import tensorflow as tf


def image_grid(images: np.ndarray, rows: Optional[int] = None) -> np.ndarray:
  """Tiles images into one picture.

  Args:
    images: [N, H, W, C] float in [-1, 1] or uint8.
    rows: rows of the grid; default a near-square grid.

  Returns:
    uint8 [rows * H, cols * W, C].
  """
  images = np.asarray(images)
  if images.dtype != np.uint8:
    images = to_uint8(images)
  n, h, w, c = images.shape
  rows = rows or int(math.floor(math.sqrt(n)))
  cols = int(math.ceil(n / rows))
  grid = np.zeros((rows * h, cols * w, c), np.uint8)
  for i in range(n):
    r, col = divmod(i, cols)
    grid[r * h:(r + 1) * h, col * w:(col + 1) * w] = images[i]
  return grid


def to_uint8(images) -> np.ndarray:
  """[-1, 1] floats -> uint8 [0, 255]."""
  images = np.asarray(images, np.float32)
  return np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


def write_png(path: str, grid: np.ndarray) -> None:
  """Writes a uint8 [H, W, C] grid as PNG (no imaging library needed), on any TensorFlow filesystem.

  Written to a temporary name and renamed, so that a killed process never leaves a truncated PNG behind.
  """
  from gan_dist import flags as gan_flags  # pylint: disable=g-import-not-at-top
  if "/" in path:
    tf.io.gfile.makedirs(path.rsplit("/", 1)[0])
  tmp = path + gan_flags.TMP_SUFFIX
  tf.io.write_file(tmp, tf.io.encode_png(grid))
  tf.io.gfile.rename(tmp, path, overwrite=True)


class Writer:
  """TensorBoard writer of the run; a no-op on non-chief workers.

  Args:
    logdir: `<workdir>/tensorboard`.
    enabled: True on the chief only.
  """

  def __init__(self, logdir: str, enabled: bool):
    self.enabled = enabled
    self._writer = tf.summary.create_file_writer(logdir) if enabled else tf.summary.create_noop_writer()

  def scalars(self, step: int, values: Dict[str, float]) -> None:
    if not self.enabled:
      return
    with self._writer.as_default(step=step):
      for name, value in values.items():
        tf.summary.scalar(name, value)

  def image(self, step: int, name: str, grid: np.ndarray) -> None:
    """Writes a uint8 [H, W, C] grid."""
    if not self.enabled:
      return
    with self._writer.as_default(step=step):
      tf.summary.image(name, grid[None], max_outputs=1)

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()
