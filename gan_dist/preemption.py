"""SIGTERM/SIGINT as a request to stop cleanly: finish the chunk of steps, save on every worker, exit 75.

Schedulers announce preemption with SIGTERM (Kubernetes, Slurm, GCE/AWS spot shutdown scripts), users with Ctrl-C.
While a `StopRequest` is active, the first such signal only sets a flag. The trainer passes the flag to the next
`TrainStep` call as this worker's vote; the votes travel in the one all-reduce that ends every call, so all workers
learn after the same step that someone wants to stop, save a checkpoint of that step together and exit with
errors.EXIT_PREEMPTED.

Why our own agreement rather than tf.distribute's PreemptionCheckpointHandler: it costs nothing (the vote rides in
the all-reduce the step does anyway), it behaves the same under every strategy and launcher (the handler supports
a subset of strategies and platforms, and exits through its own code paths), and the save and the exit stay in the
trainer's flat loop where the other exits are. Python runs signal handlers between bytecodes, so a signal that
arrives while a chunk runs is acted on when the chunk returns: the run finishes the chunk it is in (or the checkpoint
or sample it is writing), then stops.

The trainer holds its StopRequest from its first check on. A signal while the run starts (reading the data, building
and restoring the model, training an evaluator's feature network: minutes, for large folders) is voted on once, in
one collective just before anything is written; every worker then stops before training, with exit 75 and nothing
new to save, and the workdir stays as it was. A scheduler requeues that like any other preemption (ended by the
signal's default action instead, launch/slurm.sbatch would have taken the job as finished). Before the trainer
starts (importing TensorFlow, connecting the workers of a cluster, whose C++ code holds Python's lock: strategy.make)
a signal ends the process at once, having written nothing; slurm.sbatch requeues after that exit (143) too.

A SIGINT after the first request (Ctrl-C twice, or Ctrl-C after a scheduler's SIGTERM) raises KeyboardInterrupt at
once: the user does not want to wait for the save (`cli.run` ends the process by SIGINT with one line, no
traceback). Python runs a handler once for signals that arrived while a chunk ran, so two Ctrl-C within one chunk
would look like one; every delivery is therefore also counted through a wakeup file descriptor (the C-level handler
writes one byte per signal). Further SIGTERMs are ignored: launchers may repeat the signal, and a save must not be
interrupted.

A KeyboardInterrupt raised by the handler does not always arrive as one: raised while TensorFlow traces a function
(inside CPython's own C code), it has come out as "SystemError: Objects/listobject.c:338: bad argument to internal
function", with a traceback and exit code 1. `interrupted()` says that the second Ctrl-C happened, whatever error it
turned into, so that the command line can end as it promised (`cli.guard`).
"""

import os
import signal
import threading
from typing import Optional

from absl import logging

# Whether a Ctrl-C after a first request raised KeyboardInterrupt in this process since the last clear_interrupted().
_interrupted = False


def interrupted() -> bool:
  """Whether a second Ctrl-C stopped this process's run (since the command started: clear_interrupted)."""
  return _interrupted


def clear_interrupted() -> None:
  """Forgets an earlier run's interruption (a command starts; in-process runs that follow one, as in tests)."""
  global _interrupted
  _interrupted = False


class StopRequest:
  """Context manager installing the handlers (main thread only; elsewhere it does nothing).

  Attributes:
    signal_name: "SIGTERM" or "SIGINT" once a stop was requested, else None.
    training: set by the trainer when its loop starts; before, a request means stopping before training (the log
      line says which).
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.signal_name: Optional[str] = None
    self.training = False
    self._previous = {}
    self._wakeup = None  # (read fd, write fd, the wakeup fd it replaced)
    self._sigints = 0

  @property
  def requested(self) -> bool:
    return self.signal_name is not None

  def _count_sigints(self) -> None:
    """Adds the SIGINTs the wakeup pipe recorded since the last call (one byte each, the signal number)."""
    if self._wakeup is None:
      return
    try:
      data = os.read(self._wakeup[0], 4096)
    except BlockingIOError:
      return
    self._sigints += data.count(bytes([int(signal.SIGINT)]))

  def _handle(self, signum, frame):
    del frame
    name = signal.Signals(signum).name
    self._count_sigints()
    if self.signal_name is not None or self._sigints > 1:
      if signum == signal.SIGINT:
        global _interrupted
        _interrupted = True
        raise KeyboardInterrupt  # Ctrl-C after a first request: the user does not want to wait for the save.
      return
    self.signal_name = name
    if self.training:
      logging.warning("%s received: finishing the current steps, then saving a checkpoint and exiting "
                      "(Ctrl-C again to stop without saving)", name)
    else:
      logging.warning("%s received while the run starts: it stops before training, with nothing new to save "
                      "(Ctrl-C again to stop at once)", name)

  def __enter__(self) -> "StopRequest":
    if threading.current_thread() is threading.main_thread():
      for signum in self.SIGNALS:
        self._previous[signum] = signal.signal(signum, self._handle)
      read_fd, write_fd = os.pipe()
      os.set_blocking(read_fd, False)
      os.set_blocking(write_fd, False)
      self._wakeup = (read_fd, write_fd, signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False))
    return self

  def __exit__(self, *exc) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous.clear()
    if self._wakeup is not None:
      read_fd, write_fd, previous = self._wakeup
      signal.set_wakeup_fd(previous)
      os.close(read_fd)
      os.close(write_fd)
      self._wakeup = None
