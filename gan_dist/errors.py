"""gan_dist's own errors and the process exit code of each; `cli.guard` turns them into exits (for every tool,
`main.py` through it).

Exit codes of `python -m gan_dist.main` (also in README "When things go wrong"):

  0   EXIT_OK           --train_steps reached.
  1   (Python)          an unexpected error: a bug or an environment problem; the traceback is printed.
  2   EXIT_USAGE        bad input (flags, flagfile, data, workdir): one line naming the problem and the fix;
                        nothing in the workdir was created, changed or deleted.
  3   EXIT_DIVERGED     losses or weights became non-finite; the step range is named, nothing non-finite was
                        saved, and the last good checkpoint is kept.
  4   EXIT_CORRUPT      the checkpoint to resume from cannot be read; the message names the newest one that
                        restores and the --resume_step flag that resumes from it. The tools that open a workdir
                        (sample, export, evaluate, plots, serve) end the same way, naming the --step to pass.
  5   EXIT_PEER         another worker of a multi-worker run died, froze or could not be reached; relaunch the
                        whole cluster to resume from the last checkpoint.
  74  EXIT_DISK_FULL    a checkpoint could not be saved: its filesystem is full. The message names the filesystem,
                        the space the checkpoint needs and the last checkpoint, which is intact; free space and rerun
                        the same command to resume from it (74 is EX_IOERR of sysexits.h).
  75  EXIT_PREEMPTED    SIGTERM or SIGINT: every worker saved a checkpoint at the same step; rerun the same command
                        to continue (75 is EX_TEMPFAIL of sysexits.h: "try again later").
"""

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_DIVERGED = 3
EXIT_CORRUPT = 4
EXIT_PEER = 5
EXIT_DISK_FULL = 74
EXIT_PREEMPTED = 75


class GanDistError(Exception):
  """An outcome gan_dist explains in one line (no traceback unless --verbosity=1); `exit_code` is the process's."""

  exit_code = 1


class UserError(GanDistError, ValueError):
  """Bad input that the user fixes: flags, flagfiles, data, workdir. Raised before anything is written.

  Also a ValueError, so that callers and tests that catch ValueError keep working.
  """

  exit_code = EXIT_USAGE


class DivergedError(GanDistError):
  """Non-finite losses or weights; raised before anything non-finite could be saved."""

  exit_code = EXIT_DIVERGED


class CorruptCheckpointError(GanDistError):
  """The checkpoint to resume from is damaged; the message names the newest one that restores."""

  exit_code = EXIT_CORRUPT


class PeerFailureError(GanDistError):
  """A collective failed because another worker died, froze or became unreachable."""

  exit_code = EXIT_PEER


class DiskFullError(GanDistError):
  """A save failed for lack of space; the previous checkpoint is intact and the failed save's files are removed."""

  exit_code = EXIT_DISK_FULL


class Preempted(GanDistError):
  """SIGTERM/SIGINT was handled: every worker saved a checkpoint at `step`, or (`saved` False) the signal came while
  the run started and every worker stopped before training, with nothing new to save (`step`: the checkpoint it
  resumed from, 0 if none)."""

  exit_code = EXIT_PREEMPTED

  def __init__(self, step: int, signal_name: str, saved: bool = True):
    if saved:
      message = (f"{signal_name} received: saved a checkpoint at step {step} on every worker; rerun the same command "
                 "to continue from it")
    else:
      kept = f"the checkpoint of step {step} is the latest" if step else "the workdir holds no checkpoint yet"
      message = (f"{signal_name} received while the run started: stopped before training, nothing new to save "
                 f"({kept}); rerun the same command to {'continue from it' if step else 'start'}")
    super().__init__(message)
    self.step = step
    self.saved = saved
