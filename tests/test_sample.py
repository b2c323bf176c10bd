"""`python -m gan_dist.sample --grid`: one row per class for conditional models, a square grid otherwise."""

import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from gan_dist import models
from gan_dist import sample as sample_lib
from tests import helpers
from tests.eval import tiny_run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def run_cfg(tmp_path_factory, mirrored2):
  return tiny_run.shared_run(tmp_path_factory, mirrored2)


def test_grid_has_one_row_per_class_and_no_npz_unless_asked(run_cfg, tmp_path):
  grid = tmp_path / "grid.png"
  proc = subprocess.run([sys.executable, "-m", "gan_dist.sample", f"--workdir={run_cfg.workdir}", "--num=25",
                         f"--grid={grid}"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  # 25 images -> 2 per class: 10 rows of 2 digits of 28x28.
  assert Image.open(grid).size == (2 * 28, 10 * 28)
  assert not (tmp_path / "samples.npz").exists()


def test_grid_image_of_an_unconditional_model_is_the_sampled_images():
  gan = models.build(helpers.config_values(arch="mlp"), 0)
  run_fn = sample_lib.make_generate_fn(gan.generator, gan)
  noise, labels = sample_lib.sample_inputs(gan, 6, seed=0)
  images = np.zeros((6, 28, 28, 1), np.uint8)
  grid = sample_lib.grid_image(run_fn, gan, 6, 0, None, images)
  assert grid.shape == (2 * 28, 3 * 28, 1) and labels is None


def test_tools_answer_bad_input_in_one_line_with_exit_2(tmp_path):
  """sample/export/evaluate/plots share run_tool: a missing workdir or a bad flag is one line and exit 2."""
  for args in (["-m", "gan_dist.sample", f"--workdir={tmp_path / 'missing'}"],
               ["-m", "gan_dist.export", "--workdir=W", "--format=onnx"]):
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=180)
    lines = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
