"""TensorBoard scalars and images, and PNG files. Only the chief writes; other workers get no-ops."""

from typing import Any, Dict, Sequence

import numpy as np
from tensorboard.plugins.hparams import api as hparams_api
import tensorflow as tf

from gan_dist import files


def png_bytes(image: np.ndarray) -> bytes:
  """The PNG file of a uint8 [H, W, C] image."""
  return tf.io.encode_png(np.asarray(image, np.uint8)).numpy()


def write_png(path: str, image: np.ndarray) -> None:
  """Writes a uint8 [H, W, C] image as PNG on any TensorFlow filesystem, atomically (never a truncated PNG)."""
  files.write_atomic(path, png_bytes(image))


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

  def hparams(self, values: Dict[str, Any], metrics: Sequence[str], trial_id: str = "") -> None:
    """Writes the run's HParams (TensorBoard's HParams dashboard: one row per run, `values` as columns, named
    `trial_id`, else a hash of the values) and the experiment's layout: these hparams and the scalar tags `metrics`
    as its metric columns."""
    if not self.enabled:
      return
    with self._writer.as_default(step=0):
      hparams_api.hparams_config(hparams=[hparams_api.HParam(name) for name in values],
                                 metrics=[hparams_api.Metric(tag) for tag in metrics])
      hparams_api.hparams(values, trial_id=trial_id or None)

  def image(self, step: int, name: str, grid: np.ndarray) -> None:
    """Writes a uint8 [H, W, C] image."""
    if not self.enabled:
      return
    with self._writer.as_default(step=step):
      tf.summary.image(name, grid[None], max_outputs=1)

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()
