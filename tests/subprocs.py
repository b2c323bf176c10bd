"""Subprocesses of the multi-process tests: a clean CPU-only environment and a hard watchdog on every process.

Every process a test starts runs in its own session, writes its output to a log file (readable while it runs, and
after a watchdog killed it), and is waited for with a timeout; whatever is left when the test ends, passes or fails,
is killed with its whole process group (launch/local.sh starts each worker in a session of its own, so its workers'
groups are killed too, from the pids it prints).

The environment (`env`):
  * CUDA_VISIBLE_DEVICES="": a test on a GPU host must not see the GPU unless it means to (each test process and
    its subprocesses would otherwise all grab the same GPU's memory, and take another code path than on CPUs).
  * TF_NUM_INTRAOP_THREADS=1: the suite runs in two test processes on two cores; a worker that splits every op over
    all cores only fights the other processes for them. One thread also fixes the order of every CPU kernel's
    summations, so that the same shapes give the same bits whatever the topology (tests/test_multiworker.py).
  * TF_NUM_INTEROP_THREADS=2: the two replicas of a --num_cpu_replicas=2 process still run side by side.
  * no TF_CONFIG (a test's own cluster only), a private TMPDIR (to check what a run leaves there), unbuffered output.
"""

import os
import re
import signal
import subprocess
import sys
import time
from typing import Callable, Dict, Iterable, List, Optional

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCAL_SH = os.path.join(REPO, "launch", "local.sh")
PYTHON = sys.executable
# What one stage may take at most: a process start (~5 s) and a few steps take ~10 s on 2 busy cores; the watchdog
# fires at 180 s, far beyond any healthy stage even on a machine twice as slow, so it only ever means a hang.
WATCHDOG_S = 180
WORKER_PID = re.compile(r"local\.sh: worker (\d+) pid (\d+)")

BASE_ENV = dict(CUDA_VISIBLE_DEVICES="", TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="2",
                TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")


def env(tmp_path=None, **extra) -> Dict[str, str]:
  """The environment of a test's subprocess (see the module docstring), with `extra` added; a value None removes
  that variable (e.g. CUDA_VISIBLE_DEVICES=None for a launcher test that fakes GPUs)."""
  values = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
  values.update(BASE_ENV)
  if tmp_path is not None:
    values["TMPDIR"] = str(tmp_path / "tmp")
    os.makedirs(values["TMPDIR"], exist_ok=True)
  for key, value in extra.items():
    if value is None:
      values.pop(key, None)
    else:
      values[key] = str(value)
  return values


def read(path) -> str:
  return open(path, errors="replace").read() if os.path.exists(path) else ""


def tail(text: str, n: int = 4000) -> str:
  return text[-n:]


def kill_group(pid: int, sig=signal.SIGKILL) -> None:
  try:
    os.killpg(pid, sig)
  except (ProcessLookupError, PermissionError):
    pass


def alive(pid: int) -> bool:
  """Whether `pid` still runs (a zombie, dead but not yet reaped by its parent, counts as gone)."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except (FileNotFoundError, ProcessLookupError, IndexError):
    return False


def group_members(pgid: int) -> List[int]:
  """Pids of the live (not zombie) processes of process group `pgid`."""
  found = []
  for entry in os.listdir("/proc"):
    if entry.isdigit():
      try:
        with open(f"/proc/{entry}/stat") as f:
          state, _, group = f.read().rsplit(")", 1)[1].split()[:3]
      except (OSError, IndexError, ValueError):
        continue
      if state != "Z" and int(group) == pgid:
        found.append(int(entry))
  return found


def worker_pids(output: str) -> Dict[int, int]:
  """{worker index: pid} that launch/local.sh printed."""
  return {int(i): int(pid) for i, pid in WORKER_PID.findall(output)}


def _default_signals() -> None:
  """In the child: SIGINT and SIGTERM back to their default action. A suite started in the background of a script
  (`pytest ... &`) runs with SIGINT ignored, which exec'd children inherit and bash can then not trap: local.sh
  would be tested as a process that cannot get Ctrl-C."""
  signal.signal(signal.SIGINT, signal.SIG_DFL)
  signal.signal(signal.SIGTERM, signal.SIG_DFL)


class Proc:
  """A subprocess in its own session, its output (stdout and stderr) going to `log`.

  Use as a context manager: on exit, whatever still runs (and every worker it started through local.sh) is killed.
  """

  def __init__(self, cmd: List[str], log, environ: Dict[str, str], cwd: str = REPO):
    self.cmd, self.log = [str(c) for c in cmd], str(log)
    with open(self.log, "w") as out:
      self.popen = subprocess.Popen(self.cmd, cwd=cwd, env=environ, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, preexec_fn=_default_signals)
    self.pid = self.popen.pid

  def __enter__(self) -> "Proc":
    return self

  def __exit__(self, *exc) -> None:
    self.kill()

  def output(self) -> str:
    return read(self.log)

  def kill(self) -> None:
    """SIGKILL to its process group and to the group of every worker it reported; then reaps it."""
    pids = worker_pids(self.output())
    kill_group(self.pid)
    for pid in pids.values():
      kill_group(pid)
    try:
      self.popen.wait(timeout=20)
    except subprocess.TimeoutExpired:
      pass

  def signal(self, sig) -> None:
    self.popen.send_signal(sig)

  def wait(self, timeout: float = WATCHDOG_S) -> int:
    """Its exit status, once its output is complete; the watchdog kills everything and fails the test after
    `timeout` seconds.

    Complete: launch/local.sh passes its workers' lines through log pipes (process substitutions in its process
    group) that bash's `wait` does not wait for, so local.sh may exit a moment before the last "[worker i]" lines
    reach the log; they have when no process of its group is left.
    """
    try:
      rc = self.popen.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      self.kill()
      pytest.fail(f"{' '.join(self.cmd)} still running after {timeout:.0f} s; output tail:\n{tail(self.output())}")
    deadline = time.monotonic() + 10
    while group_members(self.pid) and time.monotonic() < deadline:
      time.sleep(0.02)
    return rc

  def wait_until(self, predicate: Callable[[], bool], what: str, timeout: float = WATCHDOG_S,
                 poll_s: float = 0.02) -> None:
    """Polls `predicate` until it holds; fails (and kills) if the process ends first or after `timeout`."""
    deadline = time.monotonic() + timeout
    while not predicate():
      if self.popen.poll() is not None:
        pytest.fail(f"{self.cmd[0]}... ended (status {self.popen.returncode}) before {what}:\n"
                    f"{tail(self.output())}")
      if time.monotonic() > deadline:
        self.kill()
        pytest.fail(f"no {what} after {timeout:.0f} s:\n{tail(self.output())}")
      time.sleep(poll_s)

  def wait_for_text(self, text: str, path=None, timeout: float = WATCHDOG_S, poll_s: float = 0.02) -> None:
    """Waits until `text` appears in `path` (default: this process's log)."""
    path = str(path or self.log)
    self.wait_until(lambda: text in read(path), f"{text!r} in {os.path.basename(path)}", timeout, poll_s)


def run(cmd: List[str], log, environ: Dict[str, str], timeout: float = WATCHDOG_S):
  """Runs `cmd` to its end under the watchdog; returns (exit status, output)."""
  with Proc(cmd, log, environ) as proc:
    rc = proc.wait(timeout)
    return rc, proc.output()


def run_all(cmds: Iterable[List[str]], logs: Iterable, environ: Dict[str, str], timeout: float = WATCHDOG_S):
  """Runs several commands at once (independent runs overlap their start-up on two cores); returns
  [(exit status, output)] in order. All are killed if one hangs."""
  procs = [Proc(cmd, log, environ) for cmd, log in zip(cmds, logs)]
  try:
    deadline = time.monotonic() + timeout
    return [(p.wait(max(1.0, deadline - time.monotonic())), p.output()) for p in procs]
  finally:
    for p in procs:
      p.kill()


def main_cmd(*flags) -> List[str]:
  """`python -m gan_dist.main FLAGS...`."""
  return [PYTHON, "-m", "gan_dist.main", *[str(f) for f in flags]]


def local_sh_cmd(num_workers: int, *flags) -> List[str]:
  return ["bash", LOCAL_SH, str(num_workers), *[str(f) for f in flags]]


def error_lines(output: str) -> List[str]:
  """gan_dist's one-line errors (`error: ...`) in an output."""
  return [l for l in output.splitlines() if l.startswith("error: ") or re.match(r"\[worker \d+\] error: ", l)]


def assert_gone(pids: Iterable[int], within_s: float = 5.0) -> None:
  """Every pid ends within `within_s` seconds."""
  deadline = time.monotonic() + within_s
  left = [p for p in pids if alive(p)]
  while left and time.monotonic() < deadline:
    time.sleep(0.05)
    left = [p for p in left if alive(p)]
  assert not left, f"still running: {left}"


def last_error(output: str) -> Optional[str]:
  lines = error_lines(output)
  return lines[-1] if lines else None
