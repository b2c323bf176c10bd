"""`python -m gan_dist.plots` on a tiny trained workdir: every figure exists and is what it says."""

import io
import re
import shutil

from absl import flags
import numpy as np
from PIL import Image
import pytest

from gan_dist import cli
from gan_dist import config as config_lib
from gan_dist import data
from gan_dist import errors
from gan_dist import figures
from gan_dist import files
from gan_dist import inference
from gan_dist import plots
from gan_dist import sampling
from gan_dist import workdir as workdir_lib
from tests import helpers
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
  # Each image's first pixel is its example index (helpers.make_idx_dir), of class index mod 10: row k (2 images a
  # row) holds the first two examples of class k.
  index = real[:, 0, 0, 0].astype(int).reshape(10, 2)
  np.testing.assert_array_equal(index % 10, np.repeat(np.arange(10)[:, None], 2, axis=1))
  np.testing.assert_array_equal(index, np.arange(10)[:, None] + [0, 10])


def test_real_vs_generated_labels_its_rows_with_the_class_names_the_run_recorded(run_cfg, tmp_path, monkeypatch):
  """One row per class, each labelled with its class's name (its number where the data named none); IDX data names
  none: no labels."""
  drawn = []
  comparison_figure = figures.comparison_figure
  monkeypatch.setattr(figures, "comparison_figure", lambda *a, **k: drawn.append(k) or comparison_figure(*a, **k))
  plots.write_all(run_cfg.workdir, out_dir=str(tmp_path / "plain"))
  workdir = str(tmp_path / "named")
  shutil.copytree(run_cfg.workdir, workdir)
  workdir_lib.write_class_names(workdir, [f"digit {k}" for k in range(9)])
  plots.write_all(workdir)
  assert drawn[0]["row_labels"] is None
  assert drawn[1]["row_labels"] == [f"digit {k}" for k in range(9)] + ["9"] and drawn[1]["rows"] == 10
  black = np.zeros([4, 8, 8, 1], np.uint8)

  def ink_left_of_the_first_grid(row_labels):
    gray = np.asarray(Image.open(io.BytesIO(figures.comparison_figure(black, black, rows=2, row_labels=row_labels)))
                      .convert("L"))
    grid_left = np.argmax((gray < 10).sum(axis=0) > gray.shape[0] // 2)  # The first column of the black grid.
    return (gray[:, :grid_left] < 128).sum()

  assert ink_left_of_the_first_grid(None) == 0 and ink_left_of_the_first_grid(["cat", "dog"]) > 20


def test_main_writes_into_out_dir_with_another_data_dir(run_cfg, tmp_path, monkeypatch, capsys):
  # --data_dir replaces the run's: a folder without the data is refused, a copy of the data is read.
  argv = (f"--workdir={run_cfg.workdir}", f"--out_dir={tmp_path / 'figs'}", "--step=2")
  monkeypatch.setattr(cli, "FLAGS", _flags(*argv, f"--data_dir={tmp_path / 'empty'}"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(errors.UserError, match="empty"):
    plots.main([])
  assert not (tmp_path / "figs").exists()  # Refused before the first figure was written.
  moved = shutil.copytree(run_cfg.data_dir, tmp_path / "moved")
  monkeypatch.setattr(cli, "FLAGS", _flags(*argv, f"--data_dir={moved}"))
  capsys.readouterr()
  plots.main([])
  out = capsys.readouterr().out
  for name in ("losses", "progress", "real_vs_generated", "interpolation"):
    assert f"{name}: {tmp_path / 'figs'}/" in out
  assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == [
      "interpolation.png", "losses.png", "progress.gif", "real_vs_generated.png"]


@pytest.mark.parametrize("argv, message", [
    (["--step=3"], r"no checkpoint at step 3 in .*; there are: 2, 4"),
    (["--best"], "no best checkpoint"),
    (["--data_dir=MISSING"], "does not exist"),
    (["--out_dir=FILE"], "is a file, not a directory"),
])
def test_bad_input_leaves_the_workdir_as_it_was(run_cfg, tmp_path, monkeypatch, capsys, argv, message):
  """The figures go into W/plots by default: nothing of them may appear when the command fails (exit 2)."""
  workdir = shutil.copytree(run_cfg.workdir, str(tmp_path / "workdir"))
  (tmp_path / "file").write_text("")
  argv = [f"--workdir={workdir}"] + [a.replace("MISSING", str(tmp_path / "missing"))
                                     .replace("FILE", str(tmp_path / "file")) for a in argv]
  before = helpers.snapshot(workdir)
  code, err = helpers.tool_command(plots, argv, monkeypatch, capsys)
  lines = [l for l in err.splitlines() if l.startswith("error: ")]
  assert code == 2 and len(lines) == 1 and re.search(message, lines[0]), (argv, err[-2000:])
  assert helpers.snapshot(workdir) == before and (tmp_path / "file").read_text() == ""


def test_best_draws_the_generated_figures_of_the_best_checkpoint(run_cfg, tmp_path):
  workdir = shutil.copytree(run_cfg.workdir, str(tmp_path / "workdir"))
  # G's weights halved: a best that is not checkpoints/ckpt-2 under another name.
  kept = helpers.keep_as_best(workdir, 2, helpers.scale_generators(0.5))
  best = plots.write_all(workdir, str(tmp_path / "best"), best=True)
  step_2 = plots.write_all(workdir, str(tmp_path / "step_2"), step=2)
  pixels = {name: {k: np.asarray(_image(d[k])) for k in ("interpolation", "real_vs_generated")}
            for name, d in (("best", best), ("step_2", step_2))}
  for figure in ("interpolation", "real_vs_generated"):
    assert not np.array_equal(pixels["best"][figure], pixels["step_2"][figure]), figure
  # The interpolation drawn directly from the best checkpoint's files, restored by their path.
  run = inference.load(workdir, 2)
  inference.restore(run.state, kept)
  noise, labels = figures.interpolation_inputs(run.gan.latent_dim, run.gan.num_classes, run.cfg.seed,
                                               truncation=run.cfg.truncation)
  direct = sampling.image_grid(sampling.generate(run.generate_fn(), noise, labels), rows=figures.INTERPOLATION_ROWS)
  np.testing.assert_array_equal(pixels["best"]["interpolation"].reshape(direct.shape), direct)


def test_augmentation_rows_show_the_same_images_at_rising_p(tmp_path):
  folder = helpers.make_image_folder(str(tmp_path / "images"), num=12, bad=())["root"]
  cfg = helpers.config(tmp_path, dataset="folder", data_dir=folder, image_size=32, channels=3, augment="ada")
  rows = plots.augmentation_rows(cfg, [0.0, 0.5, 1.0], num=6)
  assert [label for label, _ in rows] == ["p = 0", "p = 0.5", "p = 1"]
  assert all(images.shape == (6, 32, 32, 3) and images.dtype == np.uint8 for _, images in rows)
  # p = 0: the training images as the data pipeline gives them (every sixth of the folder, in order).
  source = data.open_source(cfg)
  keep = source.filtered(np.unique(np.linspace(0, 11, 6).astype(np.int64)), "")
  plain = np.concatenate([b["images"].numpy() for b in data.eval_dataset(keep, (32, 32, 3), 64)])
  np.testing.assert_array_equal(rows[0][1], sampling.to_uint8(plain).numpy())
  changed = lambda images: (np.abs(images.astype(int) - rows[0][1].astype(int)).reshape(6, -1).max(1) > 0).sum()
  assert changed(rows[2][1]) == 6 and changed(rows[1][1]) >= 1
  png = figures.augmentation_figure(rows, title="ada")
  assert Image.open(io.BytesIO(png)).format == "PNG"


@pytest.mark.parametrize("value", ["0,2", "", "x"])
def test_bad_augment_p_is_refused(run_cfg, monkeypatch, value):
  monkeypatch.setattr(cli, "FLAGS", _flags(f"--workdir={run_cfg.workdir}", f"--augment_p={value}"))
  with pytest.raises(errors.UserError, match=rf"^--augment_p={value}: values of p must be numbers in \[0, 1\] \(one "
                                             r"or more, comma-separated\)$"):
    plots.main(["plots"])
