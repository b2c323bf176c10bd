"""SIGTERM and Ctrl-C (README "When things go wrong", gan_dist/preemption.py): the first is a request to save and exit
75, and the same command continues; a second Ctrl-C stops at once without saving.

The handlers themselves are tested in this process (fast); the command line in subprocesses (slow), each under a
watchdog (tests/subprocs.py). A multi-worker run stopped by a SIGTERM to one worker only is in test_multiworker.py,
launch/local.sh's forwarding and escalation in tests/launch/test_local_sh.py.
"""

import os
import re
import signal
import threading
import time

import pytest
import tensorflow as tf

from gan_dist import preemption
from tests import helpers
from tests import subprocs

SAVED = re.compile(r"^error: (SIGTERM|SIGINT) received: saved a checkpoint at step (\d+) on every worker", re.M)


@pytest.fixture
def main_thread():
  """Skips off the main thread (only it installs signal handlers); forgets, before and after the test, the process's
  record of a second Ctrl-C, which a test of it leaves set (the next test would otherwise start interrupted)."""
  if threading.current_thread() is not threading.main_thread():
    pytest.skip("signal handlers are installed by the main thread only")
  preemption.clear_interrupted()
  yield
  preemption.clear_interrupted()


# ------------------------------------------------------------------------------------------------ in-process tests


def test_first_signal_is_a_request_and_further_sigterms_are_ignored(main_thread):
  before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
  with preemption.StopRequest() as stop:
    assert not stop.requested
    signal.raise_signal(signal.SIGTERM)
    assert stop.requested and stop.signal_name == "SIGTERM"
    signal.raise_signal(signal.SIGTERM)  # Launchers may repeat it: still only a request, the save must go on.
    assert stop.signal_name == "SIGTERM"
  assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before  # Handlers restored.


def test_second_ctrl_c_raises_keyboard_interrupt(main_thread):
  before = signal.getsignal(signal.SIGINT)
  with preemption.StopRequest() as stop:
    signal.raise_signal(signal.SIGINT)
    assert stop.requested and stop.signal_name == "SIGINT"
    assert not preemption.interrupted()
    with pytest.raises(KeyboardInterrupt):
      signal.raise_signal(signal.SIGINT)
  assert signal.getsignal(signal.SIGINT) == before
  assert preemption.interrupted()  # What cli.guard asks, whatever error the KeyboardInterrupt became.


def test_two_ctrl_c_within_one_chunk_count_as_two(main_thread):
  """While TensorFlow runs a chunk, Python runs the handler once for several deliveries of one signal; the C-level
  handler writes one byte per delivery to the wakeup pipe, so the second Ctrl-C is still seen as a second one."""
  with preemption.StopRequest() as stop:
    os.write(stop._wakeup[1], bytes([int(signal.SIGINT)]))  # pylint: disable=protected-access  (a delivery whose
    with pytest.raises(KeyboardInterrupt):                  # Python handler was merged into the next one)
      signal.raise_signal(signal.SIGINT)


def test_ctrl_c_after_a_sigterm_stops_at_once(main_thread):
  with preemption.StopRequest() as stop:
    signal.raise_signal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
      signal.raise_signal(signal.SIGINT)
    assert stop.signal_name == "SIGTERM"


# ------------------------------------------------------------------------------------------- through the command


def _command(data_dir, workdir, num_samples: int):
  # The MLP GAN on one device: fast steps, no periodic checkpoints (only the stop's); after each chunk of 20 steps a
  # summary line and a sample grid of `num_samples` images (the time between a stop's log line and its save).
  return subprocs.main_cmd("--flagfile=configs/mlp_gan.cfg", "--strategy=one_device", f"--data_dir={data_dir}",
                           f"--workdir={workdir}", "--batch_size=16", "--steps_per_loop=20", "--summary_every=20",
                           "--checkpoint_every=100000", "--sample_every=20", f"--num_samples={num_samples}",
                           "--train_steps=100000")


def _trained(proc, after: int = 0):
  """Waits until the run logged a summary line of a step after `after` (it traced and trains)."""
  proc.wait_until(lambda: any(int(s) > after for s in re.findall(r"step (\d+)/100000 ", proc.output())),
                  f"a summary after step {after}")


def _latest_step(workdir):
  latest = tf.train.latest_checkpoint(str(workdir / "checkpoints"))
  return int(latest.rsplit("-", 1)[1]) if latest else None


@pytest.mark.slow
def test_ctrl_c_saves_and_exits_75_then_in_the_resumed_run_a_second_ctrl_c_stops_without_saving(tmp_path):
  """Ctrl-C (SIGINT to the terminal's process group): the run saves the step it reached, says so in one line and
  exits 75. The same command resumes from that checkpoint; there, Ctrl-C twice (the second once the log showed the
  first): it stops at once, by SIGINT, with one line and saving nothing.

  The first Ctrl-C is seen (and logged) when the chunk of steps in flight returns; the checkpoint is written after
  that chunk's summary and sample grid. In the resumed run a large grid (30,000 images, every chunk; the first run's
  are small) keeps that interval long, where the test polls the log every 2 ms: so the second Ctrl-C, sent when the
  log shows the first one, arrives before the save unless this test's process waits seconds for a core. (From the
  log line to the saved checkpoint's: 5.2 s with 30,000 images, 1.7 s with 10,000, on a busy 2-core AVX-512 AMD
  EPYC; the grid alone of 10,000 took 0.64 s.)
  (SIGTERM to a worker: test_multiworker.py; the handlers' rules: the tests above.)
  """
  data_dir = helpers.make_idx_dir(str(tmp_path / "data"), num=64)
  workdir = tmp_path / "W"
  environ = subprocs.env(tmp_path)
  with subprocs.Proc(_command(data_dir, workdir, 100), tmp_path / "first.log", environ) as proc:
    _trained(proc)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait() == 75, subprocs.tail(proc.output())
    out = proc.output()
  # One line says what happened, no traceback; the checkpoint of that step is the latest.
  assert len(subprocs.error_lines(out)) == 1 and "Traceback" not in out, subprocs.tail(out)
  found = SAVED.search(out)
  assert found and found.group(1) == "SIGINT", subprocs.tail(out)
  saved = int(found.group(2))
  assert saved > 0 and _latest_step(workdir) == saved

  with subprocs.Proc(_command(data_dir, workdir, 30000), tmp_path / "second.log", environ) as proc:
    _trained(proc, after=saved)
    assert f"Resumed from {workdir}/checkpoints/ckpt-{saved} at step {saved}" in proc.output()
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait_for_text("SIGINT received: finishing the current steps", poll_s=0.002)
    os.killpg(proc.pid, signal.SIGINT)
    second = time.monotonic()
    rc = proc.wait()
    out = proc.output()
  assert rc == -signal.SIGINT, subprocs.tail(out)  # Death by SIGINT, as an interrupted program ends (130 in a shell).
  assert subprocs.error_lines(out) == ["error: interrupted: stopped at once without saving this step; the same "
                                       "command resumes from the last checkpoint, if the run saved one"], (
                                           subprocs.tail(out))
  assert "Traceback" not in out and not SAVED.search(out) and "Saved checkpoint" not in out, subprocs.tail(out)
  assert _latest_step(workdir) == saved
  assert not [n for n in os.listdir(workdir / "checkpoints") if n.startswith("ckpt-") and not n.startswith(
      f"ckpt-{saved}.")], os.listdir(workdir / "checkpoints")
  assert time.monotonic() - second < 60


@pytest.mark.slow
def test_ctrl_c_while_a_command_imports_tensorflow_is_one_line_and_death_by_sigint(tmp_path):
  """Ctrl-C in the first seconds of a command, while it imports TensorFlow, was Python's KeyboardInterrupt with a
  traceback from deep inside that import. Now one line, nothing written, and the end of an interrupted program.

  The signal goes once TensorFlow's library is mapped into the process (read from /proc/PID/maps): gan_dist's
  __init__ ran before (it precedes TensorFlow's import), and the rest of that import takes seconds."""
  workdir = tmp_path / "W"
  with subprocs.Proc(subprocs.main_cmd("--flagfile=configs/mlp_gan.cfg", f"--workdir={workdir}"), tmp_path / "log",
                     subprocs.env(tmp_path)) as proc:
    maps = f"/proc/{proc.pid}/maps"
    proc.wait_until(lambda: "_pywrap_tensorflow" in subprocs.read(maps), "TensorFlow's library loaded", poll_s=0.005)
    os.killpg(proc.pid, signal.SIGINT)
    rc = proc.wait()
    out = proc.output()
  assert rc == -signal.SIGINT, subprocs.tail(out)
  assert subprocs.error_lines(out) == ["error: interrupted while starting (importing TensorFlow): stopped, nothing "
                                       "written"], subprocs.tail(out)
  assert "Traceback" not in out and not workdir.exists(), subprocs.tail(out)
