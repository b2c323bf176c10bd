"""inference.py: a trained workdir opened in one place, the generator it samples with, its float32 copy and facts."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from gan_dist import errors
from gan_dist import inference
from gan_dist import sampling
from gan_dist import workdir as workdir_lib
from gan_dist.models import layers as gan_layers
from tests import helpers
from tests.test_export_custom_arch import PixelNorm  # A user's own layer: no Keras class computes it.
from tests.test_export_custom_arch import Tripled  # A Dense subclass computing something else.
from tests.serve import workdirs


@pytest.fixture(scope="module")
def conditional(tmp_path_factory):
  return inference.load(workdirs.trained("conditional", tmp_path_factory))


def test_load_restores_the_run_and_samples_with_the_ema_generator(conditional):
  run = conditional
  assert run.step == 1 and run.path.endswith("ckpt-1")
  assert run.cfg.arch == "cgan_mlp" and run.cfg.workdir.endswith("workdir")
  assert run.generator is run.state.ema_generator and run.describe() == "EMA generator, step 1"
  images = run.sample(12, seed=3)
  assert images.shape == (12, 28, 28, 1) and images.dtype == np.float32
  assert -1.0 <= images.min() < images.max() <= 1.0 and images.std() > 0.01
  # Image i of seed s is the same whatever the number drawn, and is what the EMA generator makes of its inputs.
  np.testing.assert_array_equal(run.sample(4, seed=3), images[:4])
  z, y = sampling.inputs(12, run.gan.latent_dim, run.gan.num_classes, 3, truncation=0.0)
  # Traced, as sampling traces it: this run is mixed_float16, and on CPUs with float16 kernels (AVX512-FP16) an
  # eager call rounds differently from the graph (fused ops) by up to ~3e-3, far above the 1e-6 asked here.
  direct = tf.function(lambda z, y: run.gan.generate(z, y, generator=run.state.ema_generator))(
      tf.constant(z), tf.constant(y))
  np.testing.assert_allclose(images, np.asarray(direct, np.float32), atol=1e-6)


def test_load_uses_the_restored_ema_statistics_which_are_those_of_the_ema_weights(tmp_path_factory):
  """The checkpoint's EMA BatchNorm statistics were estimated for its weights before the save: loading uses them as
  they are (no re-estimation), and a forced re-estimation gives them back."""
  run = inference.load(workdirs.trained("conditional", tmp_path_factory))
  norms = [layer for layer in run.state.ema_generator.layers if isinstance(layer, keras.layers.BatchNormalization)]
  restored = [(layer.moving_mean.numpy(), layer.moving_variance.numpy()) for layer in norms]
  assert norms and all(mean.any() for mean, _ in restored)
  for layer in norms:
    layer.moving_mean.assign(layer.moving_mean + 1.0)  # A re-estimation would overwrite this.
  assert run.generator is run.state.ema_generator
  np.testing.assert_array_equal(norms[0].moving_mean.numpy(), restored[0][0] + 1.0)
  run.state.prepare_ema(force=True)
  for layer, (mean, variance) in zip(norms, restored):
    np.testing.assert_allclose(layer.moving_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.moving_variance.numpy(), variance, rtol=1e-5, atol=1e-6)


def test_load_with_overrides_and_a_missing_step(conditional, tmp_path_factory):
  workdir = workdirs.trained("conditional", tmp_path_factory)
  assert inference.load(workdir, step=1, eval_num=8).cfg.eval_num == 8
  with pytest.raises(errors.UserError, match=r"no checkpoint at step 7 in .*/checkpoints; there are: 1$"):
    inference.load(workdir, step=7)


def test_facts_describe_the_generator(conditional):
  facts = inference.facts(conditional)
  assert facts == dict(arch="cgan_mlp", dataset="mnist", step=1, ema=True, ema_decay=0.9, image_shape=[28, 28, 1],
                       conditional=True, num_classes=10, latent_dim=workdirs.LATENT_DIM,
                       train_precision="mixed_float16", truncation=0.0, class_names=[""] * 10)  # (IDX: no names)


def test_float32_copy_uses_keras_own_layers_in_float32():
  # A mixed-precision model with a gan_dist layer subclass: the copy computes in float32 with Keras' own classes.
  inputs = keras.Input((4,))
  x = keras.layers.Dense(3, dtype="mixed_float16")(inputs)
  x = gan_layers.Dropout(0.5, dtype="mixed_float16")(x)
  model = keras.Model(inputs, keras.layers.BatchNormalization(synchronized=True, dtype="mixed_float16")(x))
  copy = inference.float32_copy(model)
  assert all(layer.dtype_policy.name == "float32" for layer in copy.layers)
  assert all(type(layer).__module__.startswith("keras.") for layer in copy.layers)
  assert not any(getattr(layer, "synchronized", False) for layer in copy.layers)
  x = np.random.RandomState(0).standard_normal((5, 4)).astype(np.float32)
  assert copy(x).dtype == tf.float32
  np.testing.assert_allclose(copy(x), np.asarray(model(x), np.float32), atol=1e-2)


class _Scale(keras.layers.Layer):
  """A user's layer whose constructor takes an argument that get_config does not return."""

  def __init__(self, factor, **kwargs):
    super().__init__(**kwargs)
    self.factor = factor

  def call(self, inputs):
    return inputs * self.factor


def _user_layers_model(*extra):
  """A mixed-precision model of a custom architecture's layers: a Dense subclass, an own layer, a Python lambda."""
  inputs = keras.Input((4,))
  x = keras.layers.Dense(3, dtype="mixed_float16")(inputs)
  x = Tripled(3, dtype="mixed_float16")(x)
  x = PixelNorm(dtype="mixed_float16")(x)
  x = keras.layers.Lambda(lambda t: t + 1.0, dtype="mixed_float16")(x)
  for layer in extra:
    x = layer(x)
  return keras.Model(inputs, x)


def test_float32_copy_keeps_what_a_custom_architectures_layers_compute():
  """--arch=my_module's layers: a user's class is no Keras class in disguise (as gan_dist's own subclasses are)."""
  model = _user_layers_model()
  copy = inference.float32_copy(model)
  assert all(layer.dtype_policy.name == "float32" for layer in copy.layers)
  assert [type(layer) for layer in copy.layers[2:]] == [Tripled, PixelNorm, keras.layers.Lambda]
  x = np.random.RandomState(0).standard_normal((5, 4)).astype(np.float32)
  assert copy(x).dtype == tf.float32
  np.testing.assert_allclose(copy(x), np.asarray(model(x), np.float32), atol=1e-2)
  assert inference.keras_file_needs(copy) == ["Tripled (tests.test_export_custom_arch)",
                                              "PixelNorm (tests.test_export_custom_arch)",
                                              "a Lambda layer's Python function (load with safe_mode=False)"]
  inputs = keras.Input((4,))
  assert inference.keras_file_needs(keras.Model(inputs, keras.layers.Dense(2)(inputs))) == []


def test_float32_copy_of_a_sequential_generator():
  """A custom architecture may build its generator as keras.Sequential (Keras clones those without call_function)."""
  model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, dtype="mixed_float16"), Tripled(3),
                            keras.layers.Activation("tanh", dtype="float32")])
  copy = inference.float32_copy(model)
  assert all(layer.dtype_policy.name == "float32" for layer in copy.layers)
  x = np.random.RandomState(0).standard_normal((5, 4)).astype(np.float32)
  np.testing.assert_allclose(copy(x), np.asarray(model(x), np.float32), atol=1e-2)


def test_float32_copy_of_a_layer_that_cannot_be_rebuilt_is_a_user_error():
  # (Keras rebuilds a layer from the arguments its constructor was given when they are serialisable: 2.0 is.)
  assert type(inference.float32_copy(_user_layers_model(_Scale(2.0))).layers[-1]) is _Scale
  with pytest.raises(errors.UserError, match=r"layer 'scale' \(_Scale of tests.test_inference\) cannot be copied "
                                             r"for export: .*Please implement `get_config\(\)`.*; give _Scale a "
                                             r"get_config\(\)") as raised:
    inference.float32_copy(_user_layers_model(_Scale(np.array([2.0, 3.0, 4.0]), name="scale")))
  assert "\n" not in str(raised.value)


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory, one_device):
  """An mlp workdir with ckpt-2 and ckpt-4, copied by each test that damages it or adds a best checkpoint."""
  return helpers.trained_mlp(tmp_path_factory.mktemp("two_checkpoints"), one_device)


@pytest.mark.parametrize("damage,suffix", [(helpers.truncate_file, ".data-00000-of-00001"),
                                           (helpers.flip_byte, ".data-00000-of-00001"),
                                           (helpers.overwrite_with_garbage, ".index")],
                         ids=["truncated", "flipped_byte", "bad_index"])
def test_a_damaged_checkpoint_is_refused_naming_the_newest_that_restores(two_checkpoints, tmp_path, damage, suffix):
  """What sample, export, evaluate, plots and serve open: exit 4 and the --step to pass (the trainer's own check
  names --resume_step), never a traceback, and the workdir left as it was."""
  workdir = helpers.copy_run(two_checkpoints, tmp_path).workdir
  ckpt = f"{workdir}/checkpoints"
  damage(f"{ckpt}/ckpt-4{suffix}")
  before = helpers.snapshot(workdir)
  with pytest.raises(errors.CorruptCheckpointError) as raised:
    inference.load(workdir)
  message = str(raised.value)
  assert raised.value.exit_code == errors.EXIT_CORRUPT and "\n" not in message
  assert message.startswith(f"checkpoint {ckpt}/ckpt-4 is damaged (")
  assert message.endswith(f"; the newest checkpoint that restores is {ckpt}/ckpt-2: pass --step=2")
  assert inference.load(workdir, step=2).step == 2  # The step the message names loads.
  with pytest.raises(errors.CorruptCheckpointError, match="ckpt-4 is damaged"):
    inference.load(workdir, step=4)
  assert helpers.snapshot(workdir) == before


def test_a_checkpoint_of_another_model_is_a_user_error_not_damage(two_checkpoints, tmp_path):
  workdir = helpers.copy_run(two_checkpoints, tmp_path).workdir
  with pytest.raises(errors.UserError, match=r"checkpoint .*ckpt-4 does not match the run's models \(flags.txt\)") as e:
    inference.load(workdir, latent_dim=8)  # Another generator input than the checkpoint's.
  assert not isinstance(e.value, errors.CorruptCheckpointError)


def test_best_opens_the_best_checkpoint_and_never_with_a_step(two_checkpoints, tmp_path):
  workdir = helpers.copy_run(two_checkpoints, tmp_path).workdir
  with pytest.raises(errors.UserError, match=r"no best checkpoint in .*/checkpoints/best: train with --eval_every"):
    inference.load(workdir, best=True)
  path = helpers.keep_as_best(workdir, 2, helpers.scale_generators(0.5))
  best = inference.load(workdir, best=True)
  assert (best.path, best.step, best.best) == (path, 2, True)
  assert best.describe() == "generator, step 2, the best checkpoint"
  assert inference.facts(best)["best_checkpoint"] and "best_checkpoint" not in inference.facts(
      inference.load(workdir))
  regular = inference.load(workdir, step=2)
  assert regular.describe() == "generator, step 2"
  for kept, weights in zip(best.gan.generator.get_weights(), regular.gan.generator.get_weights()):
    np.testing.assert_array_equal(kept, weights * 0.5)  # The best checkpoint's own weights.
  with pytest.raises(errors.UserError, match="pass --step or --best, not both"):
    inference.load(workdir, step=2, best=True)


def test_a_relative_data_dir_not_found_from_here_is_named_when_loading(two_checkpoints, tmp_path, monkeypatch,
                                                                         caplog):
  workdir = helpers.copy_run(two_checkpoints, tmp_path).workdir
  cfg = workdir_lib.read_run_config(workdir, data_dir="../data/mnist")
  workdir_lib.write_config(cfg, workdir_lib.flags_path(workdir))
  monkeypatch.chdir(tmp_path)
  with caplog.at_level("WARNING"):
    inference.load(workdir)  # Sampling does not need the data: a warning for the tools that do.
  assert "--data_dir=../data/mnist (flags.txt) is relative to where it was trained" in caplog.text
  caplog.clear()
  with caplog.at_level("WARNING"):
    inference.load(workdir, data_dir=two_checkpoints.data_dir)
  assert "relative" not in caplog.text
