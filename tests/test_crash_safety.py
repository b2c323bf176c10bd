"""Crash safety through the real command line: SIGKILL at random instants of one run, some of them while a checkpoint
is being written; every relaunch resumes, the last one reaches --train_steps, and with --deterministic the final
weights equal those of an uninterrupted run (one replica). Also SIGTERM to a single process: exit code 75.

Every process runs in its own session under a watchdog (a timeout on each wait, then SIGKILL to its group).
"""

import os
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WATCHDOG_S = 180
TRAIN_STEPS = 600
KILLS = 10
KILLS_WHILE_SAVING = (2, 6)  # Which of the kills wait for a checkpoint's temporary files.


def _command(data_dir, workdir, *extra):
  return [sys.executable, "-m", "gan_dist.main", "--flagfile=configs/mlp_gan.cfg", "--strategy=one_device",
          "--deterministic", f"--data_dir={data_dir}", f"--workdir={workdir}", "--batch_size=16",
          "--steps_per_loop=5", "--summary_every=5", "--checkpoint_every=5", "--max_to_keep=3",
          "--sample_every=100000", "--num_samples=4", f"--train_steps={TRAIN_STEPS}", *extra]


def _start(cmd, log_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
  env.pop("TF_CONFIG", None)
  log = open(log_path, "w")
  return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _watchdog_kill(proc):
  try:
    os.killpg(proc.pid, signal.SIGKILL)
  except ProcessLookupError:
    pass


def _wait_until(predicate, proc, what, log_path):
  deadline = time.monotonic() + WATCHDOG_S
  while not predicate():
    if proc.poll() is not None:
      pytest.fail(f"process ended (rc {proc.returncode}) before {what}:\n{open(log_path).read()[-3000:]}")
    if time.monotonic() > deadline:
      _watchdog_kill(proc)
      pytest.fail(f"no {what} after {WATCHDOG_S} s:\n{open(log_path).read()[-3000:]}")
    time.sleep(0.0005)


def _run_to_end(cmd, log_path):
  proc = _start(cmd, log_path)
  try:
    assert proc.wait(timeout=WATCHDOG_S) == 0, open(log_path).read()[-3000:]
  finally:
    _watchdog_kill(proc)
  return open(log_path).read()


def _final_values(workdir):
  path = os.path.join(workdir, "checkpoints", f"ckpt-{TRAIN_STEPS}")
  return {name: tf.train.load_variable(path, name) for name, _ in tf.train.list_variables(path)
          if not name.startswith("_CHECKPOINTABLE") and "save_counter" not in name}


def test_sigkill_at_random_instants(tmp_path):
  data_dir = helpers.make_idx_dir(str(tmp_path / "data"), num=256)
  ckpt_dir = tmp_path / "killed" / "checkpoints"
  rng = random.Random(1234)
  resumed_from = []
  for kill in range(KILLS):
    log_path = str(tmp_path / f"run_{kill}.log")
    proc = _start(_command(data_dir, tmp_path / "killed"), log_path)
    try:
      if kill == 0:  # Let the first run save something, so that every relaunch has a checkpoint to resume.
        _wait_until(lambda: (ckpt_dir / "checkpoint").exists(), proc, "first checkpoint", log_path)
      if kill in KILLS_WHILE_SAVING:
        # The instant TensorFlow's temporary files of a save appear: the kill lands inside the write.
        _wait_until(lambda: ckpt_dir.exists() and any(n.endswith("_temp") for n in os.listdir(ckpt_dir)), proc,
                    "checkpoint being written", log_path)
      else:
        _wait_until(lambda: "Training mlp from step" in open(log_path).read(), proc, "training", log_path)
        time.sleep(rng.uniform(0.0, 1.0))
      proc.send_signal(signal.SIGKILL)
      assert proc.wait(timeout=WATCHDOG_S) == -signal.SIGKILL, "the run ended before it could be killed"
    finally:
      _watchdog_kill(proc)
    if kill:
      log = open(log_path).read()
      match = re.search(r"Resumed from \S+ckpt-(\d+) at step (\d+)", log)
      assert match, log[-3000:]  # Every relaunch resumes from a checkpoint the kill left intact.
      resumed_from.append(int(match.group(2)))

  log = _run_to_end(_command(data_dir, tmp_path / "killed"), str(tmp_path / "final.log"))
  assert f"Done at step {TRAIN_STEPS}" in log and "Resumed from" in log
  assert resumed_from == sorted(resumed_from) and resumed_from[-1] < TRAIN_STEPS
  assert not [n for n in os.listdir(ckpt_dir) if n.endswith("_temp") or ".tmp" in n]  # Leftovers cleaned.

  _run_to_end(_command(data_dir, tmp_path / "straight"), str(tmp_path / "straight.log"))
  killed, straight = _final_values(tmp_path / "killed"), _final_values(tmp_path / "straight")
  assert killed.keys() == straight.keys()
  for name in straight:
    np.testing.assert_array_equal(killed[name], straight[name], err_msg=name)


def test_sigterm_single_process_exits_75_and_continues(tmp_path):
  data_dir = helpers.make_idx_dir(str(tmp_path / "data"), num=64)
  cmd = _command(data_dir, tmp_path / "W", "--checkpoint_every=100000")
  log_path = str(tmp_path / "run.log")
  proc = _start(cmd, log_path)
  try:
    _wait_until(lambda: "step 10/" in open(log_path).read(), proc, "training", log_path)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=WATCHDOG_S) == 75
  finally:
    _watchdog_kill(proc)
  lines = open(log_path).read().splitlines()
  error = [l for l in lines if l.startswith("error: ")]
  assert len(error) == 1 and "Traceback" not in "\n".join(lines), lines[-20:]
  step = int(re.search(r"SIGTERM received: saved a checkpoint at step (\d+)", error[0]).group(1))
  assert tf.train.latest_checkpoint(str(tmp_path / "W" / "checkpoints")).endswith(f"ckpt-{step}")
  # The same command continues (a few steps suffice: test_sigkill_at_random_instants runs one to the end).
  log = _run_to_end(cmd + [f"--train_steps={step + 5}"], str(tmp_path / "again.log"))
  assert f"at step {step}" in log and f"Done at step {step + 5}" in log
