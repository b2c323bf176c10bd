"""`python -m gan_dist.export`: its flags, default paths, and the command itself (the formats: test_exporter.py).

Bad inputs run in this process through what the entry point runs once started (cli.parse_flags, then
cli.guard(export.main)); one test starts the real command."""

import os

from absl import flags
import keras
import pytest

from gan_dist import cli
from gan_dist import config as config_lib
from gan_dist import export
from gan_dist import exporter
from tests import helpers
from tests import subprocs
from tests.serve import workdirs


def _flags(*argv) -> flags.FlagValues:
  fv = flags.FlagValues()
  config_lib.define_flags(fv)
  export.define_flags(fv)
  fv(["export", *argv])
  return fv


def test_flags_and_default_paths():
  fv = _flags("--workdir=W/")
  assert (fv.format, fv.out, fv.step) == ("saved_model", "", None)
  assert export.output_path("W/", "saved_model") == "W/export"
  assert export.output_path("W", "keras") == "W/generator.keras"
  assert export.output_path("W", "keras", "G.keras") == "G.keras"
  with pytest.raises(flags.IllegalFlagValueError):
    _flags("--format=onnx")


def test_main_exports_to_the_default_path(tmp_path, tmp_path_factory, monkeypatch, capsys):
  workdir = workdirs.trained("unconditional", tmp_path_factory)
  monkeypatch.setattr(cli, "FLAGS", _flags(f"--workdir={workdir}", "--format=keras"))
  export.main([])
  assert f"to {workdir}/generator.keras" in capsys.readouterr().out
  model = keras.saving.load_model(f"{workdir}/generator.keras")
  assert model.output_shape == (None, 28, 28, 1)
  monkeypatch.setattr(cli, "FLAGS", _flags(f"--workdir={workdir}", f"--out={tmp_path / 'sm'}", "--step=1"))
  export.main([])
  assert exporter.read_facts(str(tmp_path / "sm"))["step"] == 1


@pytest.mark.parametrize("argv", [["--workdir=W", "--format=onnx"], ["WORKDIR", "--format=keras", "--out=G.h5"],
                                  ["--workdir=MISSING"], ["--workdir=W", "stray"]])
def test_bad_input_is_one_line_and_exit_2(argv, tmp_path, tmp_path_factory, monkeypatch, capsys):
  workdir = workdirs.trained("conditional", tmp_path_factory)
  argv = [f"--workdir={workdir}" if a == "WORKDIR" else a.replace("MISSING", str(tmp_path / "missing"))
          for a in argv]
  monkeypatch.chdir(tmp_path)
  code, err = helpers.tool_command(export, argv, monkeypatch, capsys)
  lines = [l for l in err.splitlines() if l.startswith("error: ")]
  assert code == 2 and len(lines) == 1 and "Traceback" not in err, (argv, err[-2000:])
  assert os.listdir(tmp_path) == []  # Nothing written (no G.h5, no half export).


@pytest.mark.slow
def test_command_line_exports(tmp_path, tmp_path_factory):
  """The real entry point (its bad inputs: test_bad_input_is_one_line_and_exit_2, in this process)."""
  workdir = workdirs.trained("conditional", tmp_path_factory)
  rc, out = subprocs.run([subprocs.PYTHON, "-m", "gan_dist.export", f"--workdir={workdir}", f"--out={tmp_path / 'e'}"],
                         tmp_path / "export.log", subprocs.env(tmp_path), timeout=300)
  assert rc == 0, subprocs.tail(out)
  assert f"to {tmp_path / 'e'}" in out
  assert exporter.read_facts(str(tmp_path / "e"))["arch"] == "cgan_mlp"
  assert (tmp_path / "e" / "saved_model.pb").exists()
