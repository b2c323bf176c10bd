"""summaries.py: PNG files and the chief-only TensorBoard writer (grids are sampling's: tests/test_sampling.py)."""

import numpy as np
import tensorflow as tf

from gan_dist import files
from gan_dist import summaries


def test_png_roundtrip_leaves_no_temporary_file(tmp_path):
  for shape in ((4, 6, 1), (3, 5, 3)):
    image = (np.arange(np.prod(shape), dtype=np.uint8).reshape(shape) * 5)
    path = str(tmp_path / "g" / f"x{shape[-1]}.png")
    summaries.write_png(path, image)
    np.testing.assert_array_equal(tf.io.decode_png(tf.io.read_file(path)).numpy(), image)
  assert not [p for p in (tmp_path / "g").iterdir() if p.name.endswith(files.TMP_SUFFIX)]


def test_writer_on_the_chief_writes_events(tmp_path):
  writer = summaries.Writer(str(tmp_path / "tb"), enabled=True)
  writer.scalars(3, {"a": 1.5})
  writer.image(3, "x", np.zeros((2, 2, 1), np.uint8))
  writer.close()
  assert [p.name for p in (tmp_path / "tb").iterdir() if p.name.startswith("events.out.tfevents.")]


def test_noop_writer_on_non_chief(tmp_path):
  writer = summaries.Writer(str(tmp_path / "tb"), enabled=False)
  writer.scalars(1, {"a": 1.0})
  writer.image(1, "x", np.zeros((2, 2, 1), np.uint8))
  writer.close()
  assert not (tmp_path / "tb").exists()
