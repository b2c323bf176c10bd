"""A DCGAN whose generator upsamples with UpSampling2D + Conv2D instead of transposed convolutions, 28x28x1.

Nearest-neighbour upsampling followed by a stride-1 convolution avoids the checkerboard artefacts of strided
transposed convolutions (Odena et al. 2016, "Deconvolution and Checkerboard Artifacts").

Generator: noise [B, 100] -> Dense 7x7x128 -> LeakyReLU 0.2 -> Reshape 7x7x128 -> BN -> UpSampling2D (14x14)
  -> Conv2D 64 (3x3, same) -> LeakyReLU 0.2 -> BN -> UpSampling2D (28x28) -> Conv2D 1 (3x3, same, tanh).
  100*6272+6272 + 4*128 + (9*128*64+64) + 4*64 + (9*64+1) = 708,609 parameters (708,225 trainable).
  BatchNormalization normalises the 128 channels of the 7x7 map (not the 6,272 Dense units): convolutional
  BatchNorm shares statistics over space, as every later block does.
Discriminator: Conv2D 64 (3x3, s2, same) -> LeakyReLU 0.2 -> Conv2D 128 (3x3, s2, same) -> LeakyReLU 0.2
  -> Flatten -> Dense 1 logit. (9*64+64) + (9*64*128+128) + (7*7*128+1) = 80,769 parameters.
Image shape: 28x28 only; --channels 1 (native) or 3 (the last layer's filters and D's input change).
"""

import keras
from keras import layers

from gan_dist.models import Gan, float32_logits, resolve_image_shape
from gan_dist.models.layers import UpSampling2D, batch_norm, strided_conv_features

IMAGE_SHAPE = (28, 28, 1)


def make_generator(cfg, shape=IMAGE_SHAPE) -> keras.Model:
  """[B, latent_dim] noise -> [B, 28, 28, C] images in [-1, 1]."""
  noise = keras.Input((cfg.latent_dim,), name="noise")
  x = layers.Dense(7 * 7 * 128)(noise)
  x = layers.LeakyReLU(0.2)(x)
  x = layers.Reshape((7, 7, 128))(x)
  x = batch_norm(cfg)(x)
  x = UpSampling2D()(x)
  x = layers.Conv2D(64, 3, padding="same")(x)
  x = layers.LeakyReLU(0.2)(x)
  x = batch_norm(cfg)(x)
  x = UpSampling2D()(x)
  x = layers.Conv2D(shape[-1], 3, padding="same")(x)
  images = layers.Activation("tanh", dtype="float32")(x)
  return keras.Model(noise, images, name="generator")


def make_discriminator(shape=IMAGE_SHAPE) -> keras.Model:
  """[B, 28, 28, C] images -> [B, 1] logits."""
  images = keras.Input(shape, name="images")
  features = strided_conv_features(images, kernel_size=3, leaky_slope=0.2)
  logits = float32_logits(layers.Dense(1)(features))
  return keras.Model(images, logits, name="discriminator")


def build(cfg, num_classes: int = 0) -> Gan:
  del num_classes  # Unconditional.
  shape = resolve_image_shape(cfg, IMAGE_SHAPE, (28,))
  return Gan(make_generator(cfg, shape), make_discriminator(shape), conditional=False, image_shape=shape,
             latent_dim=cfg.latent_dim)
