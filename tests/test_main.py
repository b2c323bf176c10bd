"""The command line: train, resume, TensorBoard contents, samples; and every bad input answered in one line, with exit
code 2 and the workdir left exactly as it was (issue 8).

Most bad inputs run in this process through `main.run_cli` (what `python -m gan_dist.main` runs after parsing), so
that each takes a second rather than an interpreter start; a few go through the real CLI. Bad flags and flagfiles:
tests/test_cli.py.
"""

import contextlib
import dataclasses
import glob
import gzip
import logging as py_logging
import os
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from gan_dist import config as config_lib
from gan_dist import errors
from gan_dist import inference
from gan_dist import main as main_lib
from gan_dist import sample
from gan_dist import train
from tests import helpers
from tests import subprocs

def _run(args, tmp_path, name, timeout=300, expect=0):
  """Runs `python ARGS` from the repo root (tests/subprocs.py: CPU only, a watchdog); returns stderr and stdout."""
  rc, out = subprocs.run([subprocs.PYTHON, *args], tmp_path / f"{name}.log", subprocs.env(tmp_path), timeout=timeout)
  assert rc == expect, subprocs.tail(out, 3000)
  return out


def _event_tags(workdir):
  scalars, images = set(), set()
  for path in glob.glob(os.path.join(workdir, "tensorboard", "events.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        kind = value.metadata.plugin_data.plugin_name
        (images if kind == "images" else scalars).add(value.tag)
  return scalars, images


@pytest.mark.slow
def test_train_resume_sample(tmp_path, one_device, monkeypatch, caplog):
  """Trains through the real command line (2 replicas), then resumes the workdir and samples it in this process
  (what `python -m gan_dist.main` runs once its flags are parsed, and what `python -m gan_dist.sample` does): one
  interpreter start, not two."""
  workdir = str(tmp_path / "W")
  data_dir = helpers.make_idx_dir(str(tmp_path / "idx"), num=64)
  # The smallest model of configs/ (tracing dcgan's convolutions on 2 replicas took most of this test's time).
  common = ["--flagfile=configs/mlp_gan.cfg", "--strategy=mirrored", "--num_cpu_replicas=2", f"--data_dir={data_dir}",
            f"--workdir={workdir}", "--batch_size=16", "--checkpoint_every=2", "--summary_every=2",
            "--sample_every=4", "--steps_per_loop=2"]
  log = _run(["-m", "gan_dist.main", *common, "--train_steps=4"], tmp_path, "train")
  assert "Strategy MirroredStrategy with 2 replica(s)" in log
  assert tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints")).endswith("ckpt-4")
  assert os.path.exists(os.path.join(workdir, "checkpoints", "ckpt-2.index"))
  scalars, images = _event_tags(workdir)
  for tag in ("d_loss", "g_loss", "d_real_accuracy", "d_fake_accuracy", "d_real_output", "d_fake_output",
              "images_per_sec", "steps_per_sec", "time/train", "time/checkpoints", "time/samples"):
    assert tag in scalars, (tag, scalars)
  assert "samples" in images
  assert glob.glob(os.path.join(workdir, "samples", "*.png"))
  assert "--arch=mlp" in open(os.path.join(workdir, "flags.txt")).read()
  assert "(time: train " in log  # Where the wall time went, in every log line.

  # The same command line with --train_steps=6, parsed as the command parses it (flagfiles read from the repository
  # root), on one device (half the tracing of 2 replicas; a workdir does not depend on the number of replicas).
  monkeypatch.chdir(subprocs.REPO)
  resume = config_lib.from_args(common + ["--train_steps=6", "--strategy=one_device", "--num_cpu_replicas=1"])
  with caplog.at_level(py_logging.INFO, logger="absl"):
    code = main_lib.run_cli(resume, make_strategy=lambda _: one_device)
  assert code == errors.EXIT_OK and "at step 4" in caplog.text and "step 6/6" in caplog.text, caplog.text[-3000:]
  assert tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints")).endswith("ckpt-6")

  # What `python -m gan_dist.sample` does (its command line: tests/test_sample.py), on the resumed run.
  run = inference.load(workdir)
  assert run.step == 6
  images = sample.sample(run, 64, seed=0)["images"]
  assert images.shape == (64, 28, 28, 1) and images.dtype == np.uint8 and images.std() > 0


@pytest.mark.slow
def test_helpfull_documents_every_flag(tmp_path):
  log = _run(["-m", "gan_dist.main", "--helpfull"], tmp_path, "helpfull", timeout=120, expect=0)  # Asked for: 0.
  for name in config_lib.NAMES:
    assert f"--{name}:" in log or f"--[no]{name}:" in log, name


def _one_line_error(stderr: str) -> str:
  errors_ = [line for line in stderr.splitlines() if line.startswith("error: ")]
  assert len(errors_) == 1, stderr[-2000:]
  assert "Traceback" not in stderr, stderr[-2000:]
  return errors_[0]


@pytest.mark.slow
def test_cli_bad_flag_and_traceback_only_with_verbosity(tmp_path):
  """Through the real entry point: exit code 2, one line; --verbosity=1 adds the traceback (both at once: their
  interpreter start-ups overlap)."""
  workdir = tmp_path / "W"
  base = [subprocs.PYTHON, "-m", "gan_dist.main", f"--workdir={workdir}", "--strategy=one_device"]
  (bad_rc, bad), (verbose_rc, verbose) = subprocs.run_all(
      [base + ["--bogus=1"], base + ["--arch=nope", "--verbosity=1"]],
      [tmp_path / "bogus.log", tmp_path / "verbose.log"], subprocs.env(tmp_path), timeout=120)
  assert bad_rc == 2
  assert _one_line_error(bad).startswith("error: Unknown command line flag 'bogus'")
  assert verbose_rc == 2 and "Traceback" in verbose
  assert verbose.strip().splitlines()[-1].startswith("error: unknown --arch='nope'; known architectures: ")
  assert not workdir.exists()


# ------------------------------------------------------------------------------------------------ bad inputs


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
  return helpers.make_idx_dir(str(tmp_path_factory.mktemp("idx")), num=64)


@pytest.fixture(scope="module")
def mlp_workdir(tmp_path_factory, idx_dir, one_device):
  """A trained mlp workdir (2 steps, batch 8, one replica), copied by each test that resumes it."""
  cfg = helpers.config(tmp_path_factory.mktemp("mlp"), arch="mlp", data_dir=idx_dir, train_steps=2,
                       checkpoint_every=2)
  train.run(cfg, one_device)
  return cfg


def _bad_idx(kind, directory):
  """An IDX directory with one problem of `kind`."""
  helpers.make_idx_dir(directory, num=64)
  images = os.path.join(directory, "train-images-idx3-ubyte.gz")
  labels = os.path.join(directory, "train-labels-idx1-ubyte.gz")
  if kind == "missing":
    os.remove(labels)
  elif kind == "wrong_magic":
    with gzip.open(images, "wb") as f:
      f.write(b"\x12\x34\x08\x03" + bytes(100))
  elif kind == "wrong_counts":
    helpers.write_idx(labels, np.zeros([63], np.uint8))
  elif kind == "truncated":
    data = open(images, "rb").read()
    open(images, "wb").write(data[:len(data) // 2])
  elif kind == "bad_gzip":
    open(images, "wb").write(b"this is not gzip data at all" * 20)
  return directory


def _with(cfg, **overrides):
  return dataclasses.replace(cfg, **overrides)


BAD_IDX = ("missing", "wrong_magic", "wrong_counts", "truncated", "bad_gzip")


@pytest.mark.parametrize("case", [
    "unknown_arch", "unknown_dataset", "batch_not_divisible", *[f"idx_{k}" for k in BAD_IDX],
    "class_filter_conditional", "num_classes_below_labels", "other_arch_workdir", "other_arch_checkpoint",
    "changed_batch_size", "changed_d_steps_per_g", "profile_steps", "fewer_examples_than_a_batch",
    "fewer_examples_on_resume", "damaged_folder", "conditional_without_classes", "too_few_to_evaluate"])
def test_bad_input_is_one_line_exit_2_and_leaves_the_workdir_alone(case, tmp_path, capsys, idx_dir, mlp_workdir,
                                                                  mirrored2, one_device):
  workdir = str(tmp_path / "W")
  cfg = helpers.config(tmp_path, data_dir=idx_dir, workdir=workdir)
  expected = {
      "unknown_arch": "unknown --arch='nope'; known architectures: ",
      "unknown_dataset": "nosuchdataset",
      "batch_not_divisible": "--batch_size=7 does not split evenly over the 2 replicas",
      "class_filter_conditional": "--class_filter=3 keeps one class, but --arch=cgan_mlp is conditional",
      "num_classes_below_labels": "--num_classes=4 is below the 10 classes",
      "other_arch_workdir": "holds a run with another model configuration: --arch (workdir has 'mlp', this run "
                            "'dcgan')",
      "other_arch_checkpoint": "belongs to another model than this run's",
      "changed_batch_size": "--batch_size (workdir has 8, this run 16)",
      "changed_d_steps_per_g": "--d_steps_per_g (workdir has 1, this run 2)",
      "profile_steps": "--profile_steps='5' must be FIRST,LAST",
      # Found by reading data before writing: flags.txt (or flags_latest.txt on resume) was written first.
      "fewer_examples_than_a_batch": "The dataset has 64 examples, fewer than one global batch of 128",
      "fewer_examples_on_resume": "The dataset has 4 examples, fewer than one global batch of 8",
      "damaged_folder": "(nor any of its 7 substitutes); most files seem damaged",
      "conditional_without_classes": "--arch=cresnet is conditional and needs labels with at least 2 classes",
      "too_few_to_evaluate": "too few real images to evaluate on: 18 in the reference, 2 in the floor",
      "idx_missing": "but not train-labels-idx1-ubyte[.gz] of the train split; copy the missing file(s) there",
      "idx_wrong_magic": "train-images-idx3-ubyte.gz is not an IDX file (bad magic",
      "idx_wrong_counts": "train-images-idx3-ubyte.gz holds 64 images but ",
      "idx_truncated": "train-images-idx3-ubyte.gz cannot be read (EOFError: ",
      "idx_bad_gzip": "train-images-idx3-ubyte.gz cannot be read (BadGzipFile: ",
  }
  if case == "unknown_arch":
    cfg = _with(cfg, arch="nope")
  elif case == "unknown_dataset":
    cfg = _with(cfg, dataset="nosuchdataset", data_dir=str(tmp_path / "empty"))
    os.makedirs(cfg.data_dir)
  elif case == "batch_not_divisible":
    cfg = _with(cfg, batch_size=7, data_dir=str(tmp_path / "no_such_data"))  # Checked before any data is read.
  elif case.startswith("idx_"):
    cfg = _with(cfg, data_dir=_bad_idx(case[4:], str(tmp_path / "bad_idx")))
  elif case == "class_filter_conditional":
    cfg = _with(cfg, arch="cgan_mlp", class_filter=3)
  elif case == "num_classes_below_labels":
    cfg = _with(cfg, num_classes=4)
  elif case in ("other_arch_workdir", "other_arch_checkpoint", "changed_batch_size", "changed_d_steps_per_g"):
    cfg = helpers.copy_run(mlp_workdir, tmp_path, train_steps=4)  # (into `workdir`, tmp_path/W)
    if case == "other_arch_checkpoint":
      os.remove(os.path.join(workdir, "flags.txt"))  # Only the checkpoint tells.
    cfg = _with(cfg, **{"other_arch_workdir": dict(arch="dcgan"), "other_arch_checkpoint": dict(arch="dcgan"),
                        "changed_batch_size": dict(batch_size=16),
                        "changed_d_steps_per_g": dict(d_steps_per_g=2)}[case])
  elif case == "profile_steps":
    cfg = _with(cfg, profile_steps="5")
  elif case == "fewer_examples_than_a_batch":
    cfg = _with(cfg, batch_size=128)
  elif case == "fewer_examples_on_resume":  # A moved dataset may be given on resume, not one too small.
    cfg = helpers.copy_run(mlp_workdir, tmp_path, train_steps=4, num_classes=10,
                           data_dir=helpers.make_idx_dir(str(tmp_path / "four"), num=4))
  elif case == "damaged_folder":
    folder = helpers.make_image_folder(str(tmp_path / "damaged"), num=0, classes=(),
                                       bad=[f"junk{i}.jpg" for i in range(10)])
    cfg = _with(cfg, dataset="folder", data_dir=folder["root"], channels=3)
  elif case in ("conditional_without_classes", "too_few_to_evaluate"):
    folder = helpers.make_image_folder(str(tmp_path / "flat"), num=20, classes=(), bad=())
    cfg = _with(cfg, dataset="folder", data_dir=folder["root"], channels=3,
                **(dict(arch="cresnet", image_size=32) if case == "conditional_without_classes" else
                   dict(arch="mlp", eval_every=1, eval_cache_dir=str(tmp_path / "cache"))))
  before = helpers.snapshot(workdir)

  # Two replicas where they are the point; one (half the tracing) elsewhere.
  strategy = mirrored2 if case == "batch_not_divisible" else one_device
  code = main_lib.run_cli(cfg, make_strategy=lambda _: strategy)

  assert code == errors.EXIT_USAGE
  line = _one_line_error(capsys.readouterr().err)
  assert expected[case] in line, line
  assert helpers.snapshot(workdir) == before


def test_data_position_change_can_be_meant(tmp_path, mlp_workdir, one_device):
  cfg = helpers.copy_run(mlp_workdir, tmp_path, train_steps=3, batch_size=16, allow_data_position_change=True)
  assert main_lib.run_cli(cfg, make_strategy=lambda _: one_device) == errors.EXIT_OK


def test_internal_errors_keep_their_traceback(tmp_path):
  """Only gan_dist's own errors become one line: a ValueError from TensorFlow or Keras propagates (exit code 1)."""
  def broken_strategy(cfg):
    raise ValueError("an internal Keras problem")
  with pytest.raises(ValueError, match="internal Keras problem"):
    main_lib.run_cli(helpers.config(tmp_path), make_strategy=broken_strategy)


def test_single_worker_strategy_refused_inside_a_cluster(tmp_path, capsys, monkeypatch):
  """A launcher that starts several workers must not get several independent trainers (several chiefs)."""
  monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["localhost:1", "localhost:2"]}, '
                                  '"task": {"type": "worker", "index": 1}}')
  cfg = helpers.config(tmp_path, strategy="one_device")
  assert main_lib.run_cli(cfg) == errors.EXIT_USAGE
  assert "one of 2 workers" in _one_line_error(capsys.readouterr().err)
  monkeypatch.delenv("TF_CONFIG")
  monkeypatch.setenv("SLURM_STEP_ID", "0")
  monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "4")
  assert main_lib.run_cli(cfg) == errors.EXIT_USAGE
  assert "one of 4 workers" in _one_line_error(capsys.readouterr().err)
  assert not os.path.exists(cfg.workdir)


@contextlib.contextmanager
def _tmpfs(path, options):
  os.makedirs(path, exist_ok=True)
  if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True).returncode:
    pytest.skip("cannot mount a tmpfs here (needs root): no way to make a read-only or full filesystem")
  try:
    yield str(path)
  finally:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_read_only_workdir(tmp_path, capsys, idx_dir, one_device):
  with _tmpfs(tmp_path / "ro", "ro,size=64m") as mount:
    cfg = helpers.config(tmp_path, data_dir=idx_dir, workdir=f"{mount}/run")
    assert main_lib.run_cli(cfg, make_strategy=lambda _: one_device) == errors.EXIT_USAGE
    assert "is not writable (read-only filesystem or permissions)" in _one_line_error(capsys.readouterr().err)
    assert os.listdir(mount) == []


def test_full_workdir(tmp_path, capsys, idx_dir, one_device):
  with _tmpfs(tmp_path / "full", "size=2m") as mount:
    cfg = helpers.config(tmp_path, data_dir=idx_dir, workdir=f"{mount}/run")  # dcgan: 28 MiB per checkpoint.
    assert main_lib.run_cli(cfg, make_strategy=lambda _: one_device) == errors.EXIT_USAGE
    assert "MiB free, but a checkpoint of this run takes" in _one_line_error(capsys.readouterr().err)
    assert os.listdir(mount) == []
