"""What every data source is: a fixed-order split read on demand, and the error the data layer raises."""

from typing import Sequence, Tuple

import tensorflow as tf

from gan_dist import errors


def graph_fn(fn):
  """`fn` for tf.data (map, interleave, flat_map), traced as written: without autograph, like every tf.function of
  gan_dist (WORKSPACE.md "No autograph"); its conditions are `tf.cond`/`tf.switch_case` or Python decisions."""
  return tf.autograph.experimental.do_not_convert(fn)


class DataError(errors.UserError):
  """A dataset cannot be found or read; the one-line message says what to pass instead (exit code 2)."""


class DataSource:
  """A split: examples 0..num_examples-1 in a fixed order, read on demand (only an index is held in memory).

  Attributes:
    name: where the examples come from, for logs.
    num_classes: classes of the dataset (0 if unlabeled; all classes also when `--class_filter` keeps one).
    class_names: the name of each class in label order where the data names them (class folders, a pack, a TFDS
      ClassLabel with names); empty otherwise (IDX files: the labels are the digits).
    crop: "center" or "none", what happens to non-square images before resizing (from `--crop`).
  """

  name: str = ""
  num_classes: int = 0
  class_names: Sequence[str] = ()
  crop: str  # Every source sets it from its caller (--crop): no default here.
  # Whether reading may meet a file that does not decode (folders and packs of encoded images): then a run reads its
  # first batch before it writes anything (data.check_first_batch).
  decodes_files: bool = False

  @property
  def num_examples(self) -> int:
    raise NotImplementedError

  def example_labels(self):
    """int32 [num_examples]: the label of every example (0 when unlabeled), e.g. for --class_filter."""
    raise NotImplementedError

  def filtered(self, keep, name: str) -> "DataSource":
    """The same split restricted to the examples `keep` (int64 indices, in order), named `name`."""
    raise NotImplementedError

  def batches(self, rows: tf.data.Dataset, image_shape: Tuple[int, int, int], batch_size: int) -> tf.data.Dataset:
    """Reads the examples of each row of indices.

    Args:
      rows: dataset of (indices int64 [b], flips bool [b]) with b = batch_size, except that the last row may be
        shorter; indices are in [0, num_examples), flips say which images to mirror horizontally.
      image_shape: (H, W, C) the model trains on.
      batch_size: the length of the rows.

    Returns:
      One element per row, in order: {"images": float32 [b, H, W, C] in [-1, 1], "labels": int32 [b]}.
    """
    raise NotImplementedError
