"""Command-line plumbing of every `python -m gan_dist.<tool>`: flag parsing, the one-line error, the tool runner.

Only command-line modules import this one (main, sample, export, evaluate, plots, pack, serve, eval.classifier,
eval.class_accuracy); library code takes a Config or arguments and never reads absl's FLAGS.

gan_dist's own outcomes (bad input, divergence, a damaged checkpoint, a failed peer, preemption) end with one line
`error: ...` on stderr and the exit code of `errors.py` (the traceback too with --verbosity=1); anything else is a
bug or an environment problem and keeps its full traceback.
"""

import difflib
import gc
import logging as pylogging
import os
import re
import signal
import sys
import traceback
import weakref
from typing import Callable, Optional, Sequence

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf

import gan_dist
from gan_dist import config as config_lib
from gan_dist import errors
from gan_dist import files
from gan_dist import preemption

FLAGS = flags.FLAGS
_HELP = "--helpfull lists every flag"
# absl's help flags: they print and exit with status 1, which gan_dist's exit codes call a bug; here they exit 0.
_HELP_FLAGS = ("help", "?", "helpshort", "helpfull", "helpxml")
# The Config flags each tool's FlagValues reads (`show_in_help`), for `parse_flags` to refuse the others.
_READS: "weakref.WeakKeyDictionary[flags.FlagValues, set]" = weakref.WeakKeyDictionary()
# The help of training flags whose meaning differs in the tools that read them (the trainer's text: config.py).
_TOOL_HELP = {
    "workdir": "The directory a run trained in (its flags.txt and checkpoints/).",
    "seed": "Seed of the images' noise: image i of a seed is the same whatever the number of images (and in the "
            "web demo).",
}
# What a failed call may leave half-built in its frames: Keras models and layers, checkpoints, variables.
_TRACKABLE = tf.__internal__.tracking.Trackable


def fail(message, code: int = errors.EXIT_USAGE, verbose: bool = False) -> int:
  """Prints `error: <message>` as one line on stderr (and the current traceback if `verbose`); returns `code`."""
  if verbose:
    traceback.print_exc()
  else:
    _release_failed_work()
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
  return code


def _is_tensorflow_state(value) -> bool:
  """Whether `value`, or one of its attributes, is a TensorFlow object (a model, a layer, a checkpoint, a variable)."""
  if isinstance(value, _TRACKABLE):
    return True
  attributes = getattr(value, "__dict__", None)
  return isinstance(attributes, dict) and any(isinstance(v, _TRACKABLE) for v in attributes.values())


def _clear_finished_frames(failure: BaseException) -> bool:
  """Clears the frames of `failure`'s traceback that have returned; True if one of them held TensorFlow state.

  Frames still running (the caller's) are left alone. A frame's locals are read through a snapshot dict that
  outlives `frame.clear()`, so that snapshot is emptied too."""
  running, frame = set(), sys._getframe()  # pylint: disable=protected-access
  while frame is not None:
    running.add(id(frame))
    frame = frame.f_back
  stateful = False
  for frame, _ in traceback.walk_tb(failure.__traceback__):
    if id(frame) in running:
      continue
    local_values = frame.f_locals
    stateful = stateful or any(_is_tensorflow_state(v) for v in local_values.values())
    frame.clear()
    local_values.clear()
  return stateful


def _release_failed_work() -> None:
  """Frees, before the error line, what the failed call left in its traceback's frames: a half-restored model (a
  damaged checkpoint) makes TensorFlow warn, when it is deleted at exit, about "unrestored values", lines that
  would follow the error line and say nothing more. Those deletion warnings are muted.

  A model holds reference cycles, which only a full garbage collection frees: that is collected, but only when a
  frame held TensorFlow objects, since a collection costs ~0.1 s in a fresh process and ~0.6 s in one that built
  many graphs (a refused flag, the commonest failure, holds none)."""
  failure = sys.exc_info()[1]
  if failure is None:
    return
  tf_logger = pylogging.getLogger("tensorflow")
  level = tf_logger.level
  tf_logger.setLevel(pylogging.ERROR)
  try:
    seen, stateful = set(), False
    while failure is not None and id(failure) not in seen:  # The error, and those it was raised from or during.
      seen.add(id(failure))
      stateful = _clear_finished_frames(failure) or stateful
      failure = failure.__cause__ or failure.__context__
    if stateful:
      gc.collect()
  finally:
    tf_logger.setLevel(level)


def parse_flags(argv, fv: Optional[flags.FlagValues] = None) -> list:
  """absl's parsing, with every flag and flagfile problem answered in one line and exit code 2.

  A flagfile line that is not `--name=value` reaches absl as a positional argument, which gan_dist never takes. A
  training flag named on the command line of a tool that does not read it is refused (see `show_in_help`), and so is
  a path the command reads on a filesystem TensorFlow cannot reach (`files.check_reachable`).
  `fv` defaults to `FLAGS` as it is when called (tests point FLAGS at a private FlagValues).
  """
  fv = FLAGS if fv is None else fv
  try:
    rest = fv(argv)
  except flags.Error as e:
    message = re.sub(r"^ERROR::? *", "", str(e))  # (absl's prefix of a flagfile it cannot open)
    if isinstance(e, flags.UnrecognizedFlagError) and _READS.get(fv):
      # absl's suggestions include training flags this tool would refuse: suggest among those it takes.
      message = f"Unknown command line flag '{e.flagname}'{_did_you_mean(e.flagname, _accepted(fv))}"
    sys.exit(fail(f"{message} ({_HELP})"))
  except SystemExit as e:
    asked = any(a.startswith("-") and a.lstrip("-").split("=", 1)[0] in _HELP_FLAGS for a in argv[1:])
    if asked and e.code == 1:
      sys.exit(errors.EXIT_OK)
    raise
  if len(rest) > 1:
    sys.exit(fail(f"unexpected argument {rest[1]!r}: flags are --name=value, on the command line or one per line of "
                  f"a --flagfile ({_HELP})"))
  unread = _unread_config_flags(argv, fv)
  if unread:
    sys.exit(fail(unread))
  for name in _accepted(fv):  # Paths on filesystems TensorFlow cannot reach, before any work (files.py).
    value = fv[name].value
    if isinstance(value, str):  # (check_reachable passes local paths unprobed.)
      try:
        files.check_reachable(value, f"--{name}={value}")
      except errors.UserError as e:
        sys.exit(fail(e))
  return rest


def _named(argv: Sequence[str], fv: flags.FlagValues) -> list:
  """The flags named on the command line itself (`--name=value`, `--name value`, `--noname`), in order; not those
  of its flagfiles."""
  names = []
  for arg in argv[1:]:
    if arg == "--":  # absl: everything after it is positional.
      break
    if not arg.startswith("-"):
      continue
    name = arg.lstrip("-").split("=", 1)[0]
    if name not in fv and name.startswith("no") and name[2:] in fv:
      name = name[2:]
    names.append(name)
  return names


def _accepted(fv: flags.FlagValues) -> list:
  """The flags a command takes: its own and absl's, and the training flags it reads (all for the trainer)."""
  reads = _READS.get(fv)
  return [n for n in fv if not reads or n not in config_lib.NAMES or n in reads]


def _did_you_mean(name: str, candidates: Sequence[str]) -> str:
  """"; did you mean --x?" for the candidates that share a whole word with `name` (--num_samples, --eval_num: --num)
  or are spelled like it; "" if none."""
  words = set(name.split("_"))
  close = [c for c in candidates if c in words or name in c.split("_")] or difflib.get_close_matches(name, candidates)
  return f"; did you mean {' or '.join('--' + c for c in sorted(close)[:3])}?" if close else ""


def _unread_config_flags(argv: Sequence[str], fv: flags.FlagValues) -> Optional[str]:
  """The error for a Config flag named on the command line of a tool that does not read it, or None.

  A tool lists the Config flags it reads with `show_in_help`; a command that lists none (the trainer, the
  benchmarks) reads the whole Config. A flagfile may set any flag: a training config is shared by every tool.
  """
  reads = _READS.get(fv)
  if not reads:
    return None
  for name in _named(argv, fv):
    if name in config_lib.NAMES and name not in reads:
      own = [n for n in _accepted(fv) if n not in reads
             and not (fv.find_module_defining_flag(n) or "absl").startswith("absl")]
      return (f"--{name} is a training flag this command does not read{_did_you_mean(name, own)} (of the training "
              f"flags it reads {', '.join('--' + n for n in sorted(reads))}; --help lists its flags)")
  return None


def define_config_flags(fv: Optional[flags.FlagValues] = None) -> None:
  """The Config's flags (config.define_flags) on `fv` (default FLAGS), once."""
  fv = FLAGS if fv is None else fv
  if "workdir" not in fv:
    config_lib.define_flags(fv)


def config_from_flags(fv: Optional[flags.FlagValues] = None, **overrides) -> config_lib.Config:
  """The Config of the parsed flags `fv` (default FLAGS)."""
  return config_lib.from_flag_values(FLAGS if fv is None else fv, **overrides)


def given(fv: flags.FlagValues, names: Sequence[str]) -> dict:
  """{name: value} of the flags among `names` given on the command line: the Config fields a tool that opens a
  workdir overrides in the run's flags.txt (the others keep the run's values, not the flags' defaults)."""
  return {name: fv[name].value for name in names if fv[name].present}


def define_checkpoint_flags(fv: flags.FlagValues, verb: str) -> None:
  """--step and --best, the choice of checkpoint of every tool that opens a workdir (`verb`: e.g. "Sample")."""
  flags.DEFINE_integer("step", None, f"{verb} the checkpoint of this step (default: the latest).", flag_values=fv)
  flags.DEFINE_boolean("best", False, f"{verb} the run's best checkpoint (lowest FCD, kept in checkpoints/best/ by "
                       "training with --eval_every) instead of the latest.", flag_values=fv)
  show_in_help(fv, ("step", "best"))


def show_in_help(fv: flags.FlagValues, names: Sequence[str]) -> None:
  """Lists the flags `names`, defined elsewhere (the Config's, `define_checkpoint_flags`), in the running command's
  --help beside its own: the flags of the Config that a tool reads (--workdir, --seed, ...). Its other Config flags
  are then refused on its command line (`parse_flags`): they would do nothing."""
  for name in names:
    # absl's --help shows the key flags of the module named sys.argv[0] (FlagValues.main_module_help).
    fv.register_key_flag_for_module(sys.argv[0], fv[name])
    if name in _TOOL_HELP:  # A tool's process holds its own FlagValues: the trainer's text is left as it is.
      fv[name].help = _TOOL_HELP[name]
  _READS.setdefault(fv, set()).update(name for name in names if name in config_lib.NAMES)


def verbose(fv: Optional[flags.FlagValues] = None) -> bool:
  """--verbosity=1 or more: gan_dist's one-line errors also print their traceback."""
  fv = FLAGS if fv is None else fv
  return "verbosity" in fv and fv["verbosity"].value >= 1


def guard(main: Callable[[list], Optional[int]]) -> Callable[[list], Optional[int]]:
  """`main` with gan_dist's own errors (errors.GanDistError: bad input, a damaged checkpoint, ...) and a missing
  file turned into one line on stderr and their exit code; any other exception keeps its traceback. After a second
  Ctrl-C (preemption.interrupted()) every exception becomes KeyboardInterrupt, for `run` to end as interrupted."""
  def guarded(argv):
    preemption.clear_interrupted()
    try:
      return main(argv)
    except Exception as e:  # pylint: disable=broad-except
      if preemption.interrupted():  # A second Ctrl-C, whatever error its KeyboardInterrupt became (preemption.py).
        raise KeyboardInterrupt from e
      if isinstance(e, errors.GanDistError):
        return fail(e, e.exit_code, verbose())
      if isinstance(e, FileNotFoundError):  # A path the user gave does not exist.
        return fail(e, errors.EXIT_USAGE, verbose())
      raise
  return guarded


def run(main: Callable[[list], Optional[int]], define_tool_flags: Optional[Callable[[flags.FlagValues], None]] = None
        ) -> None:
  """Runs a command: defines the Config's flags and the tool's own, parses them, calls `guard(main)(argv)`, exits.

  `main` returns an exit code (or None for 0).
  """
  # Ctrl-C from here on is Python's KeyboardInterrupt again, which `guard` and preemption.py handle (gan_dist's
  # __init__ ended the process on one while the command imported TensorFlow).
  if signal.getsignal(signal.SIGINT) is gan_dist.stop_while_starting:
    signal.signal(signal.SIGINT, signal.default_int_handler)
  logging.set_verbosity(logging.INFO)
  # tf.distribute logs every collective at INFO; keep the run's own log readable.
  tf.get_logger().setLevel("WARNING")
  define_config_flags(FLAGS)
  if define_tool_flags is not None:
    define_tool_flags(FLAGS)
  try:
    app.run(guard(main), flags_parser=parse_flags)
  except SystemExit:
    if not preemption.interrupted():  # (Set only if the interrupt was swallowed on its way out: preemption.py.)
      raise
  except KeyboardInterrupt:
    pass
  # Only a Ctrl-C gets here (after the first one: see preemption.py): one line, then the conventional end of an
  # interrupted program, death by SIGINT (exit status 130 in a shell), so that scripts around it stop too.
  # Said of any checkpoint: a Ctrl-C pair may come before the run's first save.
  fail("interrupted: stopped at once without saving this step; the same command resumes from the last checkpoint, "
       "if the run saved one", 130)
  signal.signal(signal.SIGINT, signal.SIG_DFL)
  os.kill(os.getpid(), signal.SIGINT)
