"""The Python API: README's example, run as written (shorter, in a tmp workdir), and its errors."""

import os
import re

import numpy as np
import pytest

from gan_dist import api
from gan_dist import errors
from tests import conftest


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
