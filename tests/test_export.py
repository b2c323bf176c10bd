"""`python -m gan_dist.export`: its flags, default paths, and the command itself (the formats: test_exporter.py)."""

import os
import subprocess
import sys

from absl import flags
import keras
import pytest

from gan_dist import cli
from gan_dist import config as config_lib
from gan_dist import export
from gan_dist import exporter
from tests.serve import workdirs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


@pytest.mark.slow
def test_command_line_export_and_one_line_errors(tmp_path, tmp_path_factory):
  workdir = workdirs.trained("conditional", tmp_path_factory)
  proc = subprocess.run([sys.executable, "-m", "gan_dist.export", f"--workdir={workdir}", f"--out={tmp_path / 'e'}"],
                        cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert exporter.read_facts(str(tmp_path / "e"))["arch"] == "cgan_mlp"
  assert (tmp_path / "e" / "saved_model.pb").exists()
  for args in (["--workdir=W", "--format=onnx"], [f"--workdir={workdir}", "--format=keras", "--out=G.h5"],
               [f"--workdir={tmp_path / 'missing'}"]):
    proc = subprocess.run([sys.executable, "-m", "gan_dist.export", *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=180)
    lines = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, (args, proc.stderr[-2000:])
  assert not os.path.exists(tmp_path / "G.h5")
