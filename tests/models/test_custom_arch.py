"""--arch=package.module: a user's own architecture (examples/custom_arch), trained on 2 replicas, resumed and
sampled; modules that cannot serve are refused in one line."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

from gan_dist import errors
from gan_dist import exporter
from gan_dist import inference
from gan_dist import models
from gan_dist import preflight
from gan_dist import train
from tests import conftest
from tests import helpers

EXAMPLE = os.path.join(conftest.REPO, "examples", "custom_arch")


@pytest.fixture
def example_on_path(monkeypatch):
  monkeypatch.syspath_prepend(EXAMPLE)


@pytest.mark.slow
def test_example_trains_on_two_replicas_resumes_exactly_samples_and_exports(tmp_path, example_on_path, mirrored2):
  del example_on_path
  idx = helpers.make_idx_dir(str(tmp_path / "idx"), num=64)
  # Two steps of 2 examples per replica, a checkpoint after each: a resume from step 1 still has a step to take,
  # and the wide convolutions run as few examples as they can.
  base = helpers.config(tmp_path, arch="my_gans.wide_dcgan", data_dir=idx, latent_dim=16, batch_size=4,
                        train_steps=2, steps_per_loop=1, checkpoint_every=1)
  straight = dataclasses.replace(base, workdir=str(tmp_path / "straight"))
  assert train.run(straight, mirrored2)["step"] == 2
  interrupted = dataclasses.replace(base, workdir=str(tmp_path / "interrupted"))
  helpers.interrupted_copy(straight.workdir, interrupted.workdir, 1)
  assert train.run(interrupted, mirrored2)["step"] == 2
  a = helpers.checkpoint_values(os.path.join(straight.workdir, "checkpoints", "ckpt-2"))
  b = helpers.checkpoint_values(os.path.join(interrupted.workdir, "checkpoints", "ckpt-2"))
  assert a.keys() == b.keys() and len(a) > 10
  for name in a:  # Two replicas of one process: the same computation in both runs.
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)
  run = inference.load(straight.workdir)
  images = run.sample(3, seed=0)
  assert images.shape == (3, 28, 28, 1) and np.abs(images).max() <= 1.0
  out = exporter.export(straight.workdir, str(tmp_path / "export"))
  served = tf.saved_model.load(out).signatures["serving_default"]
  assert served(noise=tf.zeros([2, 16]))["images"].dtype == tf.uint8


def _module(tmp_path, monkeypatch, name, text):
  package = tmp_path / f"userpkg_{name}"  # A package per case: Python caches imported packages by name.
  package.mkdir()
  (package / "__init__.py").write_text("")
  (package / "gans.py").write_text(text)
  monkeypatch.syspath_prepend(str(tmp_path))
  return f"userpkg_{name}.gans"


@pytest.mark.parametrize("name, text, message", [
    ("broken", "import no_such_package_here\n", r"the module does not import \(ModuleNotFoundError: No module named "
                                                 r"'no_such_package_here'\)"),
    ("nobuild", "X = 1\n", r"defines no build\(cfg, num_classes\) -> gan_dist.models.Gan"),
    ("wrong", "def build(cfg, num_classes=0):\n  return 42\n", r"build\(cfg, num_classes\) returned int, not a "
                                                              r"gan_dist.models.Gan"),
])
def test_a_module_that_cannot_serve_is_one_line(tmp_path, monkeypatch, name, text, message):
  cfg = helpers.config(tmp_path, arch=_module(tmp_path, monkeypatch, name, text))
  with pytest.raises(errors.UserError, match=message) as caught:
    preflight.check_config(cfg)
    models.build(cfg, 0)
  assert "\n" not in str(caught.value)


def test_a_missing_dotted_module_and_an_unknown_name_are_one_line(tmp_path):
  with pytest.raises(errors.UserError, match=r"--arch=nowhere.gans: the module does not import"):
    preflight.check_config(helpers.config(tmp_path, arch="nowhere.gans"))
  with pytest.raises(errors.UserError,
                     match=r"unknown --arch='nope'; known architectures: .*dcgan.*mlp.*or a dotted module"):
    preflight.check_config(helpers.config(tmp_path, arch="nope"))
