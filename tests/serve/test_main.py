"""serve/__main__.py: `python -m gan_dist.serve`'s flags, and its refusals before and while starting the server."""

import importlib
import socket

from absl import flags
import pytest

from gan_dist import cli
from gan_dist import config as config_lib
from gan_dist import errors
from tests import helpers
from tests import subprocs
from tests.serve import workdirs

serve_main = importlib.import_module("gan_dist.serve.__main__")


def _flags(*argv) -> flags.FlagValues:
  fv = flags.FlagValues()
  config_lib.define_flags(fv)
  serve_main.define_flags(fv)
  fv(["serve", *argv])
  return fv


def test_flags_and_their_bounds():
  fv = _flags()
  assert (fv.saved_model, fv.step, fv.host, fv.port, fv.threads) == ("", None, "127.0.0.1", 8000, 4)
  for bad in ("--port=65536", "--port=-1", "--threads=0"):
    with pytest.raises(flags.IllegalFlagValueError):
      _flags(bad)


@pytest.mark.parametrize("argv, message", [
    ((), "nothing to serve"),
    (("--workdir=W", "--saved_model=S"), "both given"),
    (("--saved_model=S", "--step=2"), "a --saved_model export has one step"),
    (("--saved_model=S", "--best"), "--best picks a checkpoint of a workdir"),
    (("--workdir=W", "--truncation=nan"), r"^--truncation=nan: the demo takes 0 \(none\) or a number up to 4$"),
    (("--workdir=W", "--truncation=5"), r"^--truncation=5.0: the demo takes 0 \(none\) or a number up to 4$"),
])
def test_refused_before_anything_is_loaded(monkeypatch, argv, message):
  monkeypatch.setattr(cli, "FLAGS", _flags(*argv))
  with pytest.raises(errors.UserError, match=message):
    serve_main.main([])


def test_missing_saved_model_and_missing_extra(monkeypatch, tmp_path):
  monkeypatch.setattr(cli, "FLAGS", _flags(f"--saved_model={tmp_path}"))
  with pytest.raises(FileNotFoundError, match="saved_model.pb not found"):
    serve_main.main([])
  monkeypatch.setattr(serve_main, "_MISSING", ImportError("No module named 'waitress'"))
  with pytest.raises(errors.UserError, match=r"needs the serve extra .*pip install -e '.\[serve\]'"):
    serve_main.main([])


def test_a_port_in_use_is_a_user_error(monkeypatch, tmp_path_factory):
  workdir = workdirs.trained("unconditional", tmp_path_factory)
  with socket.socket() as taken:
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    monkeypatch.setattr(cli, "FLAGS", _flags(f"--workdir={workdir}", f"--port={port}"))
    with pytest.raises(errors.UserError, match=f"cannot listen on 127.0.0.1:{port}.*--port=0"):
      serve_main.main([])


@pytest.mark.parametrize("argv", [[], ["--port=70000"], ["--saved_model=TMP"], ["stray"]])
def test_command_line_errors_are_one_line_and_exit_2(argv, tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(tmp_path)
  code, err = helpers.tool_command(serve_main, [a.replace("TMP", str(tmp_path)) for a in argv], monkeypatch, capsys)
  lines = [l for l in err.splitlines() if l.startswith("error: ")]
  assert code == 2 and len(lines) == 1 and "Traceback" not in err, (argv, err[-2000:])


@pytest.mark.slow
def test_real_command_line_refuses_in_one_line_and_exit_2(tmp_path):
  """The real entry point once (it serves in tests/serve/test_browser.py, skipped without a browser)."""
  rc, out = subprocs.run([subprocs.PYTHON, "-m", "gan_dist.serve", f"--saved_model={tmp_path}"],
                         tmp_path / "serve.log", subprocs.env(tmp_path), timeout=180)
  assert rc == 2 and len(subprocs.error_lines(out)) == 1 and "Traceback" not in out, out[-2000:]
  assert "saved_model.pb not found" in subprocs.last_error(out)
