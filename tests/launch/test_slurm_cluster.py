"""launch/slurm.sbatch on a real Slurm cluster: SIGTERM wherever it lands saves, requeues and resumes (also while the
tasks start: they stop before training); a plain scancel saves and is final.

Needs a running Slurm (`bash ../shared/slurm/start.sh`: Debian's slurm-wlm, one node); skipped without one. A fake
srun cannot show what matters here: which processes Slurm signals (`scancel --signal=TERM` reaches the tasks,
`--batch` the batch shell, `--full` the batch shell, srun and the tasks; preemption and a plain scancel are the
latter), and that an srun which receives SIGTERM kills its tasks at once.
"""

import functools
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from tests import conftest
from tests import helpers

pytestmark = pytest.mark.slow

SBATCH = os.path.join(conftest.REPO, "launch", "slurm.sbatch")
# Where the signal goes: scancel's options.
TARGETS = {"tasks": [], "batch_shell": ["--batch"], "whole_job": ["--full"]}
WAIT_S = 240  # Per phase; the test ends its jobs whatever happens (finally: scancel).


@functools.lru_cache(maxsize=None)
def _slurm_running() -> bool:
  if not shutil.which("sbatch") or not shutil.which("sinfo"):
    return False
  try:
    return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=15, check=False).returncode == 0
  except subprocess.TimeoutExpired:
    return False


@pytest.fixture
def slurm():
  """Skips the test without a running Slurm. Asked when a test of this file runs, once per test process, not at
  collection: without a controller `sinfo` takes ~9 s to give up, and every test process collects this file (two
  skipif marks cost each of them 18 s of the suite's start)."""
  if not _slurm_running():
    pytest.skip("no Slurm cluster: start one with bash ../shared/slurm/start.sh")


def _wait_for(log, pattern, what, after=0, poll_s=1.0):
  """Returns the first match of `pattern` in `log` at or after character `after`, waiting up to WAIT_S (reading
  the log every `poll_s`: short where the test signals a moment of the job)."""
  deadline = time.monotonic() + WAIT_S
  while time.monotonic() < deadline:
    text = open(log).read() if os.path.exists(log) else ""
    match = re.compile(pattern).search(text, after)
    if match:
      return match
    time.sleep(poll_s)
  raise AssertionError(f"no {what} in {WAIT_S} s; the job's log:\n{text[-4000:]}")


def _sbatch(name, log, time_min, args, **env) -> str:
  """Submits slurm.sbatch (one node, one CPU, no GPU, log `log`) with gan_dist's `args` and `env` added to this
  environment; returns the job id."""
  command = ["sbatch", "--parsable", f"--job-name=gan_dist_test_{name}", f"--output={log}", "--nodes=1",
             "--gpus-per-node=0", "--cpus-per-task=1", "--oversubscribe", f"--time={time_min}", SBATCH, *args]
  submitted = subprocess.run(command, cwd=conftest.REPO, env=dict(os.environ, **env), capture_output=True, text=True,
                             check=True)
  return submitted.stdout.strip().split(";")[0]


def _job_field(job_id, field):
  out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, check=True).stdout
  return re.search(rf"\b{field}=(\S+)", out).group(1)


@pytest.mark.usefixtures("slurm")
def test_sigterm_to_tasks_batch_shell_or_whole_job_saves_requeues_and_resumes(tmp_path, mnist_dir):
  """For each target: SIGTERM -> every task saves step S1 and exits 75 -> the script requeues its job -> the job
  reruns, resumes from S1 and trains on -> SIGTERM again -> saves S2 > S1 -> MAX_REQUEUES=1 makes that final."""
  jobs = {}
  try:
    for target in TARGETS:
      workdir, log = tmp_path / target, tmp_path / f"{target}.log"
      args = ["--flagfile=configs/mlp_gan.cfg", f"--data_dir={mnist_dir}", f"--workdir={workdir}",
              "--train_steps=10000000", "--steps_per_loop=10", "--summary_every=20", "--sample_every=10000000",
              "--checkpoint_every=10000000"]
      job_id = _sbatch(target, log, 15, args, PYTHON=sys.executable, MAX_REQUEUES="1")
      jobs[target] = (job_id, str(log), workdir)

    saved = {}
    for target, (job_id, log, workdir) in jobs.items():
      _wait_for(log, r"step \d+/10000000 ", "training progress")
      subprocess.run(["scancel", "--signal=TERM", *TARGETS[target], job_id], check=True)
    for target, (job_id, log, workdir) in jobs.items():
      match = _wait_for(log, r"saved a checkpoint at step (\d+) on every worker", "checkpoint at SIGTERM")
      saved[target] = int(match.group(1))
      _wait_for(log, rf"requeueing job {job_id} \(requeue 1 of 1\)", "requeue")
      assert "forcing job termination" not in open(log).read()  # srun never got the signal.
      assert os.path.exists(workdir / "checkpoints" / f"ckpt-{saved[target]}.index")
    # Slurm holds a requeued job for its credentials' lifetime (about 2 minutes) and starts it then, as it would in
    # production. Not `scontrol update StartTime=now`: the node may still hold the job's revoked credential, and Slurm
    # then kills the started job ("Job credential revoked"; seen once in a full-suite run).
    for target, (job_id, log, workdir) in jobs.items():
      resumed = _wait_for(log, rf"Resumed from \S*ckpt-{saved[target]} at step {saved[target]}", "resume")
      progress = _wait_for(log, r"step (\d+)/10000000 ", "training after the resume", after=resumed.end())
      assert int(progress.group(1)) > saved[target]
      subprocess.run(["scancel", "--signal=TERM", *TARGETS[target], job_id], check=True)
    for target, (job_id, log, workdir) in jobs.items():
      _wait_for(log, r"MAX_REQUEUES=1 reached", "the final stop")
      second = [int(s) for s in re.findall(r"saved a checkpoint at step (\d+) on every worker", open(log).read())]
      assert len(second) == 2 and second[1] > second[0] == saved[target], (target, second)
      assert os.path.exists(workdir / "checkpoints" / f"ckpt-{second[1]}.index")
      assert _job_field(job_id, "Restarts") == "1"
  finally:
    for job_id, _, _ in jobs.values():
      subprocess.run(["scancel", job_id], check=False)


# A task that stands for gan_dist (the batch script's own logic is what is tested): it saves and exits 75 on SIGTERM.
_FAKE_TASK = """
import signal, sys, time
def on_term(signum, frame):
  print("task got SIGTERM; saving", flush=True)
  time.sleep(2)
  print("task saved", flush=True)
  sys.exit(75)
signal.signal(signal.SIGTERM, on_term)
print("task ready", flush=True)
while True:
  time.sleep(0.1)
"""


@pytest.mark.usefixtures("slurm")
def test_plain_scancel_is_final_and_scancel_signal_term_requeues(tmp_path):
  """A plain `scancel JOB` (Slurm marks the job cancelled, then sends SIGTERM to the whole job): the tasks save and
  exit 75, and the script does not requeue (`scontrol requeue` would revive the cancelled job). Beside it,
  `scancel --signal=TERM JOB` (the job keeps running) requeues. Tasks of a few lines stand for gan_dist."""
  python = tmp_path / "fake_python"
  python.write_text(f"#!{sys.executable}\n" + _FAKE_TASK)
  python.chmod(0o755)
  cancels = {"plain": [], "signal_term": ["--signal=TERM"]}
  jobs = {}
  try:
    for name in cancels:
      log = tmp_path / f"{name}.log"
      jobs[name] = (_sbatch(name, log, 5, [f"--workdir={tmp_path / name}"], PYTHON=str(python)), str(log))
    for name, (job_id, log) in jobs.items():
      _wait_for(log, r"task ready", "the task's start")
      subprocess.run(["scancel", *cancels[name], job_id], check=True)
    job_id, log = jobs["plain"]
    _wait_for(log, rf"not requeueing job {job_id}: it was cancelled \(scancel\)", "the final stop")
    text = open(log).read()
    assert "task saved" in text and "requeueing job" not in text.replace("not requeueing job", ""), text
    deadline = time.monotonic() + WAIT_S
    while _job_field(job_id, "JobState") != "CANCELLED" and time.monotonic() < deadline:
      time.sleep(1)
    assert _job_field(job_id, "JobState") == "CANCELLED" and _job_field(job_id, "Restarts") == "0"
    job_id, log = jobs["signal_term"]
    _wait_for(log, rf"requeueing job {job_id} \(requeue 1 of 10\)", "the requeue")
    assert "task saved" in open(log).read()
    assert _job_field(job_id, "Restarts") == "1"
  finally:
    for job_id, _ in jobs.values():
      subprocess.run(["scancel", job_id], check=False)


@pytest.mark.usefixtures("slurm")
def test_sigterm_while_the_tasks_start_stops_them_and_requeues(tmp_path):
  """A preemption that lands while gan_dist starts is a stop like any other, and the script requeues the job:
    * a second after srun started the task, while it imports TensorFlow (3-5 s; no handler of gan_dist's yet):
      SIGTERM's default action ends it (143), having written nothing, which the script takes as such a stop;
    * after restoring, while the evaluator trains its feature network (~3 s before training): the task exits 75
      without training or writing."""
  folder = helpers.make_image_folder(str(tmp_path / "images"), num=60)["root"]
  # In the order they come: both jobs start at once.
  moments = {"importing": r"slurm\.sbatch: 1 node\(s\)", "restoring": r"No checkpoint in "}
  jobs = {}
  try:
    for name in moments:
      log, workdir = tmp_path / f"{name}.log", tmp_path / name
      job_id = _sbatch(name, log, 5, ["--flagfile=configs/mlp_gan.cfg", "--dataset=folder", f"--data_dir={folder}",
                                      "--channels=1", "--batch_size=16", f"--workdir={workdir}", "--train_steps=40",
                                      "--eval_every=20", "--eval_num=40",
                                      f"--eval_cache_dir={tmp_path / (name + '_cache')}"],
                       PYTHON=sys.executable, MAX_REQUEUES="1")
      jobs[name] = (job_id, str(log), workdir)
    for name, (job_id, log, _) in jobs.items():
      # Within 50 ms of the line: the restore's window before the workers' vote is ~3 s, the import's 3-5 s.
      _wait_for(log, moments[name], name, poll_s=0.05)
      if name == "importing":
        time.sleep(1)  # srun has started the task.
      subprocess.run(["scancel", "--signal=TERM", job_id], check=True)
    for name, (job_id, log, workdir) in jobs.items():
      _wait_for(log, rf"requeueing job {job_id} \(requeue 1 of 1\)", f"the requeue ({name})")
      text = open(log).read()
      if name == "restoring":
        assert ("error: SIGTERM received while the run started: stopped before training, nothing new to save (the "
                "workdir holds no checkpoint yet)") in text, text[-4000:]
        assert "slurm.sbatch: the tasks exited 75" in text
      else:
        assert "slurm.sbatch: the tasks exited 143" in text and "Strategy " not in text, text[-4000:]
        assert "SIGTERM ended a task while it started, with nothing to save; requeueing" in text
      assert os.listdir(workdir) == []  # slurm.sbatch made it (a local workdir); gan_dist wrote nothing.
      assert _job_field(job_id, "Restarts") == "1"
  finally:
    for job_id, _, _ in jobs.values():
      subprocess.run(["scancel", job_id], check=False)
