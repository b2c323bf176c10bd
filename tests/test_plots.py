"""`python -m gan_dist.plots` on a tiny trained workdir: every figure exists and is what it says."""

import io
import shutil

from absl import flags
import numpy as np
from PIL import Image
import pytest

from gan_dist import cli
from gan_dist import config as config_lib
from gan_dist import errors
from gan_dist import figures
from gan_dist import files
from gan_dist import inference
from gan_dist import plots
from tests.eval import tiny_run


@pytest.fixture(scope="module")
def run_cfg(tmp_path_factory, one_device):
  return tiny_run.shared_run(tmp_path_factory, one_device)


def _image(path):
  image = Image.open(io.BytesIO(files.read_bytes(path)))
  image.load()
  return image


def _flags(*argv) -> flags.FlagValues:
  fv = flags.FlagValues()
  config_lib.define_flags(fv)
  plots.define_flags(fv)
  fv(["plots", *argv])
  return fv


def test_plots_writes_every_figure(run_cfg):
  written = plots.write_all(run_cfg.workdir)
  assert set(written) == {"losses", "progress", "real_vs_generated", "interpolation"}
  assert all(path.startswith(f"{run_cfg.workdir}/plots/") for path in written.values())
  gif = _image(written["progress"])
  assert gif.format == "GIF" and gif.n_frames == 2  # The grids of steps 2 and 4.
  assert _image(written["losses"]).format == "PNG" and _image(written["real_vs_generated"]).format == "PNG"
  strip = np.asarray(_image(written["interpolation"]))
  # 8 rows of 10 interpolation steps of 28x28 images, not blank.
  assert strip.shape[:2] == (8 * 28, 10 * 28) and strip.std() > 1


def test_the_run_s_losses_are_read_from_its_event_files(run_cfg):
  scalars = figures.read_scalars(f"{run_cfg.workdir}/tensorboard")
  assert [step for step, _ in scalars["d_loss"]] == [1, 2, 3, 4]


def test_real_images_one_row_per_class(run_cfg):
  run = inference.load(run_cfg.workdir)
  real, rows = plots.real_grid_images(run.cfg, run.gan, 25)
  assert rows == 10 and real.shape == (20, 28, 28, 1) and real.dtype == np.uint8
  assert real.std() > 10  # Random IDX pixels, not a blank.


def test_main_writes_into_out_dir_with_another_data_dir(run_cfg, tmp_path, monkeypatch, capsys):
  # --data_dir replaces the run's: a folder without the data is refused, a copy of the data is read.
  argv = (f"--workdir={run_cfg.workdir}", f"--out_dir={tmp_path / 'figs'}", "--step=2")
  monkeypatch.setattr(cli, "FLAGS", _flags(*argv, f"--data_dir={tmp_path / 'empty'}"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(errors.UserError, match="empty"):
    plots.main([])
  moved = shutil.copytree(run_cfg.data_dir, tmp_path / "moved")
  monkeypatch.setattr(cli, "FLAGS", _flags(*argv, f"--data_dir={moved}"))
  capsys.readouterr()
  plots.main([])
  out = capsys.readouterr().out
  for name in ("losses", "progress", "real_vs_generated", "interpolation"):
    assert f"{name}: {tmp_path / 'figs'}/" in out
  assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == [
      "interpolation.png", "losses.png", "progress.gif", "real_vs_generated.png"]
