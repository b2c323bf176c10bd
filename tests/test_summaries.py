"""Image grids and PNG output."""

import numpy as np
import tensorflow as tf

from gan_dist import summaries


def test_image_grid_layout():
  images = np.stack([np.full((2, 3, 1), v, np.float32) for v in (-1.0, 0.0, 1.0, 1.0, -1.0)])
  grid = summaries.image_grid(images, rows=2)
  assert grid.shape == (4, 9, 1) and grid.dtype == np.uint8
  assert grid[0, 0, 0] == 0 and grid[0, 3, 0] == 128 and grid[2, 3, 0] == 0  # Row-major, [-1, 1] -> [0, 255].
  assert (grid[2:, 6:] == 0).all()  # The missing sixth image stays black.


def test_png_roundtrip(tmp_path):
  grid = (np.arange(24, dtype=np.uint8).reshape(4, 6, 1) * 10)
  path = str(tmp_path / "g" / "x.png")
  summaries.write_png(path, grid)
  np.testing.assert_array_equal(tf.io.decode_png(tf.io.read_file(path)).numpy(), grid)


def test_noop_writer_on_non_chief(tmp_path):
  writer = summaries.Writer(str(tmp_path / "tb"), enabled=False)
  writer.scalars(1, {"a": 1.0})
  writer.image(1, "x", np.zeros((2, 2, 1), np.uint8))
  writer.close()
  assert not (tmp_path / "tb").exists()
