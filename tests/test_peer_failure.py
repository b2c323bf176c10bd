"""A failed peer in a multi-worker run with no launcher watching (as under Slurm or Kubernetes): a dead or frozen
peer, workers started with different flags (README "When things go wrong", exit codes 5 and 2). How launch/local.sh
stops the other workers when one fails: tests/launch/test_local_sh.py.

Two MultiWorkerMirroredStrategy workers on localhost started by hand (TF_CONFIG), each in its own session under a
watchdog (tests/subprocs.py), training the MLP GAN of tests/test_multiworker.py on one CPU thread each.
"""

import json
import os
import re
import signal
import socket
import time

import pytest
import tensorflow as tf

from tests import helpers
from tests import subprocs

pytestmark = pytest.mark.slow  # Every test here starts a cluster.

# The smallest heartbeat timeout gan_dist allows (config.py): the frozen peer's wait is pure wall time.
PEER_TIMEOUT_S = 5

# The MLP GAN (quick steps) on the 64-image IDX fixture: checkpoints every 2 steps, summaries, a sample grid at the end.
TRAIN_FLAGS = ["--flagfile=configs/mlp_gan.cfg", "--batch_size=16", "--steps_per_loop=2", "--summary_every=2",
               "--checkpoint_every=2", "--sample_every=1000", "--num_samples=4"]


def _start_workers(tmp_path, args_of_worker, log_prefix=""):
  """Starts one `python -m gan_dist.main` per entry of `args_of_worker` with a TF_CONFIG of localhost ports, each in
  its own session and logging to tmp_path/<log_prefix>worker_<i>.log; returns the subprocs.Proc objects."""
  socks = [socket.socket() for _ in args_of_worker]
  for sock in socks:
    sock.bind(("localhost", 0))
  hosts = [f"localhost:{sock.getsockname()[1]}" for sock in socks]
  for sock in socks:
    sock.close()
  return [subprocs.Proc(subprocs.main_cmd(*args, "--strategy=multi_worker_mirrored"),
                        tmp_path / f"{log_prefix}worker_{i}.log", subprocs.env(tmp_path, TF_CONFIG=json.dumps(
                            {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}})))
          for i, args in enumerate(args_of_worker)]


def _reap(procs):
  for proc in procs:
    subprocs.kill_group(proc.pid, signal.SIGCONT)
    proc.kill()


def _peer_failure(survivor, victim):
  """Waits for `survivor` to exit by itself after its peer `victim` (a worker index) died or froze: within 60 s,
  exit code 5, and a last line naming the cause."""
  hit = time.monotonic()
  rc = survivor.wait(60)
  elapsed = time.monotonic() - hit
  log = survivor.output()
  assert rc == 5, subprocs.tail(log)
  assert elapsed < 60
  line = subprocs.last_error(log)
  assert line.startswith("error: peer failure: ") and (f"worker {victim}" in line), line


def test_survivor_of_a_frozen_or_dead_peer_exits_by_itself_and_the_relaunched_cluster_resumes(tmp_path):
  """No launcher watching (as under Slurm or Kubernetes): when a worker freezes with its sockets open (the chief,
  SIGSTOP), or dies (worker 1, SIGKILL), the other exits within 60 s with exit code 5 and an error naming the cause;
  relaunched after the freeze, the cluster resumes from the last checkpoint both workers saved.

  One cluster start fewer than a fresh cluster per failure: the relaunched cluster, once it has resumed and trained
  on (a chunk more, saved by both), is the one whose worker 1 dies.
  """
  data_dir = helpers.make_idx_dir(str(tmp_path / "data"), num=64)
  workdir = str(tmp_path / "workdir")
  flags = TRAIN_FLAGS + [f"--data_dir={data_dir}", f"--workdir={workdir}", "--train_steps=100000",
                         f"--peer_timeout_s={PEER_TIMEOUT_S}"]

  # The chief freezes: worker 1 exits by itself.
  procs = _start_workers(tmp_path, [flags, flags])
  try:
    for proc in procs:  # Both wrote their checkpoint (the chief's files are complete): training, not start-up.
      proc.wait_for_text("Saved checkpoint")
    procs[0].signal(signal.SIGSTOP)
    _peer_failure(procs[1], victim=0)
  finally:
    _reap(procs)

  # Relaunched, the cluster continues from the last checkpoint both workers saved, and trains on: both log the
  # chunk after it and save it.
  latest = int(tf.train.latest_checkpoint(os.path.join(workdir, "checkpoints")).rsplit("-", 1)[1])
  procs = _start_workers(tmp_path, [flags, flags], log_prefix="relaunch_")
  try:
    for proc in procs:
      proc.wait_for_text(f"step {latest + 2}/100000")  # (The chunk's summary line, logged after its checkpoint.)
      log = proc.output()
      saved = re.search(rf"Saved checkpoint (\S*ckpt-{latest + 2}\n|step {latest + 2} with the chief)", log)
      assert f"ckpt-{latest} at step {latest}" in log and saved, subprocs.tail(log)

    # Worker 1 dies: the chief exits by itself.
    procs[1].signal(signal.SIGKILL)
    _peer_failure(procs[0], victim=1)
  finally:
    _reap(procs)


def test_workers_with_different_flags_are_refused_before_writing(tmp_path):
  data_dir = helpers.make_idx_dir(str(tmp_path / "data"), num=64)
  workdir = tmp_path / "workdir"
  flags = TRAIN_FLAGS + [f"--data_dir={data_dir}", f"--workdir={workdir}", "--train_steps=4"]
  procs = _start_workers(tmp_path, [flags, flags + ["--g_lr=3e-4"]])
  try:
    for i, proc in enumerate(procs):
      assert proc.wait() == 2, subprocs.tail(proc.output())
      line = subprocs.last_error(proc.output())
      assert "the workers were started with different flags: --g_lr" in line, line
      assert f"--g_lr={0.0002 if i == 0 else 0.0003}" in line
  finally:
    _reap(procs)
  assert not workdir.exists()


def test_a_cluster_that_never_starts_ends_its_workers_and_a_taken_port_is_named(tmp_path):
  """Worker 0 of two, alone (worker 1 never starts), exits 5 after --cluster_start_timeout_s naming the cluster;
  another one is ended at once by Ctrl-C while it waits (the strategy's constructor blocks Python's handlers); a
  worker whose address is taken exits 2 naming it. None of them writes its workdir."""
  data_dir = helpers.make_idx_dir(str(tmp_path / "data"), num=64)
  busy = socket.socket()
  busy.bind(("localhost", 0))
  busy.listen()
  taken = f"localhost:{busy.getsockname()[1]}"

  def worker_0(name, hosts):
    return subprocs.Proc(subprocs.main_cmd(*TRAIN_FLAGS, f"--data_dir={data_dir}", f"--workdir={tmp_path / name}",
                                           "--cluster_start_timeout_s=10", "--strategy=multi_worker_mirrored"),
                         tmp_path / f"{name}.log", subprocs.env(tmp_path, TF_CONFIG=json.dumps(
                             {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": 0}})))

  free = []
  for _ in range(4):
    with socket.socket() as sock:
      sock.bind(("localhost", 0))
      free.append(f"localhost:{sock.getsockname()[1]}")
  procs = [worker_0("alone", free[:2]), worker_0("interrupted", free[2:]), worker_0("taken", [taken, free[0]])]
  alone, interrupted, taken_port = procs
  try:
    # Logged once a signal ends the process at once, just before the workers connect.
    interrupted.wait_for_text("Waiting for the 2 workers of the cluster to connect (at most "
                              "--cluster_start_timeout_s=10 s)")
    os.kill(interrupted.pid, signal.SIGINT)
    sent = time.monotonic()
    assert interrupted.wait(30) == -signal.SIGINT and time.monotonic() - sent < 10, subprocs.tail(interrupted.output())
    assert taken_port.wait(60) == 2, subprocs.tail(taken_port.output())
    assert subprocs.last_error(taken_port.output()) == (
        f"error: worker 0 cannot listen on {taken}: the port is taken (by another program, or by a worker started "
        "with the same --task_index); free it or change --worker_hosts / TF_CONFIG")
    assert alone.wait(90) == 5, subprocs.tail(alone.output())
    line = subprocs.last_error(alone.output())
    assert line.startswith("error: the cluster did not start within --cluster_start_timeout_s=10: not every "
                           f"worker of {{'worker': {free[:2]}}} connected (this is worker 0)"), line
  finally:
    _reap(procs)
    busy.close()
  assert not any((tmp_path / name).exists() for name in ("alone", "interrupted", "taken"))
