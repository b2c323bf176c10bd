"""launch/flags.sh, the launchers' reading of --workdir, against absl itself: for each command line (flagfiles,
nested ones, comments, overrides in either order, every spelling of a flag), `flag_value workdir ARGS...` prints
what absl parses. One bash process per case, no TensorFlow; slow like every test that starts a process.
"""

import os
import subprocess

import pytest
from absl import flags

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLAGS_SH = os.path.join(REPO, "launch", "flags.sh")
TIMEOUT_S = 30  # A bash function over a few short files; anything slower is a hang.


def _flag_value(args, cwd, home):
  """(exit status, stdout, stderr) of `flag_value workdir ARGS...` run in `cwd`."""
  result = subprocess.run(["bash", "-c", 'source "$0"; flag_value workdir "$@"', FLAGS_SH, *args], cwd=cwd,
                          env=dict(os.environ, HOME=str(home)), capture_output=True, text=True, timeout=TIMEOUT_S)
  return result.returncode, result.stdout, result.stderr


def _absl_workdir(args, cwd, home, monkeypatch):
  """--workdir as absl parses `args` (the other flags of the cases defined too), in `cwd`."""
  fv = flags.FlagValues()
  flags.DEFINE_string("workdir", "", "", flag_values=fv)
  flags.DEFINE_integer("train_steps", 0, "", flag_values=fv)
  flags.DEFINE_boolean("fast", False, "", flag_values=fv)
  monkeypatch.chdir(cwd)
  monkeypatch.setenv("HOME", str(home))
  fv(["prog", *args])
  return fv.workdir


@pytest.fixture
def flagfiles(tmp_path):
  """Flagfiles in tmp_path, named by what they test; the runs use tmp_path as their current directory."""
  files = {
      "plain.cfg": "--train_steps=5\n--workdir=/from/plain\n--fast\n",
      "commented.cfg": ("# --workdir=/not/a/comment\n// --workdir=/nor/this\n\n   \n"
                        "   --workdir=/from/commented   \n--train_steps=3"),  # No newline at the end.
      "crlf.cfg": "--workdir=/from/crlf\r\n--train_steps=2\r\n",
      "nests_plain_last.cfg": "--workdir=/from/outer\n--flagfile=plain.cfg\n",
      "nests_plain_first.cfg": "--flagfile=plain.cfg\n--workdir=/from/outer_after\n",
      "nests_twice.cfg": "--flagfile=nests_plain_last.cfg\n",
      "circular.cfg": "--workdir=/from/circular\n--flagfile=circular.cfg\n",
      "split.cfg": "--workdir\n/from/split\n",
      "home.cfg": "--workdir=/from/home\n",
  }
  for name, text in files.items():
    (tmp_path / name).write_bytes(text.encode())
  (tmp_path / "home").mkdir()
  (tmp_path / "home" / "home.cfg").write_text("--workdir=/from/tilde\n")
  return tmp_path


@pytest.mark.parametrize("args,expected", [
    (["--train_steps=1"], ""),
    (["--workdir=/a", "--workdir", "/b"], "/b"),
    (["-workdir=/single_dash"], "/single_dash"),
    (["-workdir", "/single_dash_value", "--fast"], "/single_dash_value"),
    (["--flagfile=plain.cfg"], "/from/plain"),
    (["--flagfile", "plain.cfg"], "/from/plain"),
    (["-flagfile=plain.cfg"], "/from/plain"),
    (["--flagfile=plain.cfg", "--workdir=/cli"], "/cli"),  # A later flag overrides the flagfile...
    (["--workdir=/cli", "--flagfile=plain.cfg"], "/from/plain"),  # ...a later flagfile overrides the flag.
    (["--flagfile=commented.cfg"], "/from/commented"),
    (["--flagfile=crlf.cfg"], "/from/crlf"),
    (["--flagfile=nests_plain_last.cfg"], "/from/plain"),
    (["--flagfile=nests_plain_first.cfg"], "/from/outer_after"),
    (["--flagfile=nests_twice.cfg", "--train_steps=4"], "/from/plain"),
    (["--flagfile=circular.cfg"], "/from/circular"),
    (["--flagfile=split.cfg"], "/from/split"),
    (["--flagfile=~/home.cfg"], "/from/tilde"),
    (["--flagfile=", "--workdir=/after_empty"], "/after_empty"),
    (["--workdir=/before", "--", "--workdir=/after_dashes"], "/before"),
])
def test_flag_value_is_what_absl_parses(flagfiles, monkeypatch, args, expected):
  home = flagfiles / "home"
  rc, out, err = _flag_value(args, flagfiles, home)
  assert rc == 0, err
  assert out == expected == _absl_workdir(args, flagfiles, home, monkeypatch)


@pytest.mark.parametrize("args,message", [
    (["--flagfile=missing.cfg"], "cannot read the flagfile 'missing.cfg'"),
    (["--flagfile=nests_missing.cfg"], "cannot read the flagfile 'missing.cfg'"),
    (["--flagfile=."], "cannot read the flagfile '.'"),
    (["--workdir=/a", "--flagfile"], "--flagfile with no file name"),
])
def test_flag_value_refuses_what_absl_refuses(flagfiles, monkeypatch, args, message):
  (flagfiles / "nests_missing.cfg").write_text("--flagfile=missing.cfg\n")
  rc, out, err = _flag_value(args, flagfiles, flagfiles / "home")
  assert rc == 2 and out == "" and message in err, (rc, out, err)
  with pytest.raises(flags.Error):
    _absl_workdir(args, flagfiles, flagfiles / "home", monkeypatch)
