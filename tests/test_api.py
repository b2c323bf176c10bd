"""The Python API: README's example, run as written (shorter, in a tmp workdir), and its errors."""

import os
import re
import shutil

import numpy as np
import pytest

from gan_dist import api
from gan_dist import errors
from gan_dist import sampling
from tests import conftest
from tests import helpers
from tests.serve import workdirs


def _readme_example() -> str:
  with open(os.path.join(conftest.REPO, "README.md")) as f:
    text = f.read()
  return re.search(r"```python\n(from gan_dist import api\n.*?)```", text, re.S).group(1)


@pytest.mark.slow
def test_readme_example_trains_samples_and_loads(tmp_path, monkeypatch):
  monkeypatch.chdir(conftest.REPO)  # The example's paths are relative to the repository.
  code = _readme_example().replace("/tmp/notebook_run", str(tmp_path / "run")).replace("train_steps=300",
                                                                                        "train_steps=4")
  scope = {}
  exec(compile(code, "README.md", "exec"), scope)  # pylint: disable=exec-used
  assert scope["metrics"]["step"] == 4
  images = scope["images"]
  assert images.shape == (16, 28, 28, 1) and images.dtype == np.uint8 and images.std() > 0
  run = scope["run"]
  assert run.step == 4 and run.cfg.arch == "mlp"
  np.testing.assert_array_equal(api.sample(str(tmp_path / "run"), 4), images[:4])  # Image i: same for any num.


def test_config_applies_the_flag_rules():
  assert api.config(flagfile="configs/mlp_gan.cfg", batch_size=16).arch == "mlp"
  with pytest.raises(errors.UserError, match="--batch_size=0: must be >= 1"):
    api.config(batch_size=0)
  with pytest.raises(errors.UserError, match="unknown config fields"):
    api.config(bogus=1)


def test_load_and_sample_open_the_best_checkpoint(tmp_path, tmp_path_factory):
  """The best checkpoint that training with --eval_every keeps, as --best opens it in every tool."""
  workdir = str(tmp_path / "workdir")
  shutil.copytree(workdirs.trained("unconditional", tmp_path_factory), workdir)
  helpers.keep_as_best(workdir, 1, helpers.scale_generators(0.5))
  run = api.load(workdir, best=True)
  assert run.best and run.step == 1
  best = api.sample(workdir, 3, seed=2, best=True)
  np.testing.assert_array_equal(best, sampling.to_uint8(run.sample(3, seed=2)).numpy())
  assert np.abs(best.astype(int) - api.sample(workdir, 3, seed=2).astype(int)).mean() > 1  # Not the latest.
  with pytest.raises(errors.UserError, match="not both"):
    api.sample(workdir, 3, step=1, best=True)
