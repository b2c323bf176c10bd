"""`python -m gan_dist.plots` on a tiny trained workdir: every figure exists and is what it says."""

import io

from PIL import Image
import pytest
import tensorflow as tf

from gan_dist import plots
from tests.eval import tiny_run


@pytest.fixture(scope="module")
def run_cfg(tmp_path_factory, mirrored2):
  return tiny_run.shared_run(tmp_path_factory, mirrored2)


def _image(path):
  with tf.io.gfile.GFile(path, "rb") as f:
    return Image.open(io.BytesIO(f.read()))


def test_plots_writes_every_figure(run_cfg):
  written = plots.write_all(run_cfg.workdir)
  assert set(written) == {"losses", "progress", "real_vs_generated", "interpolation"}
  assert all(path.startswith(f"{run_cfg.workdir}/plots/") for path in written.values())
  gif = _image(written["progress"])
  assert gif.format == "GIF" and gif.n_frames == 2  # The grids of steps 2 and 4.
  assert _image(written["losses"]).format == "PNG" and _image(written["real_vs_generated"]).format == "PNG"
  strip = _image(written["interpolation"])
  # 8 rows of 10 interpolation steps of 28x28 images.
  assert strip.size == (10 * 28, 8 * 28)


def test_scalars_are_read_from_the_event_files(run_cfg):
  scalars = plots.read_scalars(f"{run_cfg.workdir}/tensorboard")
  assert [step for step, _ in scalars["d_loss"]] == [1, 2, 3, 4]
  assert "samples" not in scalars  # Images are not scalars.


def test_slerp_keeps_the_ends_and_the_norm_of_unit_vectors():
  import numpy as np  # pylint: disable=g-import-not-at-top
  a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
  path = plots.slerp(a, b, np.linspace(0, 1, 5))
  np.testing.assert_allclose(path[0], a, atol=1e-12)
  np.testing.assert_allclose(path[-1], b, atol=1e-12)
  np.testing.assert_allclose(np.linalg.norm(path, axis=1), 1.0)
