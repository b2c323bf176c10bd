"""launch/local.sh without TensorFlow: fake workers (a PYTHON that is not gan_dist) show what each worker is started
with, and how the launcher reacts to a failing worker, to SIGTERM and Ctrl-C, to a second signal and to workers that
outlive its grace period, exactly as its header documents. Real workers under local.sh: tests/test_multiworker.py.

Every run is a subprocess in its own session under a watchdog (tests/subprocs.py).
"""

import json
import os
import re
import signal
import sys
import time

import pytest

from tests import subprocs

pytestmark = pytest.mark.slow  # Every test here starts local.sh and its workers.

FAKE_TIMEOUT_S = 60  # These runs take seconds; a minute means a hang.


def _fake_python(tmp_path, body):
  """An interpreter for local.sh's PYTHON: runs local.sh's port-picking script (`-`, stdin) and its other helpers
  (`-c CODE`), otherwise `body` (a worker, with `index` its worker index)."""
  path = tmp_path / "fake_python"
  path.write_text(f"#!{sys.executable}\nimport json, os, signal, sys, time\n"
                  "if sys.argv[1] == '-':\n  sys.argv.pop(0)\n  exec(sys.stdin.read())\n  sys.exit()\n"
                  "if sys.argv[1] == '-c':\n  code = sys.argv[2]\n  sys.argv[1:3] = []\n  exec(code)\n"
                  "  sys.exit()\n"
                  "index = json.loads(os.environ['TF_CONFIG'])['task']['index']\n" + body)
  path.chmod(0o755)
  return str(path)


def _fake_gpus(tmp_path, count):
  """A PATH with an nvidia-smi that lists `count` GPUs."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir(exist_ok=True)
  smi = bin_dir / "nvidia-smi"
  smi.write_text("#!/bin/sh\n" + "".join(f"echo {i}\n" for i in range(count)))
  smi.chmod(0o755)
  return f"{bin_dir}:{os.environ['PATH']}"


def _run(tmp_path, args, **environ):
  """Runs local.sh with `args` (a PYTHON etc. in `environ`) to its end; returns (exit status, output)."""
  return subprocs.run(["bash", subprocs.LOCAL_SH, *map(str, args)], tmp_path / "local.out",
                      subprocs.env(tmp_path, **environ), timeout=FAKE_TIMEOUT_S)


def test_local_sh_usage(tmp_path):
  rc, out = _run(tmp_path, [])
  assert rc == 2 and "usage:" in out
  rc, out = _run(tmp_path, ["two", "--train_steps=1"])
  assert rc == 2 and "usage:" in out


@pytest.mark.parametrize("setting", [dict(GRACE_S="2m"), dict(FAILED_GRACE_S="-1")])
def test_local_sh_refuses_a_grace_that_is_not_whole_seconds(tmp_path, setting):
  rc, out = _run(tmp_path, [2, f"--workdir={tmp_path / 'w'}"], **setting)
  (name, value), = setting.items()
  assert rc == 2 and out.strip() == f"local.sh: {name}={value} is not a whole number of seconds", out
  assert not (tmp_path / "w").exists()


def test_local_sh_environment_of_each_worker(tmp_path):
  """What each worker is started with, where its output goes, and GPUS_PER_WORKER."""
  python = _fake_python(tmp_path, "print('argv', json.dumps(sys.argv[1:]))\n"
                                  "print('tf_config', os.environ['TF_CONFIG'])\n"
                                  "print('cuda', os.environ.get('CUDA_VISIBLE_DEVICES'))\n")
  workdir = tmp_path / "workdir"
  flagfile = tmp_path / "x.cfg"
  flagfile.write_text("--train_steps=1\n")
  rc, out = _run(tmp_path, [3, f"--flagfile={flagfile}", "--workdir", workdir], PYTHON=python, GPUS_PER_WORKER=2,
                 PATH=_fake_gpus(tmp_path, 6), CUDA_VISIBLE_DEVICES=None)
  assert rc == 0, out
  configs = []
  for i in range(3):
    lines = (workdir / "logs" / f"worker_{i}.log").read_text().splitlines()
    # The launcher's own flags come last, where a flagfile or argument cannot override them.
    assert f"[worker {i}] argv " + json.dumps(["-m", "gan_dist.main", f"--flagfile={flagfile}", "--workdir",
                                               str(workdir), "--strategy=multi_worker_mirrored",
                                               "--cluster=tf_config"]) in out
    tf_config = json.loads(next(l for l in lines if l.startswith("tf_config ")).split(" ", 1)[1])
    assert tf_config["task"] == {"type": "worker", "index": i}
    configs.append(tf_config["cluster"])
    assert f"cuda {2 * i},{2 * i + 1}" in lines
  workers = configs[0]["worker"]
  assert configs == [configs[0]] * 3 and len(set(workers)) == 3
  assert all(w.startswith("localhost:") for w in workers)


@pytest.mark.parametrize("on_sigterm", ["exits", "runs_on"])
def test_local_sh_failing_worker_stops_the_others(tmp_path, on_sigterm):
  """Worker 1 exits with status 3 while worker 0 would run for 10 minutes: local.sh stops worker 0 and exits 3,
  naming worker 1. "runs_on": worker 0 ignores SIGTERM, as a gan_dist worker blocked in a collective with its dead
  peer does (its handler only runs when the collective returns): local.sh kills it after its grace (FAILED_GRACE_S,
  3 s here, 10 by default)."""
  ignore = "signal.signal(signal.SIGTERM, lambda *_: print('worker 0 ignores SIGTERM', flush=True))\n"
  # Worker 1 fails only once worker 0 has its handler: on a busy machine an interpreter can take over a second to
  # start, and a SIGTERM before the handler would end worker 0 at once.
  ready = tmp_path / "worker0_ready"
  python = _fake_python(tmp_path, (ignore if on_sigterm == "runs_on" else "") +
                        f"print('started', flush=True)\nready = {str(ready)!r}\n"
                        "if index == 1:\n  while not os.path.exists(ready):\n    time.sleep(0.01)\n"
                        "  time.sleep(1)\n  sys.exit(3)\n"
                        "open(ready, 'w').close()\ntime.sleep(600)\n")
  started = time.monotonic()
  grace = dict(FAILED_GRACE_S=3) if on_sigterm == "runs_on" else {}  # "exits": the default 10 s, never waited.
  rc, out = _run(tmp_path, [2], PYTHON=python, **grace)
  elapsed = time.monotonic() - started
  assert rc == 3, out
  assert "local.sh: worker 1 (pid" in out and "failed with exit status 3; stopping the other workers" in out
  assert "local.sh: FAILED: worker 1 exited with status 3" in out
  if on_sigterm == "runs_on":
    # Worker 1 fails after ~1 s, then the 3 s grace: over 4 s, and well under the 11 s of the default grace (10 s).
    assert "[worker 0] worker 0 ignores SIGTERM" in out and 4 <= elapsed < 9, (elapsed, out)
  else:
    assert elapsed < 10, (elapsed, out)
  subprocs.assert_gone([subprocs.worker_pids(out)[0]])


def _cuda_of_each_worker(tmp_path, num_workers, **environ):
  python = _fake_python(tmp_path, "print('cuda', repr(os.environ.get('CUDA_VISIBLE_DEVICES')))\n")
  rc, out = _run(tmp_path, [num_workers, f"--workdir={tmp_path / 'w'}"], PYTHON=python, **environ)
  return rc, out, {int(i): v for i, v in re.findall(r"\[worker (\d+)\] cuda (\S+)", out)}


def test_local_sh_shares_the_gpus_between_workers(tmp_path):
  """With GPUs and no GPUS_PER_WORKER each worker gets its share; impossible requests are refused."""
  unset = dict(CUDA_VISIBLE_DEVICES=None)
  rc, out, cuda = _cuda_of_each_worker(tmp_path, 2, PATH=_fake_gpus(tmp_path, 4), **unset)
  assert rc == 0 and cuda == {0: "'0,1'", 1: "'2,3'"}, out
  rc, out, cuda = _cuda_of_each_worker(tmp_path, 2, CUDA_VISIBLE_DEVICES="3,5,6")  # Only the visible ones count.
  assert rc == 0 and cuda == {0: "'3'", 1: "'5'"}, out
  assert "do not split evenly" in out
  rc, out, _ = _cuda_of_each_worker(tmp_path, 3, PATH=_fake_gpus(tmp_path, 2), **unset)
  assert rc == 2 and "3 workers but only 2 GPU(s)" in out
  rc, out, _ = _cuda_of_each_worker(tmp_path, 2, PATH=_fake_gpus(tmp_path, 4), GPUS_PER_WORKER=3, **unset)
  assert rc == 2 and "needs 6 GPUs; this machine has 4" in out
  # No GPU: every worker on the CPU, with the environment it had (nothing set; or the empty list the tests use).
  rc, out, cuda = _cuda_of_each_worker(tmp_path, 2, PATH=_fake_gpus(tmp_path, 0), **unset)
  assert rc == 0 and cuda == {0: "None", 1: "None"}, out
  rc, out, cuda = _cuda_of_each_worker(tmp_path, 2, CUDA_VISIBLE_DEVICES="")
  assert rc == 0 and cuda == {0: "''", 1: "''"}, out
  rc, out, _ = _cuda_of_each_worker(tmp_path, 2, PATH=_fake_gpus(tmp_path, 0), GPUS_PER_WORKER=1, **unset)
  assert rc == 2 and "no GPU" in out
  # CUDA reads CUDA_VISIBLE_DEVICES up to its first invalid entry: -1 hides every GPU (even with nvidia-smi's 4).
  rc, out, cuda = _cuda_of_each_worker(tmp_path, 2, CUDA_VISIBLE_DEVICES="-1", PATH=_fake_gpus(tmp_path, 4))
  assert rc == 0 and cuda == {0: "'-1'", 1: "'-1'"}, out
  rc, out, _ = _cuda_of_each_worker(tmp_path, 2, CUDA_VISIBLE_DEVICES="-1", GPUS_PER_WORKER=1)
  assert rc == 2 and "no GPU is visible (CUDA_VISIBLE_DEVICES=-1)" in out, out
  rc, out, _ = _cuda_of_each_worker(tmp_path, 2, CUDA_VISIBLE_DEVICES="4,-1,5")
  assert rc == 2 and "2 workers but only 1 GPU(s)" in out, out


def test_local_sh_reads_the_workdir_in_flagfiles(tmp_path):
  """The logs go where gan_dist will put the workdir: a --workdir in a (nested) flagfile counts, a later one on the
  command line overrides it; a flagfile that cannot be read is refused before anything starts or is created."""
  python = _fake_python(tmp_path, "print('hello')\n")
  inner, outer = tmp_path / "inner.cfg", tmp_path / "outer.cfg"
  inner.write_text(f"# a config\n--workdir={tmp_path / 'from_flagfile'}\n")
  outer.write_text(f"--train_steps=1\n--flagfile={inner}\n")
  rc, out = _run(tmp_path, [2, f"--workdir={tmp_path / 'overridden'}", f"--flagfile={outer}"], PYTHON=python)
  assert rc == 0 and (tmp_path / "from_flagfile" / "logs" / "worker_1.log").exists(), out
  assert not (tmp_path / "overridden").exists()
  rc, out = _run(tmp_path, [2, f"--flagfile={outer}", "--workdir", tmp_path / "cli"], PYTHON=python)
  assert rc == 0 and (tmp_path / "cli" / "logs" / "worker_1.log").exists(), out
  rc, out = _run(tmp_path, [2, "--flagfile=missing.cfg", f"--workdir={tmp_path / 'never'}"], PYTHON=python)
  assert rc == 2 and out.strip() == "local.sh: cannot read the flagfile 'missing.cfg' (--flagfile)", out
  assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("before", ["absent", "resumed"])
def test_local_sh_leaves_the_workdir_as_it_was_when_the_run_is_refused(tmp_path, before):
  """Worker 0 refuses the run (exit 2, as gan_dist does on a bad flag, before writing anything) while worker 1 is
  still starting: local.sh stops worker 1 and takes back what it wrote itself, the log folders it created and its
  lines in logs that were there before. "absent": a workdir two levels below a missing folder."""
  python = _fake_python(tmp_path, "print('error: bad flag', flush=True)\nif index == 0:\n  sys.exit(2)\n"
                                  "time.sleep(600)\n")
  if before == "absent":
    workdir = tmp_path / "new" / "run"
  else:
    workdir = tmp_path / "run"
    (workdir / "logs").mkdir(parents=True)
    (workdir / "logs" / "worker_0.log").write_text("an earlier run's line\n")
    (workdir / "checkpoints").mkdir()
  snapshot = {str(p): p.read_bytes() if p.is_file() else None for p in sorted(tmp_path.rglob("*"))
              if "tmp" not in p.relative_to(tmp_path).parts[:1]}
  rc, out = _run(tmp_path, [2, f"--workdir={workdir}"], PYTHON=python)
  assert rc == 2, out
  assert "[worker 0] error: bad flag" in out
  assert "local.sh: worker 0 (pid" in out and "refused the run (exit status 2; its error is above)" in out
  assert "local.sh: the run was refused: removed the log lines, files and folders this script wrote" in out
  assert "local.sh: FAILED: worker 0 exited with status 2" in out
  after = {str(p): p.read_bytes() if p.is_file() else None for p in sorted(tmp_path.rglob("*"))
           if "tmp" not in p.relative_to(tmp_path).parts[:1] and p.name not in ("fake_python", "local.out")}
  assert after == {k: v for k, v in snapshot.items() if not k.endswith(("fake_python", "local.out"))}
  subprocs.assert_gone(subprocs.worker_pids(out).values())


def test_local_sh_keeps_the_logs_of_a_failed_run(tmp_path):
  """A failure that is not a refusal (exit 3): the logs stay, for the post-mortem."""
  python = _fake_python(tmp_path, "print('crashing', flush=True)\nsys.exit(3 if index == 0 else 0)\n")
  rc, out = _run(tmp_path, [2, f"--workdir={tmp_path / 'run'}"], PYTHON=python)
  assert rc == 3 and "refused" not in out, out
  assert "crashing" in (tmp_path / "run" / "logs" / "worker_0.log").read_text()


def test_local_sh_keeps_logs_local_for_a_remote_workdir(tmp_path):
  python = _fake_python(tmp_path, "print('hello')\n")
  rc, out = _run(tmp_path, [2, "--workdir=gs://bucket/run"], PYTHON=python)
  assert rc == 0, out
  log_dir = re.search(r"logs in (\S+)", out).group(1)
  assert not log_dir.startswith("gs:") and os.path.exists(os.path.join(log_dir, "worker_1.log"))
  assert not os.path.exists(os.path.join(subprocs.REPO, "gs:"))


# ------------------------------------------------------------------------------------------------------- signals

# A worker that reports every SIGTERM/SIGINT it gets; "save" exits 75 on the first one (as gan_dist does after its
# checkpoint), "ignore" runs on (a worker stuck in a long step or a hung collective).
_SIGNAL_WORKER = """
def on_signal(signum, frame):
  print(f"worker {index} got {signal.Signals(signum).name}", flush=True)
  if MODE == "save":
    time.sleep(0.3)  # Its checkpoint; the last lines must still reach the log.
    print(f"worker {index} saved", flush=True)
    sys.exit(75)
signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGINT, on_signal)
print(f"worker {index} ready", flush=True)
while True:
  time.sleep(0.05)
"""


def _start_signal_workers(tmp_path, mode, **environ):
  python = _fake_python(tmp_path, f"MODE = {mode!r}\n" + _SIGNAL_WORKER)
  proc = subprocs.Proc(["bash", subprocs.LOCAL_SH, "2", f"--workdir={tmp_path / 'w'}"], tmp_path / "local.out",
                       subprocs.env(tmp_path, PYTHON=python, **environ))
  for i in range(2):
    proc.wait_for_text(f"[worker {i}] worker {i} ready", timeout=FAKE_TIMEOUT_S)
  return proc


def _send(proc, sig):
  """SIGTERM to local.sh (a scheduler, `kill`); SIGINT to its whole process group, as Ctrl-C in a terminal does."""
  if sig == signal.SIGINT:
    os.killpg(proc.pid, sig)
  else:
    proc.signal(sig)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "ctrl_c"])
def test_local_sh_passes_the_signal_on_and_exits_75_when_every_worker_saved(tmp_path, sig):
  with _start_signal_workers(tmp_path, "save") as proc:
    _send(proc, sig)
    assert proc.wait(FAKE_TIMEOUT_S) == 75, proc.output()
    out = proc.output()
    pids = subprocs.worker_pids(out)
  short = sig.name[3:]
  assert f"local.sh: {short}: asking every worker to save a checkpoint and exit" in out
  for i in range(2):
    # Each worker got the same signal, once; its last lines (after the signal) still reached the output and its
    # log: the log pipes outlive a Ctrl-C.
    assert out.count(f"[worker {i}] worker {i} got ") == 1 and f"[worker {i}] worker {i} got {sig.name}" in out
    assert f"[worker {i}] worker {i} saved" in out
    assert f"worker {i} saved" in (tmp_path / "w" / "logs" / f"worker_{i}.log").read_text()
    assert f"local.sh: worker {i} stopped after saving a checkpoint, or before training (exit 75)" in out
  assert (f"local.sh: all 2 worker(s) stopped after {short}, with a checkpoint saved or before training; rerun the "
          "same command to continue") in out
  subprocs.assert_gone(pids.values())


def _fake_env_without_default_signal(tmp_path):
  """A PATH whose `env` is coreutils' before 8.31, which has no --default-signal (local.sh then resets SIGINT through
  the interpreter)."""
  bin_dir = tmp_path / "old_env"
  bin_dir.mkdir()
  env = bin_dir / "env"
  real_env = next(os.path.join(d, "env") for d in os.environ["PATH"].split(os.pathsep)
                  if os.access(os.path.join(d, "env"), os.X_OK))
  env.write_text("#!/bin/sh\ncase \"$1\" in --default-signal*) echo \"env: unrecognized option '$1'\" >&2; exit 125;;"
                 f" esac\nexec {real_env} \"$@\"\n")
  env.chmod(0o755)
  return f"{bin_dir}:{os.environ['PATH']}"


@pytest.mark.parametrize("env_tool", ["default_signal", "old_coreutils"])
def test_local_sh_ctrl_c_reaches_workers_that_are_still_starting(tmp_path, env_tool):
  """A worker starts with SIGINT at its default action, not ignored as a background job of a script would inherit
  it: one still starting up (no handler of its own yet, like gan_dist importing TensorFlow) ends at once on the
  Ctrl-C that local.sh passes on, and local.sh exits 130 without waiting for GRACE_S (here 10 minutes)."""
  python = _fake_python(tmp_path, "ignored = int(next(l for l in open('/proc/self/status')"
                                  " if l.startswith('SigIgn:')).split()[1], 16)\n"
                                  "print('SIGINT ignored:', bool(ignored & (1 << (signal.SIGINT - 1))), flush=True)\n"
                                  "print('ready', flush=True)\ntime.sleep(600)\n")
  path = _fake_env_without_default_signal(tmp_path) if env_tool == "old_coreutils" else os.environ["PATH"]
  with subprocs.Proc(["bash", subprocs.LOCAL_SH, "2", f"--workdir={tmp_path / 'w'}"], tmp_path / "local.out",
                     subprocs.env(tmp_path, PYTHON=python, GRACE_S=600, PATH=path)) as proc:
    for i in range(2):
      proc.wait_for_text(f"[worker {i}] ready", timeout=FAKE_TIMEOUT_S)
    sent = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(FAKE_TIMEOUT_S) == 130, proc.output()
    elapsed = time.monotonic() - sent
    out = proc.output()
  assert all(f"[worker {i}] SIGINT ignored: False" in out for i in range(2)), out
  assert "local.sh: INT: asking every worker to save a checkpoint and exit" in out
  assert "ended by a signal (exit status 130) after SIGINT, without a checkpoint" in out
  assert elapsed < 10, elapsed
  subprocs.assert_gone(subprocs.worker_pids(out).values())


@pytest.mark.parametrize("first,second", [(signal.SIGTERM, signal.SIGTERM), (signal.SIGINT, signal.SIGINT),
                                          (signal.SIGTERM, signal.SIGINT)], ids=["term_term", "ctrl_c_twice",
                                                                                 "term_ctrl_c"])
def test_local_sh_second_signal_kills_the_workers_at_once(tmp_path, first, second):
  """Workers that do not exit on the first signal: a second one kills them without waiting for the grace period
  (GRACE_S, here 10 minutes), and local.sh exits 130."""
  with _start_signal_workers(tmp_path, "ignore", GRACE_S=600) as proc:
    _send(proc, first)
    for i in range(2):
      proc.wait_for_text(f"[worker {i}] worker {i} got {first.name}", timeout=FAKE_TIMEOUT_S)
    sent = time.monotonic()
    _send(proc, second)
    assert proc.wait(FAKE_TIMEOUT_S) == 130, proc.output()
    elapsed = time.monotonic() - sent
    out = proc.output()
  assert f"local.sh: {second.name[3:]} again; killing all workers without waiting for their checkpoint" in out
  assert elapsed < 10, elapsed  # local.sh reacts within its 0.5 s poll; SIGKILL needs no grace.
  subprocs.assert_gone(subprocs.worker_pids(out).values())


def test_local_sh_kills_workers_still_running_after_the_grace_period(tmp_path):
  with _start_signal_workers(tmp_path, "ignore", GRACE_S=2) as proc:
    proc.signal(signal.SIGTERM)
    sent = time.monotonic()
    assert proc.wait(FAKE_TIMEOUT_S) == 130, proc.output()
    elapsed = time.monotonic() - sent
    out = proc.output()
  assert "local.sh: workers still running 2s after TERM; killing them" in out
  assert all(f"[worker {i}] worker {i} got SIGTERM" in out for i in range(2))
  assert 2 <= elapsed < 10, elapsed
  subprocs.assert_gone(subprocs.worker_pids(out).values())
