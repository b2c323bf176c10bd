"""End to end through the CLI: train, resume, TensorBoard contents, samples. (Issue 2's acceptance command.)"""

import glob
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, timeout=300):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
  proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stderr + proc.stdout


def _event_tags(workdir):
  scalars, images = set(), set()
  for path in glob.glob(os.path.join(workdir, "tensorboard", "events.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        kind = value.metadata.plugin_data.plugin_name
        (images if kind == "images" else scalars).add(value.tag)
  return scalars, images


def test_train_resume_sample(tmp_path, mnist_dir):
  workdir = str(tmp_path / "W")
  common = ["-m", "gan_dist.main", "--flagfile=configs/dcgan.cfg", "--strategy=mirrored", "--num_cpu_replicas=2",
            f"--data_dir={mnist_dir}", f"--workdir={workdir}", "--batch_size=64", "--checkpoint_every=10"]
  log = _run(common + ["--train_steps=20"])
  assert "Strategy MirroredStrategy with 2 replica(s)" in log
  assert tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints")).endswith("ckpt-20")
  assert os.path.exists(os.path.join(workdir, "checkpoints", "ckpt-10.index"))
  scalars, images = _event_tags(workdir)
  for tag in ("d_loss", "g_loss", "d_real_accuracy", "d_fake_accuracy", "d_real_output", "d_fake_output",
              "images_per_sec", "steps_per_sec"):
    assert tag in scalars, (tag, scalars)
  assert "samples" in images
  assert glob.glob(os.path.join(workdir, "samples", "*.png"))
  assert "--arch=dcgan" in open(os.path.join(workdir, "flags.txt")).read()

  log = _run(common + ["--train_steps=30"])
  assert "at step 20" in log and "step 30/30" in log
  assert tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints")).endswith("ckpt-30")

  out = str(tmp_path / "s.npz")
  _run(["-m", "gan_dist.sample", f"--workdir={workdir}", "--num=64", f"--out={out}"])
  images = np.load(out)["images"]
  assert images.shape == (64, 28, 28, 1) and images.dtype == np.uint8


def test_bad_data_dir_is_one_line(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
  proc = subprocess.run([sys.executable, "-m", "gan_dist.main", "--strategy=one_device",
                         f"--data_dir={tmp_path / 'nowhere'}", f"--workdir={tmp_path / 'W'}"],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1] == f"error: --data_dir={tmp_path / 'nowhere'} does not exist"


def test_helpfull_documents_every_flag():
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO)
  proc = subprocess.run([sys.executable, "-m", "gan_dist.main", "--helpfull"], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=120)
  for name in ("workdir", "strategy", "num_cpu_replicas", "dataset", "data_dir", "arch", "loss", "batch_size",
               "train_steps", "steps_per_loop", "checkpoint_every", "summary_every", "sample_every", "seed",
               "max_to_keep", "keep_checkpoint_every_n_hours"):
    assert f"--{name}:" in proc.stdout or f"--[no]{name}:" in proc.stdout, name
