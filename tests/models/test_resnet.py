"""resnet and cresnet (SNGAN/BigGAN recipe): parameter counts and shapes at 32/64/128, labels used, attention where
asked, refused shapes and resolutions, 1 vs 2 replicas, exact resume with spectral normalisation and an EMA (whose
u are G's), the export copy.

The expected parameter counts are computed here from the tables in resnet.py's and cresnet.py's docstrings, layer
by layer, independently of the builders.
"""

import dataclasses
import math
import os
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import config as tf_config

from gan_dist import errors
from gan_dist import inference
from gan_dist import main
from gan_dist import models
from gan_dist import state as state_lib
from gan_dist import train_step as train_step_lib
from gan_dist.models import layers as gan_layers
from tests import helpers

CH = 4  # Small widths: the counts and shapes do not need big networks.
LATENT = 16
K = 3


def _attention(c):
  inner, value = max(1, c // 8), max(1, c // 2)
  return 2 * c * inner + c * value + value * c + 1, 2 * inner + value + c  # (trainable, u sizes)


def _expected_counts(conditional, size, ch, attention, channels=3, latent=LATENT, classes=K, deep=False):
  """(G trainable, G non-trainable, D trainable, D non-trainable) of the documented architecture (`deep`:
  --g_conditioning=noise_and_embedding)."""
  n = int(math.log2(size // 4))
  width = [ch * min(8, size // (4 * 2 ** i)) for i in range(n + 1)]  # G at 4, 8, ..., size.
  condition = latent + 128 if deep else 128  # What the first layer (deep) and the conditional BatchNorms read.
  train = (condition if deep else latent) * 16 * width[0]
  fixed = 16 * width[0]  # u of the Dense layer.

  def norm(c):  # Trainable and non-trainable parameters of one of the blocks' BatchNorms.
    if conditional:
      return 2 * condition * c, 2 * c + 2 * c  # Gain and bias projections; moving statistics and their u.
    return 2 * c, 2 * c

  for i in range(n):
    cin, cout = width[i], width[i + 1]
    for c in (cin, cout):
      t, f = norm(c)
      train, fixed = train + t, fixed + f
    train += 9 * cin * cout + 9 * cout * cout + cin * cout
    fixed += 3 * cout
    if 4 * 2 ** (i + 1) == attention:
      t, f = _attention(cout)
      train, fixed = train + t, fixed + f
  train += 2 * ch + 9 * ch * channels + channels
  fixed += 2 * ch + channels
  if conditional:
    train += classes * 128

  d_train = 9 * channels * ch + ch + 9 * ch * ch + ch + channels * ch + ch
  d_fixed = 3 * ch
  if size // 2 == attention:
    t, f = _attention(ch)
    d_train, d_fixed = d_train + t, d_fixed + f
  c, resolution = ch, size // 2
  while resolution > 4:
    d_train += 9 * c * 2 * c + 2 * c + 9 * 4 * c * c + 2 * c + c * 2 * c + 2 * c
    d_fixed += 3 * 2 * c
    c, resolution = 2 * c, resolution // 2
    if resolution == attention:
      t, f = _attention(c)
      d_train, d_fixed = d_train + t, d_fixed + f
  d_train += 2 * (9 * c * c + c) + c + 1
  d_fixed += 2 * c + 1
  if conditional:
    d_train, d_fixed = d_train + classes * c, d_fixed + c
  return train, fixed, d_train, d_fixed


def _cfg(**overrides):
  values = dict(arch="resnet", g_channels=CH, d_channels=CH, latent_dim=LATENT)
  values.update(overrides)
  return helpers.config_values(**values)


def _count(variables):
  return sum(int(np.prod(v.shape)) for v in variables)


def _attention_resolutions(model):
  return [layer.input.shape[1] for layer in model.layers if isinstance(layer, gan_layers.SelfAttention)]


@pytest.mark.parametrize("arch", ["resnet", "cresnet"])
@pytest.mark.parametrize("size,attention", [(32, 16), (64, 8), (128, 64)])
def test_parameter_counts_shapes_and_attention(arch, size, attention):
  conditional = arch == "cresnet"
  gan = models.build(_cfg(arch=arch, image_size=size, attention_resolution=attention), K)
  assert gan.image_shape == (size, size, 3) and gan.conditional == conditional
  g, d = gan.generator, gan.discriminator
  assert (_count(g.trainable_variables), _count(g.non_trainable_variables), _count(d.trainable_variables),
          _count(d.non_trainable_variables)) == _expected_counts(conditional, size, CH, attention)
  assert _attention_resolutions(g) == [attention] and _attention_resolutions(d) == [attention]
  labels = tf.constant([0, 2])
  images = gan.generate(tf.random.stateless_normal([2, LATENT], seed=[1, 2]), labels, training=True)
  assert images.shape == (2, size, size, 3) and images.dtype == tf.float32
  assert float(tf.reduce_max(tf.abs(images))) <= 1.0
  logits = gan.discriminate(images, labels, training=True)
  assert logits.shape == (2, 1) and logits.dtype == tf.float32


@pytest.mark.parametrize("size", [32, 64])
def test_noise_and_embedding_conditioning_counts_and_inputs(size):
  gan = models.build(_cfg(arch="cresnet", image_size=size, g_conditioning="noise_and_embedding"), K)
  g = gan.generator
  assert (_count(g.trainable_variables), _count(g.non_trainable_variables)) == _expected_counts(
      True, size, CH, 0, deep=True)[:2]
  # The first layer reads [z, e]; so does every conditional BatchNorm (their projections take latent + 128 inputs).
  first = g.get_layer("noise_and_class")
  assert first.output.shape[-1] == LATENT + 128
  cbns = [layer for layer in g.layers if isinstance(layer, gan_layers.ConditionalBatchNorm)]
  assert cbns and all(layer.input[1].shape[-1] == LATENT + 128 for layer in cbns)
  noise = tf.random.stateless_normal([1, LATENT], seed=[3, 4])
  a, b = (gan.generate(noise, tf.constant([y]), training=False) for y in (0, 1))
  assert not np.allclose(a, b)


def test_documented_count_and_spectral_normalization_everywhere():
  gan = models.build(_cfg(g_channels=8, d_channels=8, latent_dim=100))
  g, d = gan.generator, gan.discriminator
  assert _count(g.trainable_variables) == 141_947 == _expected_counts(False, 32, 8, 0, latent=100)[0]
  assert _attention_resolutions(g) == [] and _attention_resolutions(d) == []
  for model in (g, d):
    convs = [layer for layer in model._flatten_layers(include_self=False)  # pylint: disable=protected-access
             if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))]
    assert convs and all(isinstance(layer.kernel_initializer, keras.initializers.Orthogonal) for layer in convs)
    assert len(gan_layers.spectral_normalization_layers(model)) == len(convs)  # Each one wrapped.
  assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in d.layers)
  widths = [layer.layer.filters for layer in g.layers if isinstance(layer, gan_layers.SpectralNormalization)
            and isinstance(layer.layer, keras.layers.Conv2D) and layer.layer.kernel_size == (3, 3)]
  assert widths == [32, 32, 16, 16, 8, 8, 3]  # ch*4, ch*2, ch going up to 32x32, then the RGB output.


def test_one_channel_images():
  gan = models.build(_cfg(channels=1))
  assert gan.image_shape == (32, 32, 1) and gan.generator(tf.zeros([1, LATENT])).shape == (1, 32, 32, 1)


def test_the_labels_reach_both_conditional_networks():
  gan = models.build(_cfg(arch="cresnet", attention_resolution=8), K)
  noise = tf.random.stateless_normal([1, LATENT], seed=[3, 4])
  a, b = (gan.generate(noise, tf.constant([y]), training=False) for y in (0, 1))
  assert not np.allclose(a, b)  # Conditional BatchNorm.
  images = tf.random.stateless_uniform([1, 32, 32, 3], seed=[5, 6], minval=-1.0, maxval=1.0)
  a, b = (gan.discriminate(images, tf.constant([y])) for y in (0, 1))
  assert not np.allclose(a, b)  # Projection.
  cbns = [layer for layer in gan.generator.layers if isinstance(layer, gan_layers.ConditionalBatchNorm)]
  assert len(cbns) == 6 and all(layer.synchronized for layer in cbns)


def test_class_head_outputs_class_logits_from_the_same_pass():
  """--class_loss_weight > 0: cresnet's D gains an SN Dense K on its features ((w + 1) * K weights, a u of K),
  `discriminate` still gives [B, 1], and `discriminate_with_classes` the same logit and [B, K] class logits."""
  plain = models.build(_cfg(arch="cresnet", image_size=32), K)
  gan = models.build(_cfg(arch="cresnet", image_size=32, class_loss_weight=1.0), K)
  assert gan.class_head and not plain.class_head
  w = CH * 4  # D's feature width at 32x32 (blocks of ch, 2ch, 4ch).
  d, d0 = gan.discriminator, plain.discriminator
  assert _count(d.trainable_variables) - _count(d0.trainable_variables) == (w + 1) * K
  assert _count(d.non_trainable_variables) - _count(d0.non_trainable_variables) == K
  images = tf.random.stateless_uniform([4, 32, 32, 3], seed=[7, 8], minval=-1.0, maxval=1.0)
  labels = tf.constant([0, 1, 2, 0])
  logits, classes = gan.discriminate_with_classes(images, labels)
  assert logits.shape == (4, 1) and classes.shape == (4, K) and classes.dtype == tf.float32
  np.testing.assert_array_equal(gan.discriminate(images, labels), logits)
  # The class logits do not depend on the label D is given (the projection does): a classifier of the image.
  _, other = gan.discriminate_with_classes(images, tf.constant([2, 2, 1, 1]))
  np.testing.assert_allclose(classes, other, rtol=1e-5, atol=1e-6)
  assert plain.discriminate_with_classes(images, labels)[1] is None


@pytest.mark.parametrize("overrides,message", [
    (dict(class_loss_weight=1.0), "--class_loss_weight=1 needs a discriminator with a class head (--arch=cresnet); "
     "--arch=resnet has none"),
    (dict(g_conditioning="noise_and_embedding"), "--g_conditioning=noise_and_embedding is a choice of "
     "--arch=cresnet's generator; --arch=resnet has no conditional BatchNorms"),
    (dict(image_size=48), "--arch=resnet makes 32x32 or 64x64 or 128x128 images with 1 or 3 channel(s), not 48x48x3"),
    (dict(image_size=256), "not 256x256x3"),
    (dict(attention_resolution=32), "--attention_resolution=32: --arch=resnet at 32x32 can put self-attention at 8, "
     "16 (the maps both networks have), or 0 for none"),
    (dict(image_size=64, attention_resolution=4), "at 64x64 can put self-attention at 8, 16, 32"),
    (dict(arch="cresnet", image_size=128, attention_resolution=12), "at 128x128 can put self-attention at 8, 16, "
     "32, 64"),
])
def test_refused_sizes_and_resolutions(overrides, message):
  with pytest.raises(errors.UserError) as error:
    models.build(_cfg(**overrides), K)
  assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("overrides,message", [
    (dict(attention_resolution=64), "--attention_resolution=64: --arch=resnet at 32x32"),
    (dict(class_loss_weight=0.5), "--class_loss_weight=0.5 needs a discriminator with a class head"),
    (dict(g_conditioning="noise_and_embedding"), "--g_conditioning=noise_and_embedding is a choice of "
     "--arch=cresnet's generator"),
    (dict(strategy="mirrored", jit_compile=True, sync_batchnorm=False), "cannot compile --arch=resnet"),
])
def test_refused_runs_write_nothing(tmp_path, one_device, mirrored2, capsys, overrides, message):
  """Through main as the command line runs it: exit 2, one line, no workdir."""
  folder = helpers.make_image_folder(str(tmp_path / "images"), num=6, bad=())["root"]
  cfg = helpers.config(tmp_path, arch="resnet", dataset="folder", data_dir=folder, g_channels=CH, d_channels=CH,
                       **overrides)
  strategy = mirrored2 if cfg.strategy == "mirrored" else one_device
  assert main.run_cli(cfg, make_strategy=lambda _: strategy) == errors.EXIT_USAGE
  err = capsys.readouterr().err.strip()
  assert message in err and len(err.splitlines()) == 1
  assert not os.path.exists(cfg.workdir)


def test_xla_on_two_cpu_replicas_is_refused_for_spectral_normalization(mirrored2):
  """Averaging u over replicas inside the forward pass is a merge_call on CPUs, which XLA cannot compile: refused in
  one line before anything is traced (one device, or GPUs, compile)."""
  cfg = _cfg(jit_compile=True, sync_batchnorm=False, strategy="mirrored")
  with mirrored2.scope():
    gan = models.build(cfg)
  with pytest.raises(errors.UserError, match="cannot compile --arch=resnet: its spectral normalisation") as error:
    train_step_lib.check_jit_supported(cfg, mirrored2, gan)
  assert "\n" not in str(error.value)
  assert train_step_lib.check_jit_supported(cfg, tf.distribute.OneDeviceStrategy("/cpu:0"), gan) is None


def _setup(tmp_path, strategy, **overrides):
  """As tests/test_train_step.py's _setup, on a folder of color images with 3 classes."""
  folder = helpers.make_image_folder(str(tmp_path / "images"), num=24, bad=())["root"]
  values = dict(arch="cresnet", dataset="folder", data_dir=folder, g_channels=CH, d_channels=CH, latent_dim=LATENT)
  values.update(overrides)
  cfg = helpers.config(tmp_path, **values)
  return (cfg, *helpers.train_setup(cfg, strategy))


_replica_values = helpers.replica_values


@pytest.mark.slow
def test_one_device_and_two_replicas_take_the_same_step(tmp_path, one_device, mirrored2):
  """cresnet with attention, synchronised conditional BatchNorm of [z, e] (configs/faces64_cond.cfg's BigGAN-deep
  conditioning, a superset of the plain embedding's), spectral normalisation and the class head: one step
  of the trainer on 2 replicas updates every weight and u vector as one device does on the same global batch, and u
  is the same on both replicas.

  One device runs the step each replica of the trainer runs (train_step.replica_step) on the whole batch, eagerly:
  tracing the trainer's loop around it for one device took as long as the rest of this test."""
  found = []
  for strategy in (one_device, mirrored2):
    cfg, state, it, train = _setup(tmp_path / str(len(found)), strategy, attention_resolution=8,
                                   class_loss_weight=1.0, g_conditioning="noise_and_embedding")
    if strategy is one_device:
      metrics, nonfinite = strategy.run(train_step_lib.replica_step,
                                        args=(cfg, state, (next(it),), state.step.read_value()))
      assert float(nonfinite) == 0.0
      means = {name: float(value) for name, value in metrics.items()}
    else:
      result = train(it, 1)
      assert not result.diverged
      means = result.means()
    for model in (state.gan.generator, state.gan.discriminator):
      for u in gan_layers.power_iteration_vectors(model):
        copies = _replica_values(u)
        assert len(copies) == strategy.num_replicas_in_sync
        np.testing.assert_array_equal(copies[0], copies[-1])
    found.append((means, state.gan.generator.get_weights() + state.gan.discriminator.get_weights()))
  (m1, w1), (m2, w2) = found
  assert {"d_class_loss", "g_class_accuracy"} <= set(m1) and set(m1) == set(m2)
  for name in m1:
    assert m1[name] == pytest.approx(m2[name], rel=1e-4, abs=1e-6), name
  for a, b in zip(w1, w2):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_resume_with_spectral_norm_and_ema_is_exact(tmp_path, one_device, op_determinism, monkeypatch):
  """--deterministic, through main as the command line runs it: 4 steps straight, and a copy of the workdir as a run
  killed after step 2 leaves it, resumed to 4, end with bitwise equal checkpoints, u vectors (G, D, EMA) included.

  configs/faces64_cond.cfg's recipe at small widths: cresnet with the BigGAN-deep conditioning (conditional
  BatchNorm of [z, e]), the projection and auxiliary class heads (--class_loss_weight) and the mode-seeking term,
  whose second noise draw must be a function of (seed, step) too."""
  del op_determinism
  # The EMA generator's BatchNorm re-estimation at each save and sample (5 in the two runs) from 16 noise vectors in
  # 2 chunks, not 512 in 8: the same averaging over chunks, resumed as exactly (tests/test_train_step.py checks its
  # statistics): about 0.5-1 s of CPU less (of ~18).
  monkeypatch.setattr(state_lib, "EMA_BATCHNORM_SAMPLES", 16)
  monkeypatch.setattr(state_lib, "EMA_BATCHNORM_CHUNK", 8)
  folder = helpers.make_image_folder(str(tmp_path / "images"), num=24, bad=())["root"]
  base = helpers.config(tmp_path, arch="cresnet", g_conditioning="noise_and_embedding", class_loss_weight=2.0,
                        mode_seeking_weight=1.0, dataset="folder", data_dir=folder, g_channels=CH, d_channels=CH,
                        latent_dim=LATENT, deterministic=True, strategy="one_device", train_steps=4,
                        steps_per_loop=2, checkpoint_every=2, ema_decay=0.9)
  straight = dataclasses.replace(base, workdir=str(tmp_path / "straight"))
  assert main.run_cli(straight, make_strategy=lambda _: one_device) == errors.EXIT_OK
  assert tf_config.is_op_determinism_enabled()
  interrupted = dataclasses.replace(base, workdir=str(tmp_path / "interrupted"))
  helpers.interrupted_copy(straight.workdir, interrupted.workdir, 2)
  assert main.run_cli(interrupted, make_strategy=lambda _: one_device) == errors.EXIT_OK
  a = helpers.checkpoint_values(os.path.join(straight.workdir, "checkpoints", "ckpt-4"))
  b = helpers.checkpoint_values(os.path.join(interrupted.workdir, "checkpoints", "ckpt-4"))
  assert a.keys() == b.keys()
  vectors = [name for name in a if name.endswith("/u/.ATTRIBUTES/VARIABLE_VALUE")]
  assert {name.split("/")[0] for name in vectors} == {"generator", "discriminator", "ema_generator"}
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)
  # The EMA generator's u are G's (copied at each EMA update), untouched by its BatchNorm re-estimation before the
  # save; its weights are not G's.
  ema = [name for name in vectors if name.startswith("ema_generator/")]
  assert ema and len(ema) == len([name for name in vectors if name.startswith("generator/")])
  for name in ema:
    np.testing.assert_array_equal(a[name], a[name.replace("ema_generator/", "generator/", 1)], err_msg=name)


@pytest.mark.slow
def test_float32_copy_of_a_resnet_generator_is_keras_only():
  """The export copy of a cresnet generator with attention under mixed_float16: Keras' own layers in float32,
  spectral norms baked into the kernels, the same images in inference as the generator; saved and loaded as a
  .keras file without any gan_dist class."""
  cfg = _cfg(arch="cresnet", attention_resolution=16, precision="mixed_float16", ema_decay=0.9)
  state = state_lib.create_state(cfg, tf.distribute.get_strategy(), K)
  g = state.gan.generator
  noise = tf.random.stateless_normal([4, LATENT], seed=[7, 8])
  onehot = tf.one_hot([0, 1, 2, 1], K)
  # Orthogonal initial kernels have sigma = 1, so W / sigma = W: scaled, a copy of the raw W gives other images.
  sn_layers = gan_layers.spectral_normalization_layers(g)
  assert sn_layers
  for layer in sn_layers:
    layer.kernel_variable.assign(layer.kernel_variable * 3.0)
  for _ in range(3):  # Move u and the BatchNorm statistics away from their initial values.
    g([noise, onehot], training=True)
  next(layer for layer in g.layers if isinstance(layer, gan_layers.SelfAttention)).gamma.assign(0.5)
  copy = inference.float32_copy(g)
  assert all(type(layer).__module__.startswith("keras.") for layer in copy.layers)
  assert all(layer.dtype_policy.name == "float32" for layer in copy.layers)
  expected = np.asarray(g([noise, onehot], training=False), np.float32)
  images = copy([noise, onehot]).numpy()
  np.testing.assert_allclose(images, expected, atol=5e-3)  # The generator computes in float16.
  float32 = inference.float32_copy(models.build(_cfg(arch="cresnet", attention_resolution=8), K).generator)
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "g.keras")
    float32.save(path)
    loaded = keras.saving.load_model(path, custom_objects={}, safe_mode=True)
    assert all(type(layer).__module__.startswith("keras.") for layer in loaded.layers)
    np.testing.assert_array_equal(loaded([noise, onehot]), float32([noise, onehot]))
