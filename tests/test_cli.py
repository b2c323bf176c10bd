"""Command-line plumbing: flag problems and gan_dist's own errors are one line with their exit code."""

import importlib
import logging
import os
import re
import signal
import sys
import threading

from absl import app
from absl import flags
import pytest
import tensorflow as tf

from gan_dist import cli
from gan_dist import config as config_lib
from gan_dist import errors
from gan_dist import preemption


def _parse(argv):
  fv = flags.FlagValues()
  config_lib.define_flags(fv)
  cli.parse_flags(["gan_dist", *argv], fv)
  return config_lib.from_flag_values(fv)


def _one_line_error(stderr: str) -> str:
  lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
  assert len(lines) == 1 and "Traceback" not in stderr, stderr[-2000:]
  return lines[0]


@pytest.mark.parametrize("argv,message", [
    (["--bogus=1"], "Unknown command line flag 'bogus'"),
    (["--loss=wgan"], "flag --loss=wgan: value should be one of"),
    (["--ema_decay=1.0"], "flag --ema_decay=1.0: must be in [0, 1)"),
    (["--ema_decay=-0.5"], "flag --ema_decay=-0.5: must be in [0, 1)"),
    (["--seed=-1"], "flag --seed=-1: -1 is not an integer in the range [0, 4294967295]"),  # NumPy's seeds.
    (["--channels=2"], "flag --channels=2: must be one of 0, 1, 3"),
    (["--batch_size=abc"], "flag --batch_size=abc: invalid literal"),
    (["--flagfile=FLAGFILE_NOT_A_FLAG"], "unexpected argument 'batch_size 64': flags are --name=value"),
    (["--flagfile=FLAGFILE_SPACE"], "Unknown command line flag 'batch_size 64'"),
    (["--flagfile=/nonexistent/x.cfg"], "error: Unable to open flagfile"),  # Not absl's "ERROR:: " after ours.
    (["stray"], "unexpected argument 'stray'"),
])
def test_bad_flags_and_flagfiles_are_one_line_and_exit_2(tmp_path, capsys, argv, message):
  (tmp_path / "not_a_flag.cfg").write_text("--arch=dcgan\nbatch_size 64\n")
  (tmp_path / "space.cfg").write_text("--arch=dcgan\n--batch_size 64\n")
  argv = [a.replace("FLAGFILE_NOT_A_FLAG", str(tmp_path / "not_a_flag.cfg"))
          .replace("FLAGFILE_SPACE", str(tmp_path / "space.cfg")) for a in argv]
  with pytest.raises(SystemExit) as exited:
    _parse(argv)
  assert exited.value.code == errors.EXIT_USAGE
  assert message in _one_line_error(capsys.readouterr().err)


def test_fail_prints_one_line_and_returns_the_code(capsys):
  assert cli.fail("two\nlines  and   spaces", errors.EXIT_CORRUPT) == errors.EXIT_CORRUPT
  assert capsys.readouterr().err == "error: two lines and spaces\n"


def test_fail_frees_the_failed_calls_objects_before_its_line_and_mutes_their_tensorflow_warnings(capsys, caplog):
  # A damaged checkpoint leaves a half-restored model in the failed call's frames; TensorFlow warns about its
  # "unrestored values" when it is deleted, which happened at exit, after the error line.
  events = []

  class HalfRestored(tf.Module):
    def __init__(self):
      super().__init__()
      self.cycle = [self]  # As a Keras model's layers refer back to it: only a full collection frees it.

    def __del__(self):
      events.append("deleted")
      logging.getLogger("tensorflow").warning("deleted with unrestored values")

  def restore():
    model = HalfRestored()  # Held by this frame, as inference.load's model is.
    try:
      raise ValueError(f"checksum of {type(model).__name__} does not match")
    except ValueError:
      raise errors.CorruptCheckpointError("checkpoint is damaged") from None

  with caplog.at_level(logging.WARNING), caplog.at_level(logging.WARNING, logger="tensorflow"):
    try:
      restore()
    except errors.GanDistError as e:
      assert cli.fail(e, e.exit_code) == errors.EXIT_CORRUPT
      events.append("line printed")
    assert logging.getLogger("tensorflow").level == logging.WARNING  # Muted only while the frames were freed.
  assert events == ["deleted", "line printed"]
  assert "unrestored" not in caplog.text
  assert capsys.readouterr().err == "error: checkpoint is damaged\n"


def test_fail_collects_garbage_only_when_the_failed_calls_frames_held_tensorflow_objects(monkeypatch, capsys):
  collections = []
  monkeypatch.setattr(cli.gc, "collect", lambda: collections.append(1))

  def check(value):
    raise errors.UserError(f"bad --data_dir={value}")

  def refuse(value):
    try:
      check(value)
    except errors.UserError as e:
      return cli.fail(e)  # check's frame has returned, with value in it; this one runs: left alone.

  assert refuse("/nope") == errors.EXIT_USAGE and not collections  # A refused flag: ~0.6 s saved in a big process.
  assert refuse(tf.Variable(1.0)) == errors.EXIT_USAGE and len(collections) == 1
  capsys.readouterr()


@pytest.mark.parametrize("raised,code", [
    (errors.UserError("bad --data_dir"), errors.EXIT_USAGE),
    (errors.CorruptCheckpointError("damaged"), errors.EXIT_CORRUPT),
    (errors.Preempted(7, "SIGTERM"), errors.EXIT_PREEMPTED),
    (FileNotFoundError("no such file: x"), errors.EXIT_USAGE),
])
def test_guard_turns_gan_dists_errors_into_their_exit_code(capsys, raised, code):
  def main(argv):
    raise raised

  assert cli.guard(main)(["tool"]) == code
  assert _one_line_error(capsys.readouterr().err)


def test_guard_lets_other_errors_keep_their_traceback_and_passes_results_through():
  def broken(argv):
    raise ValueError("a bug")

  with pytest.raises(ValueError, match="a bug"):
    cli.guard(broken)(["tool"])
  assert cli.guard(lambda argv: 3)(["tool"]) == 3


def test_guard_ends_a_run_stopped_by_a_second_ctrl_c_as_interrupted_whatever_error_it_became(capsys):
  """A second Ctrl-C raises KeyboardInterrupt in the signal handler; raised while TensorFlow traces, CPython has
  turned it into a SystemError (tests/test_preemption.py's command-line test once exited 1 with that traceback).
  The command still ends as interrupted (cli.run: one line, death by SIGINT), and the next command starts afresh."""
  if threading.current_thread() is not threading.main_thread():
    pytest.skip("signal handlers are installed by the main thread only")

  def interrupted_while_tracing(argv):
    with preemption.StopRequest():
      signal.raise_signal(signal.SIGINT)
      try:
        signal.raise_signal(signal.SIGINT)
      except KeyboardInterrupt:
        # pylint: disable-next=raise-missing-from
        raise SystemError("Objects/listobject.c:338: bad argument to internal function")

  def bad_input(argv):
    raise errors.UserError("bad --data_dir")

  with pytest.raises(KeyboardInterrupt):
    cli.guard(interrupted_while_tracing)(["tool"])
  assert preemption.interrupted() and "error:" not in capsys.readouterr().err
  assert cli.guard(bad_input)(["tool"]) == errors.EXIT_USAGE and not preemption.interrupted()
  assert _one_line_error(capsys.readouterr().err) == "error: bad --data_dir"


def test_tool_flags_and_config_flags_are_defined_together(monkeypatch):
  fv = flags.FlagValues()
  monkeypatch.setattr(cli, "FLAGS", fv)
  cli.define_config_flags()
  cli.define_config_flags()  # Idempotent: a tool may be defined after the trainer's flags.
  flags.DEFINE_integer("answer", 0, "A tool's own flag.", flag_values=fv)
  cli.parse_flags(["tool", "--workdir=/tmp/x", "--answer=3"])
  assert (fv.answer, cli.config_from_flags().workdir, cli.verbose()) == (3, "/tmp/x", False)


@pytest.mark.parametrize("help_flag", ["--help", "--helpshort", "--helpfull", "-?"])
def test_help_exits_0_and_a_tool_s_help_lists_the_config_flags_it_reads(monkeypatch, capsys, help_flag):
  """absl's help flags exit 1, which gan_dist's exit codes call a bug: here 0. A tool's --help (absl prints
  main_module_help, the key flags of the module sys.argv[0] names) shows, beside its own flags, those of the Config
  table it reads (sample: --workdir, --seed, --truncation) and --step/--best; not the trainer's."""
  from gan_dist import sample  # pylint: disable=g-import-not-at-top  (a CLI module: the test of cli needs one)
  fv = flags.FlagValues()
  monkeypatch.setattr(sys, "argv", ["/path/to/sample.py"])
  for help_flag_object in (app.HelpFlag(), app.HelpshortFlag(), app.HelpfullFlag()):  # What app.run defines.
    flags.DEFINE_flag(help_flag_object, flag_values=fv)
  cli.define_config_flags(fv)
  sample.define_flags(fv)
  # The tool's own flags are key flags of its module anyway (run as __main__, the module sys.argv[0] names).
  shown = fv.main_module_help()
  listed = {name for name in ("workdir", "seed", "truncation", "step", "best", "batch_size", "data_dir")
            if f"--{name}:" in shown or f"--[no]{name}:" in shown}
  assert listed == {"workdir", "seed", "truncation", "step", "best"}
  # In a tool, --workdir and --seed say what they mean there, not what they mean to the trainer.
  assert "The directory a run trained in" in shown and "Seed of the images' noise" in shown
  assert "resumed from it" not in shown and "the initial weights" not in shown
  with pytest.raises(SystemExit) as exited:
    cli.parse_flags(["sample", help_flag], fv)
  assert exited.value.code == errors.EXIT_OK and "error:" not in capsys.readouterr().err
  with pytest.raises(SystemExit) as exited:  # Other exits of absl's parsing keep their code.
    cli.parse_flags(["sample", "--num=0"], fv)
  assert exited.value.code == errors.EXIT_USAGE


_TOOLS = ("sample", "export", "evaluate", "plots", "pack", "serve.__main__", "eval.classifier", "eval.class_accuracy")


def _tool_flags(monkeypatch, tool):
  """A FlagValues with the Config's flags and `tool`'s, as `python -m gan_dist.<tool>` defines them."""
  module = importlib.import_module(f"gan_dist.{tool}")
  monkeypatch.setattr(sys, "argv", [module.__file__])  # absl's key flags of a tool are those of the module run.
  fv = flags.FlagValues()
  cli.define_config_flags(fv)
  module.define_flags(fv)
  return fv


def test_a_tool_refuses_the_training_flags_it_does_not_read_unless_a_flagfile_sets_them(monkeypatch, capsys, tmp_path):
  """`sample --num_samples=100` (a training flag: the grid of a run) used to sample the default 64 images: a flag
  that would do nothing is refused in one line, with the tool's own flag it resembles. A flagfile may carry any flag
  (one training config serves every tool), and the trainer, which reads the whole Config, refuses none."""
  fv = _tool_flags(monkeypatch, "sample")
  for argv, named in ((["--num_samples=100"], "--num_samples"), (["--workdir=W", "--nodeterministic"],
                                                                 "--deterministic"),
                      (["--batch_size", "64"], "--batch_size")):
    with pytest.raises(SystemExit) as exited:
      cli.parse_flags(["sample", *argv], fv)
    assert exited.value.code == errors.EXIT_USAGE
    line = _one_line_error(capsys.readouterr().err)
    assert line.startswith(f"error: {named} is a training flag this command does not read"), line
    assert "(of the training flags it reads --seed, --truncation, --workdir; --help lists its flags)" in line, line
    assert ("did you mean --num?" in line) == (named == "--num_samples"), line
  flagfile = tmp_path / "run.cfg"
  flagfile.write_text("--arch=dcgan\n--batch_size=64\n--nodeterministic\n")
  cli.parse_flags(["sample", f"--flagfile={flagfile}", "--workdir=W", "--seed=3", "--truncation=0.5", "--num=5"], fv)
  assert (fv.workdir, fv.seed, fv.truncation, fv.num, fv.batch_size) == ("W", 3, 0.5, 5, 64)
  trainer = flags.FlagValues()
  config_lib.define_flags(trainer)
  cli.parse_flags(["main", "--batch_size=64", "--nodeterministic", "--truncation=0.5"], trainer)
  assert (trainer.batch_size, trainer.deterministic) == (64, False)


def test_a_path_on_a_filesystem_tensorflow_cannot_reach_is_refused_when_the_command_reads_it(monkeypatch, capsys,
                                                                                              tmp_path):
  """`--workdir=s3://...` (no s3 filesystem in TensorFlow 2.21) or a gs:// bucket offline was a traceback, and the
  trainer's only after reading its data: one line and exit 2 at parsing, for the trainer and a tool alike. A
  flagfile's path that the tool does not read is not probed; ram:// is reachable."""
  trainer = flags.FlagValues()
  config_lib.define_flags(trainer)
  sample = _tool_flags(monkeypatch, "sample")
  for fv, argv, named in ((trainer, ["main", "--data_dir=foo://b/data"], "--data_dir=foo://b/data"),
                          (sample, ["sample", "--workdir=foo://b/run"], "--workdir=foo://b/run"),
                          (sample, ["sample", "--workdir=W", "--out=foo://b/x.npz"], "--out=foo://b/x.npz")):
    with pytest.raises(SystemExit) as exited:
      cli.parse_flags(argv, fv)
    assert exited.value.code == errors.EXIT_USAGE
    assert _one_line_error(capsys.readouterr().err) == (f"error: {named} cannot be reached: File system scheme 'foo' "
                                                        f"not implemented (file: '{named.split('=')[1]}')")
  flagfile = tmp_path / "run.cfg"
  flagfile.write_text("--data_dir=foo://b/data\n")
  sample = _tool_flags(monkeypatch, "sample")  # (A FlagValues keeps the values of its earlier parses.)
  cli.parse_flags(["sample", f"--flagfile={flagfile}", "--workdir=ram://w/run"], sample)
  assert (sample.data_dir, sample.workdir) == ("foo://b/data", "ram://w/run")


def test_a_tool_suggests_for_an_unknown_flag_only_the_flags_it_takes(monkeypatch, capsys):
  """absl suggested, for class_accuracy's --num, four flags of which three are training flags it refuses."""
  fv = _tool_flags(monkeypatch, "eval.class_accuracy")
  with pytest.raises(SystemExit) as exited:
    cli.parse_flags(["class_accuracy", "--num=5"], fv)
  assert exited.value.code == errors.EXIT_USAGE
  assert _one_line_error(capsys.readouterr().err) == ("error: Unknown command line flag 'num'; did you mean "
                                                      "--num_per_class? (--helpfull lists every flag)")


@pytest.mark.parametrize("tool", _TOOLS)
def test_every_flag_a_tool_s_usage_or_readme_names_is_one_it_reads(monkeypatch, tool):
  """The commands of each tool's module docstring and of README.md pass the refusal above: every flag they name is
  the tool's own or a training flag it lists as read (show_in_help)."""
  fv = _tool_flags(monkeypatch, tool)
  with pytest.raises(SystemExit):  # What the tool accepts: its own flags and the training flags it reads.
    cli.parse_flags(["tool", "--arch=mlp"], fv)  # (No tool reads --arch: the run's flags.txt says it.)
  command = f"gan_dist.{tool.replace('.__main__', '')}"
  with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")) as f:
    readme = f.read()
  text = importlib.import_module(f"gan_dist.{tool}").__doc__ + readme
  # A command runs from its name to the end of its line or of its `code span`.
  named = {name for usage in re.findall(rf"-m {re.escape(command)}\b([^`\n]*)", text)
           for name in re.findall(r"(?<![\w-])--(\w+)", usage)}
  assert named, command
  for name in named:
    value = 100 if fv[name].value is None else fv[name].value  # (--step, --label, evaluate's --num: None.)
    cli.parse_flags(["tool", f"--{name}={value}"], fv)
