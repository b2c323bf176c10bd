"""`python -m gan_dist.export`: its flags, default paths, and the command itself (the formats: test_exporter.py).

Bad inputs run in this process through what the entry point runs once started (cli.parse_flags, then
cli.guard(export.main)); one test starts the real command."""

import os
import shutil

from absl import flags
import keras
import numpy as np
import pytest
import tensorflow as tf

from gan_dist import cli
from gan_dist import config as config_lib
from gan_dist import export
from gan_dist import exporter
from gan_dist import inference
from gan_dist import sampling
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
                                  ["--workdir=MISSING"], ["--workdir=W", "stray"], ["WORKDIR", "--best"],
                                  ["WORKDIR", "--out=WORKDIR"], ["WORKDIR", "--format=keras", "--out=WORKDIR"]])
def test_bad_input_is_one_line_and_exit_2(argv, tmp_path, tmp_path_factory, monkeypatch, capsys):
  """Among them an --out that would mix the export into other files (the workdir itself), or that is a directory
  where the Keras file should go, and --best of a run that kept none."""
  workdir = workdirs.trained("conditional", tmp_path_factory)
  argv = [f"--workdir={workdir}" if a == "WORKDIR" else a.replace("MISSING", str(tmp_path / "missing"))
          .replace("=WORKDIR", f"={workdir}") for a in argv]
  monkeypatch.chdir(tmp_path)
  before = helpers.snapshot(workdir)
  code, err = helpers.tool_command(export, argv, monkeypatch, capsys)
  lines = [l for l in err.splitlines() if l.startswith("error: ")]
  assert code == 2 and len(lines) == 1 and "Traceback" not in err, (argv, err[-2000:])
  assert os.listdir(tmp_path) == [] and helpers.snapshot(workdir) == before  # Nothing written.


def test_best_is_exported_and_an_earlier_export_is_replaced(tmp_path, tmp_path_factory, monkeypatch, capsys):
  workdir = str(tmp_path / "workdir")
  shutil.copytree(workdirs.trained("unconditional", tmp_path_factory), workdir)
  helpers.keep_as_best(workdir, 1, helpers.scale_generators(0.5))
  out = str(tmp_path / "export")
  monkeypatch.setattr(cli, "FLAGS", _flags(f"--workdir={workdir}", f"--out={out}"))
  export.main([])
  latest = tf.saved_model.load(out).signatures["serving_default"](noise=tf.ones([2, workdirs.LATENT_DIM]))["images"]
  monkeypatch.setattr(cli, "FLAGS", _flags(f"--workdir={workdir}", f"--out={out}", "--best"))
  export.main([])  # Over the export of the latest checkpoint.
  best = tf.saved_model.load(out).signatures["serving_default"](noise=tf.ones([2, workdirs.LATENT_DIM]))["images"]
  assert np.abs(best.numpy().astype(int) - latest.numpy().astype(int)).mean() > 1
  run = inference.load(workdir, best=True)
  expected = sampling.to_uint8(run.gan.generate(tf.ones([2, workdirs.LATENT_DIM]), tf.zeros([2], tf.int32),
                                                generator=inference.float32_copy(run.generator)))
  np.testing.assert_allclose(best.numpy().astype(int), expected.numpy().astype(int), atol=1)
  assert exporter.read_facts(out)["step"] == 1

  # An export interrupted while it writes the SavedModel: the directory keeps no facts (of the model it replaced),
  # so nothing takes it for an export; exporting again is allowed there, and completes it.
  def interrupted(self, *args, **kwargs):
    del self, args, kwargs
    raise KeyboardInterrupt

  # (ExportArchive() makes an archive of the backend's own class.)
  monkeypatch.setattr(type(keras.export.ExportArchive()), "write_out", interrupted)
  monkeypatch.setattr(cli, "FLAGS", _flags(f"--workdir={workdir}", f"--out={out}"))
  with pytest.raises(KeyboardInterrupt):
    export.main([])
  with pytest.raises(FileNotFoundError, match="is .* a SavedModel written by `python -m gan_dist.export`"):
    exporter.read_facts(out)
  monkeypatch.undo()
  monkeypatch.setattr(cli, "FLAGS", _flags(f"--workdir={workdir}", f"--out={out}"))
  export.main([])  # The latest checkpoint's generator again (not the best's), with its facts.
  again = tf.saved_model.load(out).signatures["serving_default"](noise=tf.ones([2, workdirs.LATENT_DIM]))["images"]
  np.testing.assert_array_equal(again.numpy(), latest.numpy())
  assert exporter.read_facts(out)["step"] == 1


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
