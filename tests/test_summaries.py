"""summaries.py: PNG files and the chief-only TensorBoard writer (grids are sampling's: tests/test_sampling.py)."""

import numpy as np
import tensorflow as tf

from gan_dist import figures
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
  writer.scalars(3, {"a": 1.5, "b": -2.0})
  image = (np.arange(2 * 3, dtype=np.uint8).reshape(2, 3, 1) * 40)
  writer.image(4, "x", image)
  writer.close()
  # The events read back, not just a file: create_file_writer makes an (empty) events file whatever is written.
  assert figures.read_scalars(str(tmp_path / "tb")) == {"a": [(3, 1.5)], "b": [(3, -2.0)]}
  event_files = [str(p) for p in (tmp_path / "tb").iterdir() if p.name.startswith("events.out.tfevents.")]
  images = [(event.step, value) for path in event_files for event in tf.compat.v1.train.summary_iterator(path)
            for value in event.summary.value if value.tag == "x"]
  assert len(images) == 1 and images[0][0] == 4, images
  value = images[0][1]
  assert value.metadata.plugin_data.plugin_name == "images"
  # tf.summary.image's tensor: [width, height, PNG of each image]; the one image decodes to the grid written.
  width, height, png = tf.make_ndarray(value.tensor)
  assert (int(width), int(height)) == (3, 2)
  np.testing.assert_array_equal(tf.io.decode_png(png).numpy(), image)


def test_noop_writer_on_non_chief(tmp_path):
  writer = summaries.Writer(str(tmp_path / "tb"), enabled=False)
  writer.scalars(1, {"a": 1.0})
  writer.image(1, "x", np.zeros((2, 2, 1), np.uint8))
  writer.close()
  assert not (tmp_path / "tb").exists()
