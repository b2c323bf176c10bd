"""The architectures of issue 3: shapes, value ranges, dtypes, exact parameter counts and label dependence.

Expected parameter counts (Keras `count_params()`, which includes BatchNorm's moving statistics; "trainable"
excludes them). Each is derived layer by layer in its module's docstring:
  mlp:            G 1,493,520 (1,489,936 trainable) and D 533,505, the Keras-GAN gan.py model.summary() figures:
                  G = (100*256+256) + (256*512+512) + (512*1024+1024) + (1024*784+784) + 4*(256+512+1024);
                  D = (784*512+512) + (512*256+256) + (256+1).
  cgan_mlp:       G 1,520,220 (1,516,636): mlp's G on 200 inputs (+100*256) plus the label Dense 10*100+100;
                  D 943,537: label Dense 10*784+784, then (1568*512+512) + (512*256+256) + 257.
  dcgan_upsample: G 708,609 (708,225) = (100*6272+6272) + 4*128 + (9*128*64+64) + 4*64 + (9*64+1);
                  D 80,769 = (9*64+64) + (9*64*128+128) + (6272+1).
  dcgan64:        G 3,578,627 (3,576,707) = 100*8192 + 4*512 + 16*512*256 + 4*256 + 16*256*128 + 4*128
                  + 16*128*64 + 4*64 + (16*64*3+3); D 167,105 = (16*3*64+64) + (16*64*128+128) + (16*16*128+1).
  cdcgan:         G 897,089 (896,705) = 110*6272 + 4*128 + 25*128*64 + 4*64 + (25*64+1);
                  D 275,585 = (25*64+64) + (25*64*128+128) + (6272+1) + 10*6272 (projection embedding).
  dcgan32:        G 3,583,427 (3,582,531) = (100*8192+8192) + 16*512*256 + 4*256 + 16*256*128 + 4*128
                  + 16*128*64 + 4*64 + (9*64*3+3); D 2,935,873 (see tests/models/test_dcgan32.py).
  cdcgan32:       G 3,665,347 (3,664,451) = dcgan32's + 10*8192 (one-hot inputs of the Dense layer);
                  D 3,017,793 = dcgan32's + 10*8192 (projection embedding).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from gan_dist import errors
from gan_dist import models
from tests import helpers

# arch: (image_shape, conditional, G params, G trainable params, D params)
EXPECTED = {
    "mlp": ((28, 28, 1), False, 1_493_520, 1_489_936, 533_505),
    "cgan_mlp": ((28, 28, 1), True, 1_520_220, 1_516_636, 943_537),
    "dcgan_upsample": ((28, 28, 1), False, 708_609, 708_225, 80_769),
    "dcgan64": ((64, 64, 3), False, 3_578_627, 3_576_707, 167_105),
    "cdcgan": ((28, 28, 1), True, 897_089, 896_705, 275_585),
    "dcgan32": ((32, 32, 3), False, 3_583_427, 3_582_531, 2_935_873),
    "cdcgan32": ((32, 32, 3), True, 3_665_347, 3_664_451, 3_017_793),
}
# arch: (sizes it can make besides its native one, a size it cannot make); every architecture makes 1 or 3 channels.
SHAPES = {
    "mlp": ((), 32), "cgan_mlp": ((), 32), "dcgan": ((), 32), "dcgan_upsample": ((), 32), "cdcgan": ((), 64),
    "dcgan64": ((32, 128), 48), "dcgan32": ((48, 64), 28), "cdcgan32": ((48, 64), 128),
}
NUM_CLASSES = 10
BATCH = 4


def _inputs(gan, labels):
  noise = tf.random.stateless_normal([len(labels), gan.latent_dim], seed=[1, 2])
  if not gan.conditional:
    return noise
  return [noise, tf.one_hot(labels, NUM_CLASSES)]


def _d_inputs(gan, images, labels):
  return [images, tf.one_hot(labels, NUM_CLASSES)] if gan.conditional else images


@pytest.mark.parametrize("arch", sorted(EXPECTED))
def test_shapes_ranges_and_parameter_counts(arch):
  image_shape, conditional, g_params, g_trainable, d_params = EXPECTED[arch]
  gan = models.build(helpers.config_values(arch=arch), NUM_CLASSES)
  assert gan.image_shape == image_shape and gan.conditional == conditional and gan.latent_dim == 100
  assert gan.num_classes == (NUM_CLASSES if conditional else 0)
  labels = np.arange(BATCH) % NUM_CLASSES
  images = gan.generator(_inputs(gan, labels), training=True)
  assert images.shape == (BATCH, *image_shape) and images.dtype == tf.float32
  assert -1.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 1.0
  logits = gan.discriminator(_d_inputs(gan, images, labels), training=True)
  assert logits.shape == (BATCH, 1) and logits.dtype == tf.float32
  assert gan.generator.count_params() == g_params
  assert sum(int(np.prod(v.shape)) for v in gan.generator.trainable_variables) == g_trainable
  assert gan.discriminator.count_params() == d_params


@pytest.mark.parametrize("arch", [a for a in sorted(EXPECTED) if EXPECTED[a][1]])
def test_conditional_outputs_depend_on_the_label(arch):
  # Fixed initial weights: unseeded, cdcgan32's D gives logits of ~1e-4 whose closest two of ten came within 1e-6 in
  # about one process in four (seeded, 1.8e-5 apart; cdcgan 1.3e-4, cgan_mlp 1.4e-3).
  keras.utils.set_random_seed(0)
  gan = models.build(helpers.config_values(arch=arch), NUM_CLASSES)
  noise = tf.random.stateless_normal([1, gan.latent_dim], seed=[3, 4])
  noise = tf.repeat(noise, NUM_CLASSES, axis=0)
  onehot = tf.eye(NUM_CLASSES)
  images = gan.generator([noise, onehot], training=False).numpy()
  # Same noise, ten labels: ten different images.
  assert min(np.abs(images[i] - images[j]).max() for i in range(NUM_CLASSES) for j in range(i)) > 1e-4
  same_image = tf.repeat(images[:1], NUM_CLASSES, axis=0)
  logits = gan.discriminator([same_image, onehot], training=False).numpy().ravel()
  # Same image, ten labels: ten different logits.
  assert np.min(np.abs(logits[:, None] - logits[None, :]) + np.eye(NUM_CLASSES)) > 1e-6


def test_mixed_precision_outputs_are_float32():
  # Under mixed_float16 the losses must still see float32 images and logits.
  keras.config.set_dtype_policy("mixed_float16")
  try:
    for arch in sorted(EXPECTED):
      gan = models.build(helpers.config_values(arch=arch, precision="mixed_float16"), NUM_CLASSES)
      labels = np.arange(2)
      images = gan.generator(_inputs(gan, labels), training=False)
      logits = gan.discriminator(_d_inputs(gan, images, labels), training=False)
      assert images.dtype == tf.float32 and logits.dtype == tf.float32, arch
  finally:
    keras.config.set_dtype_policy("float32")


def test_unknown_arch_lists_the_known_ones():
  with pytest.raises(ValueError) as error:
    models.build(helpers.config_values(arch="no_such_gan"))
  message = str(error.value)
  assert "no_such_gan" in message
  for arch in ("dcgan", *EXPECTED):
    assert arch in message
  assert set(EXPECTED) <= set(models.available())


@pytest.mark.parametrize("arch", sorted(SHAPES))
def test_image_shape_is_a_decision_of_the_config(arch):
  native = models.build(helpers.config_values(arch=arch), NUM_CLASSES).image_shape
  other_channels = 3 if native[2] == 1 else 1
  for size in (native[0], *SHAPES[arch][0]):
    for channels in (native[2], other_channels):
      gan = models.build(helpers.config_values(arch=arch, image_size=size, channels=channels), NUM_CLASSES)
      assert gan.image_shape == (size, size, channels)
      labels = np.arange(2) % NUM_CLASSES
      images = gan.generator(_inputs(gan, labels), training=False)
      assert images.shape == (2, size, size, channels)
      assert gan.discriminator(_d_inputs(gan, images, labels), training=False).shape == (2, 1)
  bad = SHAPES[arch][1]
  with pytest.raises(ValueError, match=rf"--arch={arch} makes .* not {bad}x{bad}x") as error:
    models.build(helpers.config_values(arch=arch, image_size=bad), NUM_CLASSES)
  assert "\n" not in str(error.value)


@pytest.mark.parametrize("arch", ["mlp", "dcgan", "cdcgan32"])
def test_attention_resolution_is_refused_by_an_architecture_without_attention(arch):
  """Only resnet and cresnet have self-attention: elsewhere the flag would be accepted and do nothing."""
  with pytest.raises(errors.UserError) as error:
    models.build(helpers.config_values(arch=arch, attention_resolution=16), 10)
  assert f"--attention_resolution=16 puts self-attention into --arch=resnet/cresnet; --arch={arch} has none" in str(
      error.value)


def test_resnet_widths_given_to_another_architecture_are_said_to_be_ignored(caplog):
  models.build(helpers.config_values(arch="mlp", g_channels=4), 10)
  assert any("--g_channels=4 ignored: only --arch=resnet/cresnet read it; --arch=mlp has fixed widths"
             in r.getMessage() for r in caplog.records)
