"""`python -m gan_dist.sample`: the images are the generator's own (not blank), labels and grids as documented.

Bad inputs run in this process through what the entry point runs once started (cli.parse_flags, then
cli.guard(sample.main)); one test starts the real command."""

import errno
import os
import re
import shutil

from absl import flags
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from gan_dist import api
from gan_dist import cli
from gan_dist import config as config_lib
from gan_dist import errors
from gan_dist import files
from gan_dist import inference
from gan_dist import sample
from gan_dist import sampling
from gan_dist import workdir as workdir_lib
from tests import helpers
from tests import subprocs
from tests.serve import workdirs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """{"conditional": Run, "unconditional": Run} of the tiny workdirs (workdir path in run.cfg.workdir)."""
  return {kind: inference.load(workdirs.trained(kind, tmp_path_factory)) for kind in workdirs.KINDS}


def _direct(run, noise, labels) -> np.ndarray:
  """uint8 images of the run's sampling generator called directly, without the sampling library's batching."""
  images = run.gan.generate(tf.constant(noise), tf.constant(labels), generator=run.generator)
  return np.clip(np.round((np.asarray(images, np.float64) + 1) * 127.5), 0, 255).astype(int)


def _flags(*argv) -> flags.FlagValues:
  fv = flags.FlagValues()
  config_lib.define_flags(fv)
  sample.define_flags(fv)
  fv(["sample", *argv])
  return fv


@pytest.mark.parametrize("kind", list(workdirs.KINDS))
def test_samples_vary_and_are_the_generator_s_images(runs, kind):
  run = runs[kind]
  arrays = sample.sample(run, 12, seed=3)
  images = arrays["images"]
  assert images.shape == (12, 28, 28, 1) and images.dtype == np.uint8
  # Not a constant picture, and not twelve copies of one image.
  assert images.std() > 5
  assert images.reshape(12, -1).astype(float).std(axis=0).mean() > 2
  noise, labels = sampling.inputs(12, workdirs.LATENT_DIM, run.gan.num_classes, 3, truncation=0.0)
  np.testing.assert_allclose(images.astype(int), _direct(run, noise, labels), atol=1)
  if run.gan.conditional:
    np.testing.assert_array_equal(arrays["labels"], np.arange(12) % 10)
  else:
    assert "labels" not in arrays
  # Image i of a seed does not depend on how many are drawn.
  np.testing.assert_allclose(sample.sample(run, 2, seed=3)["images"].astype(int), images[:2].astype(int), atol=1)


def test_one_label_and_labels_the_model_does_not_have(runs):
  run = runs["conditional"]
  arrays = sample.sample(run, 4, seed=1, label=7)
  np.testing.assert_array_equal(arrays["labels"], [7, 7, 7, 7])
  noise = sampling.noise(4, workdirs.LATENT_DIM, 1, truncation=0.0)
  np.testing.assert_allclose(arrays["images"].astype(int), _direct(run, noise, arrays["labels"]), atol=1)
  with pytest.raises(errors.UserError, match=r"--label=10 outside \[0, 10\)"):
    sample.sample(run, 4, seed=1, label=10)
  with pytest.raises(errors.UserError, match="not conditional"):
    sample.sample(runs["unconditional"], 4, seed=1, label=0)


def test_grid_one_row_per_class_or_the_sampled_images(runs):
  run = runs["conditional"]
  grid = sample.grid_image(run, 25, 0, None, sample.sample(run, 25, 0)["images"])
  assert grid.shape == (10 * 28, 2 * 28, 1)  # 25 images -> 2 of each class, one row per class.
  noise, labels, _ = sampling.class_rows(25, workdirs.LATENT_DIM, 10, 0, truncation=0.0)
  row_of_class_3 = _direct(run, noise[6:8], labels[6:8])
  np.testing.assert_allclose(grid[3 * 28:4 * 28].astype(int), np.concatenate(list(row_of_class_3), axis=1), atol=1)
  for kind, label in (("conditional", 4), ("unconditional", None)):
    images = sample.sample(runs[kind], 6, 0, label)["images"]
    grid = sample.grid_image(runs[kind], 6, 0, label, images)
    np.testing.assert_array_equal(grid, sampling.image_grid(images))
    assert grid.shape == (2 * 28, 3 * 28, 1)


def test_write_npz_is_atomic_and_round_trips(tmp_path, monkeypatch):
  arrays = {"images": np.arange(24, dtype=np.uint8).reshape(2, 3, 4, 1), "labels": np.array([1, 2], np.int32)}
  path = str(tmp_path / "out" / "s.npz")
  sample.write_npz(path, arrays)
  loaded = np.load(path)
  assert sorted(loaded.files) == ["images", "labels"]
  np.testing.assert_array_equal(loaded["images"], arrays["images"])
  np.testing.assert_array_equal(loaded["labels"], arrays["labels"])
  assert loaded["labels"].dtype == np.int32
  assert os.listdir(tmp_path / "out") == ["s.npz"]
  old = (tmp_path / "out" / "s.npz").read_bytes()
  newer = {"images": arrays["images"][::-1], "labels": np.array([3, 4], np.int32)}
  write = tf.io.gfile.GFile.write

  def disk_fills_halfway(f, data):
    write(f, data[:len(data) // 2])
    raise OSError(errno.ENOSPC, "No space left on device")

  def rename_fails(*unused_args, **unused_kwargs):
    raise tf.errors.PermissionDeniedError(None, None, "rename refused")

  # A write that fails midway, or once the new file is whole, leaves the old samples and no temporary file.
  for target, name, failure in ((tf.io.gfile.GFile, "write", disk_fills_halfway),
                                (tf.io.gfile, "rename", rename_fails)):
    with monkeypatch.context() as patch:
      patch.setattr(target, name, failure)
      with pytest.raises((OSError, tf.errors.OpError), match="No space left on device|rename refused"):
        sample.write_npz(path, newer)
    assert (tmp_path / "out" / "s.npz").read_bytes() == old, name
    assert os.listdir(tmp_path / "out") == ["s.npz"], name


def test_main_grid_alone_writes_no_npz_and_out_writes_the_samples(runs, tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(tmp_path)
  workdir = runs["conditional"].cfg.workdir
  monkeypatch.setattr(cli, "FLAGS", _flags(f"--workdir={workdir}", "--num=25", "--grid=grid.png"))
  sample.main([])
  assert Image.open(tmp_path / "grid.png").size == (2 * 28, 10 * 28)
  assert not (tmp_path / "samples.npz").exists()  # --grid without --out: only the grid.
  assert "EMA generator, step 1" in capsys.readouterr().out
  monkeypatch.setattr(cli, "FLAGS", _flags(f"--workdir={workdir}", "--num=5", "--seed=2", "--out=s.npz"))
  sample.main([])
  loaded = np.load(tmp_path / "s.npz")
  expected = sample.sample(runs["conditional"], 5, seed=2)
  np.testing.assert_array_equal(loaded["images"], expected["images"])
  np.testing.assert_array_equal(loaded["labels"], expected["labels"])
  assert "Wrote 5 images (28, 28, 1)" in capsys.readouterr().out


def test_label_is_a_class_id_or_a_class_name_the_run_recorded(runs, tmp_path, monkeypatch, capsys):
  """`--label=cat` on a run of class folders: the class of that name; an unknown name lists the recorded ones; a run
  without names (IDX data) takes ids only."""
  monkeypatch.chdir(tmp_path)
  workdir = str(tmp_path / "named")
  shutil.copytree(runs["conditional"].cfg.workdir, workdir)
  workdir_lib.write_class_names(workdir, ["zero", "one", "two", "three"])
  for label in ("three", "3", " 3"):
    monkeypatch.setattr(cli, "FLAGS", _flags(f"--workdir={workdir}", "--num=4", f"--label={label}", "--out=n.npz"))
    sample.main([])
    np.testing.assert_array_equal(np.load(tmp_path / "n.npz")["labels"], [3, 3, 3, 3])
  run = inference.load(workdir)
  with pytest.raises(errors.UserError, match=r"^--label=cat is neither a class id nor a class name of this run: "
                                             r"0 \(zero\), 1 \(one\), 2 \(two\), 3 \(three\)$"):
    run.class_id("cat", "--label")
  with pytest.raises(errors.UserError, match=r"^label=three is neither a class id nor a class name of this run "
                                             r"\(it recorded none: give the id, an integer\)$"):
    runs["conditional"].class_id("three")
  assert (run.class_id(None), run.class_id(3), run.class_id("three")) == (None, 3, 3)
  # The Python API takes the name too.
  np.testing.assert_array_equal(api.sample(workdir, 4, seed=1, label="three"), api.sample(workdir, 4, seed=1, label=3))
  # Class folders named by digits: the name wins over the id it spells, as in the demo (tests/serve/test_app.py).
  workdir_lib.write_class_names(workdir, ["1", "10", "2", "3"])
  run = inference.load(workdir)
  assert (run.class_id("10"), run.class_id(" 2"), run.class_id("0"), run.class_id(3)) == (1, 2, 0, 3)


def test_the_api_refuses_samples_that_would_not_fit_in_memory_before_sampling(runs):
  """As `sample --num` does: api.sample(w, 10**12) was a MemoryError traceback or the kernel's OOM killer."""
  with pytest.raises(errors.UserError, match=r"^num=1000000000000: sampling 1,000,000,000,000 images of 28x28x1 "
                                             r"needs about \d+\.\d GiB of memory, more than the [\d.]+ GiB available"):
    api.sample(runs["conditional"].cfg.workdir, 10**12, seed=1)


def test_truncation_flag_samples_truncated_noise_and_overrides_the_run_s(runs, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  run = runs["conditional"]
  assert run.cfg.truncation == 0.0
  monkeypatch.setattr(cli, "FLAGS", _flags(f"--workdir={run.cfg.workdir}", "--num=20", "--seed=4",
                                           "--truncation=0.25", "--out=t.npz"))
  sample.main([])
  truncated = np.load(tmp_path / "t.npz")["images"].astype(int)
  noise, labels = sampling.inputs(20, workdirs.LATENT_DIM, 10, 4, truncation=0.25)
  assert np.abs(noise).max() <= 0.25
  np.testing.assert_allclose(truncated, _direct(run, noise, labels), atol=1)
  plain = sample.sample(run, 20, seed=4)["images"].astype(int)
  assert np.abs(truncated - plain).mean() > 1  # Not the untruncated images.


@pytest.mark.slow
def test_command_line_writes_the_grid_and_the_samples(runs, tmp_path):
  workdir = runs["conditional"].cfg.workdir
  out = tmp_path / "out"
  rc, log = subprocs.run([subprocs.PYTHON, "-m", "gan_dist.sample", f"--workdir={workdir}", "--num=25",
                          f"--grid={out / 'grid.png'}", f"--out={out / 's.npz'}", "--seed=4"],
                         tmp_path / "sample.log",
                         # This process's CPU threads: the same kernel summation order, hence the same float16 bits.
                         subprocs.env(tmp_path, TF_NUM_INTRAOP_THREADS=os.environ.get("TF_NUM_INTRAOP_THREADS")),
                         timeout=300)
  assert rc == 0, subprocs.tail(log)
  assert Image.open(out / "grid.png").size == (2 * 28, 10 * 28)
  loaded = np.load(out / "s.npz")
  np.testing.assert_array_equal(loaded["images"], sample.sample(runs["conditional"], 25, seed=4)["images"])
  assert not [name for name in os.listdir(out) if name.endswith(files.TMP_SUFFIX)]
  assert sorted(os.listdir(out)) == ["grid.png", "s.npz"]


@pytest.mark.parametrize("argv", [["--workdir=MISSING"], ["--workdir=CONDITIONAL", "--label=12"],
                                  ["--workdir=CONDITIONAL", "--label=cat"], ["--num=0"], ["extra"]])
def test_bad_input_is_one_line_and_exit_2(argv, runs, tmp_path, monkeypatch, capsys):
  argv = [a.replace("MISSING", str(tmp_path / "missing")).replace("CONDITIONAL", runs["conditional"].cfg.workdir)
          for a in argv]
  monkeypatch.chdir(tmp_path)
  code, err = helpers.tool_command(sample, argv, monkeypatch, capsys)
  lines = [l for l in err.splitlines() if l.startswith("error: ")]
  assert code == 2 and len(lines) == 1 and "Traceback" not in err, (argv, err[-2000:])
  assert os.listdir(tmp_path) == []  # No samples.npz, no grid.


def test_best_samples_the_best_checkpoint(runs, tmp_path, monkeypatch):
  workdir = str(tmp_path / "workdir")
  shutil.copytree(runs["unconditional"].cfg.workdir, workdir)
  helpers.keep_as_best(workdir, 1, helpers.scale_generators(0.5))  # A best that is not the latest checkpoint.
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(cli, "FLAGS", _flags(f"--workdir={workdir}", "--num=6", "--best", "--out=best.npz"))
  sample.main([])
  images = np.load(tmp_path / "best.npz")["images"]
  np.testing.assert_array_equal(images, sample.sample(inference.load(workdir, best=True), 6, seed=0)["images"])
  assert np.abs(images.astype(int) - sample.sample(runs["unconditional"], 6, seed=0)["images"]).mean() > 1


@pytest.mark.parametrize("argv, message", [
    (["--out=DIR"], r"--out=.*/dir is a directory; give a file name"),
    (["--grid=FILE/grid.png"], r"--grid=.*/file/grid.png: .*/file is a file, not a directory"),
    (["--best"], "no best checkpoint in .*: train with --eval_every"),
    (["--best", "--step=1"], "pass --step or --best, not both"),
    (["--out="], r"^error: --out is empty; give a file name$"),
    (["--out=DIR/new/"], r"--out=.*/dir/new/ is a directory; give a file name"),  # Not a traceback after sampling.
    (["--grid=DIR/g/"], r"--grid=.*/dir/g/ is a directory; give a file name"),
    (["--grid=g.jpg"], r"^error: --grid=g\.jpg: the grid is a PNG image; give a file name ending in \.png$"),
    (["--out=grid.png"], r"^error: --out=grid\.png: the samples are an \.npz archive \(images, labels\); give a "
                         r"file name ending in \.npz \(--grid=FILE\.png writes a PNG grid\)$"),
    (["--num=64", "MEMORY"], r"^error: --num=64: sampling 64 images of 28x28x1 needs about 0\.0 GiB of memory, more "
                             r"than the 0\.0 GiB available; sample fewer \(several runs with other seeds give "
                             r"other images\)$"),
])
def test_outputs_and_checkpoints_are_checked_before_sampling(argv, message, runs, tmp_path, monkeypatch, capsys):
  (tmp_path / "dir").mkdir()
  (tmp_path / "file").write_text("")
  if "MEMORY" in argv:  # A machine with 1,000 bytes available (--num=10**11 asked for 11.6 TiB: a traceback).
    argv = [a for a in argv if a != "MEMORY"]
    monkeypatch.setattr(sampling, "_available_memory", lambda: 1000)
  argv = [f"--workdir={runs['conditional'].cfg.workdir}"] + [
      a.replace("DIR", str(tmp_path / "dir")).replace("FILE", str(tmp_path / "file")) for a in argv]
  monkeypatch.chdir(tmp_path)
  before = helpers.snapshot(str(tmp_path))
  code, err = helpers.tool_command(sample, argv, monkeypatch, capsys)
  lines = [l for l in err.splitlines() if l.startswith("error: ")]
  assert code == 2 and len(lines) == 1 and re.search(message, lines[0]), (argv, err[-2000:])
  assert helpers.snapshot(str(tmp_path)) == before  # No samples.npz, no grid, no temporary file.
