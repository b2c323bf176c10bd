"""TensorBoard scalars and images, and PNG files. Only the chief writes; other workers get no-ops."""

import time
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

  def start(self, step: int) -> None:
    """Marks where this run's events begin: TensorBoard (and `figures.read_scalars`) drop the points of earlier
    event files at steps >= `step`, those a killed run logged after the checkpoint this run resumes from.

    TensorBoard purges at every SessionLog.START of a run but the first, so each run writes one. `tf.summary`
    writes no Event protos of its own; the writer's ImportEvent op writes this one into its file, which then
    follows the earlier files in TensorBoard's reading order (time-stamped names)."""
    if not self.enabled:
      return
    event = tf.compat.v1.Event(step=step, wall_time=time.time(),
                               session_log=tf.compat.v1.SessionLog(status=tf.compat.v1.SessionLog.START))
    tf.raw_ops.ImportEvent(writer=self._writer._resource,  # pylint: disable=protected-access
                           event=tf.constant(event.SerializeToString()))

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
