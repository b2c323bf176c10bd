"""`python -m gan_dist.eval.class_accuracy`: per-class label accuracy of a conditional workdir."""

import shutil

from absl import flags
import numpy as np
import pytest

from gan_dist import cli
from gan_dist import errors
from gan_dist import models
from gan_dist import sampling
from gan_dist import workdir as workdir_lib
from gan_dist.eval import class_accuracy
from gan_dist.eval import features
from tests import helpers
from tests.eval import tiny_run
from tests.serve import workdirs


def _flags(*argv) -> flags.FlagValues:
  fv = flags.FlagValues()
  cli.define_config_flags(fv)
  class_accuracy.define_flags(fv)
  fv(["class_accuracy", *argv])
  return fv


def test_per_class_accuracy_counts_what_the_network_calls_each_requested_class():
  gan = models.build(helpers.config_values(arch="cgan_mlp"), 10)
  generate_fn = sampling.make_generate_fn(gan.generator, gan)
  model = features.build((28, 28, 1), 10)  # Untrained: only the bookkeeping is under test.
  accuracy = class_accuracy.per_class_accuracy(model, generate_fn, gan, num_per_class=3, seed=0, truncation=0.0)
  assert accuracy.shape == (10,) and ((0.0 <= accuracy) & (accuracy <= 1.0)).all()
  assert np.allclose(accuracy * 3, np.round(accuracy * 3))  # Fractions of 3 samples.
  # Recomputed by hand: sample k * 3 + j asks for class k.
  noise = sampling.noise(30, gan.latent_dim, 0, truncation=0.0)
  labels = np.repeat(np.arange(10, dtype=np.int32), 3)
  predicted = np.argmax(model(sampling.generate(generate_fn, noise, labels), training=False)[1], -1)
  np.testing.assert_allclose(accuracy, (predicted == labels).reshape(10, 3).mean(1))
  # With a truncation: the same count on truncated noise.
  truncated = class_accuracy.per_class_accuracy(model, generate_fn, gan, num_per_class=3, seed=0, truncation=0.5)
  predicted = np.argmax(model(sampling.generate(generate_fn, sampling.truncate(noise, 0.5), labels),
                              training=False)[1], -1)
  np.testing.assert_allclose(truncated, (predicted == labels).reshape(10, 3).mean(1))


def test_images_with_nan_pixels_are_assigned_no_class():
  """The feature network's fused CPU kernels give every all-NaN image the same finite logits, so one class scored
  1.0 for a generator of NaN images; such an image is assigned no class: every class scores 0."""
  gan = models.build(helpers.config_values(arch="cgan_mlp"), 10)
  gan.generator.set_weights([np.full_like(w, np.nan) for w in gan.generator.get_weights()])
  generate_fn = sampling.make_generate_fn(gan.generator, gan)
  model = features.build((28, 28, 1), 10)
  accuracy = class_accuracy.per_class_accuracy(model, generate_fn, gan, num_per_class=2, seed=0, truncation=0.0)
  np.testing.assert_array_equal(accuracy, np.zeros(10))


@pytest.mark.slow
def test_main_prints_every_class_of_the_requested_step(tmp_path_factory, one_device, capsys):
  cfg = tiny_run.shared_run(tmp_path_factory, one_device)
  argv = (f"--workdir={cfg.workdir}", "--step=2", "--num_per_class=2")
  assert class_accuracy.main([], _flags(*argv)) == errors.EXIT_OK
  out = capsys.readouterr().out
  assert "generator, step 2 (2 samples per class)" in out
  assert all(f"  class {k}: " in out for k in range(10)) and "  mean: " in out
  assert class_accuracy.main([], _flags(*argv, "--truncation=0.5")) == errors.EXIT_OK
  assert "generator, step 2 (2 samples per class, noise truncated to +-0.5)" in capsys.readouterr().out
  named = str(tmp_path_factory.mktemp("named") / "run")  # The run as class folders would have left it.
  shutil.copytree(cfg.workdir, named)
  workdir_lib.write_class_names(named, [f"digit {k}" for k in range(9)])
  assert class_accuracy.main([], _flags(*argv[1:], f"--workdir={named}")) == errors.EXIT_OK
  out = capsys.readouterr().out
  assert all(f"  class {k} (digit {k}): " in out for k in range(9)) and "  class 9: " in out


def test_an_unconditional_workdir_is_refused(tmp_path_factory):
  # The shared one-step mlp workdir (flags.txt and a checkpoint): the refusal is about the model, before any write.
  workdir = workdirs.trained("unconditional", tmp_path_factory)
  before = helpers.snapshot(workdir)
  with pytest.raises(errors.UserError, match="--arch=mlp is not conditional"):
    class_accuracy.main([], _flags(f"--workdir={workdir}"))
  assert helpers.snapshot(workdir) == before
