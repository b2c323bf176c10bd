"""`python -m gan_dist.eval.classifier`: trains and writes the feature network where evaluation then finds it."""

import os
import subprocess
import sys

from absl import flags
import pytest

from gan_dist import cli
from gan_dist import data
from gan_dist import errors
from gan_dist.eval import classifier
from gan_dist.eval import features
from tests import helpers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _flags(*argv) -> flags.FlagValues:
  """Flag values as the CLI parses `argv`: the Config's flags and the tool's own."""
  fv = flags.FlagValues()
  cli.define_config_flags(fv)
  classifier.define_flags(fv)
  fv(["classifier", *argv])
  return fv


def test_image_shape_from_the_flag_or_the_data(tmp_path):
  source = data.open_source(helpers.config_values(data_dir=helpers.make_idx_dir(str(tmp_path / "idx"), num=8)))
  assert classifier.parse_image_shape("", source) == (28, 28, 1)
  assert classifier.parse_image_shape("64,64,3", source) == (64, 64, 3)
  for bad in ("64,64", "a,b,c", "0,28,1", "28x28x1"):
    with pytest.raises(errors.UserError, match="must be H,W,C"):
      classifier.parse_image_shape(bad, source)
  folder = helpers.make_image_folder(str(tmp_path / "images"), num=6, bad=())
  with pytest.raises(errors.UserError, match="no single image shape; pass --image_shape"):
    classifier.parse_image_shape("", data.open_source(helpers.config_values(dataset="folder",
                                                                            data_dir=folder["root"])))


def test_main_writes_the_network_evaluation_then_loads(tmp_path, capsys, monkeypatch):
  idx = helpers.make_idx_dir(str(tmp_path / "idx"), num=64)
  cache = str(tmp_path / "cache")
  assert classifier.main([], _flags(f"--data_dir={idx}", f"--eval_cache_dir={cache}")) == errors.EXIT_OK
  lines = capsys.readouterr().out.splitlines()
  checksum = next(line.split(": ")[1] for line in lines if line.startswith("checksum: "))
  written = next(line.split(": ")[1] for line in lines if line.startswith("written to: "))
  assert any(line.startswith("test accuracy: ") for line in lines)
  cfg = helpers.config_values(data_dir=idx, eval_cache_dir=cache)
  monkeypatch.setattr(features, "train", lambda *a, **k: pytest.fail("trained although the CLI wrote it"))
  net = features.load_or_train(cfg, (28, 28, 1))
  assert net.checksum == checksum and written == features.net_dir(cfg, net.key)


def test_main_writes_to_out_at_the_shape_asked(tmp_path, capsys):
  idx = helpers.make_idx_dir(str(tmp_path / "idx"), num=32)
  out = str(tmp_path / "net")
  classifier.main([], _flags(f"--data_dir={idx}", f"--out={out}/", "--image_shape=32,32,3", "--steps=2"))
  printed = capsys.readouterr().out
  assert f"written to: {out}" in printed and "view-match accuracy: " in printed  # Colour: contrastive.
  net = features.load(out)
  assert net.image_shape == (32, 32, 3) and "32x32x3" in net.key and net.key.endswith("-contrastive-v1-steps2")


def test_an_out_or_cache_that_cannot_be_written_is_refused_before_training(tmp_path, monkeypatch):
  idx = helpers.make_idx_dir(str(tmp_path / "idx"), num=32)
  (tmp_path / "a_file").write_text("mine")
  monkeypatch.setattr(features, "train_net", lambda *a, **k: pytest.fail("trained although its output is refused"))
  for flag, message in ((f"--out={tmp_path}/a_file", f"--out={tmp_path}/a_file is a file, not a directory"),
                        (f"--eval_cache_dir={tmp_path}/a_file/cache",
                         f"--eval_cache_dir={tmp_path}/a_file/cache: {tmp_path}/a_file is a file, not a directory")):
    with pytest.raises(errors.UserError, match=f"^{message}$"):
      classifier.main([], _flags(f"--data_dir={idx}", flag))
  assert (tmp_path / "a_file").read_text() == "mine"


def test_steps_are_refused_for_the_supervised_procedure_before_training(tmp_path, monkeypatch):
  """--steps sets the contrastive procedure's length: on labelled greyscale data (the supervised procedure) it
  would change nothing, so it is refused rather than ignored."""
  idx = helpers.make_idx_dir(str(tmp_path / "idx"), num=32)
  monkeypatch.setattr(features, "train_net", lambda *a, **k: pytest.fail("trained although --steps is refused"))
  with pytest.raises(errors.UserError, match=r"^--steps=30 sets the contrastive procedure's length; .* \(greyscale, "
                                             r"labelled\) trains the supervised one, whose length is fixed: drop "
                                             r"--steps$"):
    classifier.main([], _flags(f"--data_dir={idx}", "--steps=30", f"--eval_cache_dir={tmp_path / 'cache'}"))
  assert not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_the_command_line_trains_and_fails_in_one_line(tmp_path):
  idx = helpers.make_idx_dir(str(tmp_path / "idx"), num=32)
  ok = subprocess.run([sys.executable, "-m", "gan_dist.eval.classifier", f"--data_dir={idx}",
                       f"--out={tmp_path / 'net'}"], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert ok.returncode == 0, ok.stderr[-3000:]
  assert "checksum: " in ok.stdout and features.load(str(tmp_path / "net")) is not None
  bad = subprocess.run([sys.executable, "-m", "gan_dist.eval.classifier", f"--data_dir={idx}", "--image_shape=28"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
  assert bad.returncode == errors.EXIT_USAGE, bad.stderr[-3000:]
  assert bad.stderr.strip().splitlines()[-1] == "error: --image_shape='28' must be H,W,C, e.g. --image_shape=28,28,1"
