"""Crash safety: a run killed with SIGKILL, once in training and once inside a checkpoint write, resumes each time
and ends bitwise equal to an uninterrupted run (the same command run in the test process); and an exact resume with
--d_steps_per_g=2 (in-process).

The kills come after each run's start-up (its first chunk traced, ran and saved a checkpoint), so that they land
where the danger is, in training and in checkpoint writes, not in the start-up, which writes nothing; the kill
inside a write is made certain by freezing the process (SIGSTOP) while TensorFlow's temporary files exist. Every
process runs in its own session under a watchdog (tests/subprocs.py).
"""

import dataclasses
import os
import random
import re
import signal
import time

import numpy as np
import pytest

from gan_dist import config as config_lib
from gan_dist import errors
from gan_dist import main as main_lib
from gan_dist import train
from tests import helpers
from tests import subprocs

TRAIN_STEPS = 100
# Each killed run first saves a checkpoint of its own (so that the next one resumes from a later step), then is
# killed: "training" after 0 to 2 more summary lines and up to 50 ms (a few steps, or a checkpoint write, which
# comes every 10 steps and takes > 30 ms), "saving" frozen (SIGSTOP) inside its next checkpoint write. So the runs
# are killed by step ~60 whatever the machine's speed, well before TRAIN_STEPS.
KILLS = ("training", "saving")


def _flags(data_dir, workdir):
  # The MLP GAN: a fast step, yet 2M parameters (3 copies with Adam's slots), so a checkpoint write takes long
  # enough to be hit. A checkpoint every 10 steps, a summary line every 5.
  return ["--flagfile=configs/mlp_gan.cfg", "--strategy=one_device", "--deterministic", f"--data_dir={data_dir}",
          f"--workdir={workdir}", "--batch_size=16", "--steps_per_loop=5", "--summary_every=5", "--checkpoint_every=10",
          "--max_to_keep=3", "--sample_every=100000", "--num_samples=4", f"--train_steps={TRAIN_STEPS}"]


def _command(data_dir, workdir):
  return subprocs.main_cmd(*_flags(data_dir, workdir))


def _summaries(text):
  return len(re.findall(rf"step \d+/{TRAIN_STEPS} ", text))


def _writing(ckpt_dir):
  return ckpt_dir.exists() and any(n.endswith("_temp") for n in os.listdir(ckpt_dir))


def _freeze_inside_a_checkpoint_write(proc, ckpt_dir):
  """Stops `proc` (SIGSTOP) while TensorFlow's temporary files of a checkpoint exist, so that the SIGKILL that
  follows lands inside the write for certain (a write takes ~0.1 s; one that ended before the SIGSTOP is let go)."""
  for _ in range(20):
    proc.wait_until(lambda: _writing(ckpt_dir), "a checkpoint being written", poll_s=0.001)
    proc.signal(signal.SIGSTOP)
    if _writing(ckpt_dir):
      return
    proc.signal(signal.SIGCONT)
  pytest.fail(f"20 checkpoint writes ended before SIGSTOP reached the process:\n{subprocs.tail(proc.output())}")


@pytest.mark.slow
def test_sigkill_in_training_and_in_checkpoint_writes_then_resume_is_bitwise_exact(tmp_path, one_device,
                                                                                   op_determinism, monkeypatch):
  del op_determinism  # --deterministic turns it on in this process (the uninterrupted run).
  data_dir = helpers.make_idx_dir(str(tmp_path / "data"), num=256)
  environ = subprocs.env(tmp_path)
  killed, ckpt_dir = tmp_path / "killed", tmp_path / "killed" / "checkpoints"
  rng = random.Random(1234)
  # The uninterrupted run: the same command, in this process on one device (one intra-op thread here too:
  # tests/conftest.py), which spares a process start (~5 s of CPU); config.from_args reads the flagfile from the
  # repository root.
  monkeypatch.chdir(subprocs.REPO)
  straight = config_lib.from_args(_flags(data_dir, tmp_path / "straight"))
  assert main_lib.run_cli(straight, make_strategy=lambda _: one_device) == errors.EXIT_OK
  resumed_from = []
  for kill, where in enumerate(KILLS):
    with subprocs.Proc(_command(data_dir, killed), tmp_path / f"run_{kill}.log", environ) as proc:
      # Past the start-up (traced, leftovers of the previous kill removed) and a checkpoint of this run's own.
      proc.wait_for_text("Saved checkpoint")
      if where == "saving":
        _freeze_inside_a_checkpoint_write(proc, ckpt_dir)
      else:
        target = _summaries(proc.output()) + rng.randrange(3)
        proc.wait_until(lambda: _summaries(proc.output()) >= target, f"{target} summary lines")
        time.sleep(rng.uniform(0.0, 0.05))
      proc.signal(signal.SIGKILL)
      assert proc.wait() == -signal.SIGKILL, f"run {kill} ended before it could be killed"
      log = proc.output()
    if kill:
      match = re.search(r"Resumed from \S+ckpt-(\d+) at step (\d+)", log)
      assert match, subprocs.tail(log)  # Every relaunch resumes from a checkpoint the kill left intact.
      resumed_from.append(int(match.group(2)))
    if kill and KILLS[kill - 1] == "saving":  # It found the half-written checkpoint and removed it.
      assert re.search(r"Removing \S+_temp, left by an interrupted run", log), subprocs.tail(log)

  rc, log = subprocs.run(_command(data_dir, killed), tmp_path / "final.log", environ)
  assert rc == 0 and f"Done at step {TRAIN_STEPS}" in log, subprocs.tail(log)
  resumed_from.append(int(re.search(r"Resumed from \S+ckpt-(\d+) at step (\d+)", log).group(2)))
  if KILLS[-1] == "saving":
    assert re.search(r"Removing \S+_temp, left by an interrupted run", log), subprocs.tail(log)
  # Each relaunch resumed from a later checkpoint: the last one the killed run completed.
  assert resumed_from == sorted(set(resumed_from)) and 0 < resumed_from[0] and resumed_from[-1] < TRAIN_STEPS, (
      resumed_from)
  assert not [n for n in os.listdir(ckpt_dir) if n.endswith("_temp") or ".tmp" in n]  # Leftovers cleaned.

  # One device, one thread, op determinism: the same computation in both (a subprocess and this process), so bitwise
  # equality is the claim.
  killed_values = helpers.checkpoint_values(str(ckpt_dir / f"ckpt-{TRAIN_STEPS}"))
  straight_values = helpers.checkpoint_values(str(tmp_path / "straight" / "checkpoints" / f"ckpt-{TRAIN_STEPS}"))
  assert killed_values.keys() == straight_values.keys() and len(killed_values) > 20
  for name in straight_values:
    np.testing.assert_array_equal(killed_values[name], straight_values[name], err_msg=name)


@pytest.mark.slow
def test_resume_with_d_steps_per_g_2_is_exact(tmp_path, one_device):
  """Two D updates per G update read two batches and draw two sets of noise and dropout masks per step: a run
  interrupted at step 3 (an odd step, mid-epoch) and resumed ends bitwise equal to an uninterrupted one.

  In this process, on one device (the same computation in both runs; a resume on 2 replicas is test_checkpoint.py's):
  the tutorial DCGAN, whose D has dropout, with chunks of 2 steps: [1, 2] [3] [4, 5] straight (a checkpoint at
  step 3), and a copy of its workdir as the run interrupted after step 3 left it, resumed: [4, 5].
  """
  idx = helpers.make_idx_dir(str(tmp_path / "idx"), num=64)
  base = helpers.config(tmp_path, strategy="one_device", data_dir=idx, latent_dim=16, d_steps_per_g=2, train_steps=5,
                        steps_per_loop=2, checkpoint_every=3)
  straight = dataclasses.replace(base, workdir=str(tmp_path / "straight"))
  train.run(straight, one_device)
  interrupted = dataclasses.replace(base, workdir=str(tmp_path / "interrupted"))
  helpers.interrupted_copy(straight.workdir, interrupted.workdir, 3)
  assert train.run(interrupted, one_device)["step"] == 5
  a = helpers.checkpoint_values(os.path.join(straight.workdir, "checkpoints", "ckpt-5"))
  b = helpers.checkpoint_values(os.path.join(interrupted.workdir, "checkpoints", "ckpt-5"))
  assert a.keys() == b.keys() and any("seed_states" in n for n in a)  # D's dropout seeds.
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)
  # D took 2 updates per step (its Adam counted them), G one.
  iterations = {k.split("/")[0]: int(v) for k, v in a.items() if k.endswith("_iterations/.ATTRIBUTES/VARIABLE_VALUE")}
  assert iterations == {"g_optimizer": 5, "d_optimizer": 10}
