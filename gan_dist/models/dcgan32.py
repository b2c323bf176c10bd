"""The "standard CNN" DCGAN of the GAN benchmarks, 32x32x3: Miyato et al. 2018 (Spectral Normalization for GANs,
Table 3, CIFAR-10 and STL-10) without spectral normalisation, as PyTorch-StudioGAN's DCGAN (models/dcgan.py).

Generator (M = image size, M_g = M / 8 = 4 at 32x32): noise [B, latent_dim] -> Dense M_g x M_g x 512 (with bias)
  -> Reshape, then three blocks Conv2DTranspose (4x4, s2, same, no bias) -> BN -> ReLU with 256, 128, 64 filters
  (8, 16, 32 pixels), then Conv2D C (3x3, s1, same) -> tanh. As in the paper's table and StudioGAN, nothing sits
  between the Dense layer and the first transposed convolution. The transposed convolutions have no bias because
  BatchNorm's offset replaces it (StudioGAN keeps one: 448 parameters that change nothing).
  At 32x32x3: latent 128 (configs/cifar10_dcgan.cfg, the paper's z): 128*8192+8192 + 16*512*256 + 4*256
  + 16*256*128 + 4*128 + 16*128*64 + 4*64 + (9*64*3+3) = 3,812,803 parameters (3,811,907 trainable);
  latent 100 (the --latent_dim default): 3,583,427 (3,582,531 trainable).
Discriminator: Conv2D 64 (3x3, s1) -> Conv2D 64 (4x4, s2) -> Conv2D 128 (3x3, s1) -> Conv2D 128 (4x4, s2)
  -> Conv2D 256 (3x3, s1) -> Conv2D 256 (4x4, s2) -> Conv2D 512 (3x3, s1), each "same" with bias and followed by
  LeakyReLU 0.1, then Flatten (M/8 x M/8 x 512) -> Dense 1 logit. At 32x32x3: (27*64+64) + (16*64*64+64)
  + (9*64*128+128) + (16*128*128+128) + (9*128*256+256) + (16*256*256+256) + (9*256*512+512) + (4*4*512+1)
  = 2,935,873 parameters. No normalisation in D: the paper's unnormalised baseline (StudioGAN's DCGAN adds
  BatchNorm to D; here the train step feeds real and fake batches separately, so BatchNorm in D would see batches
  of only one kind).

Image shape: M in (32, 48, 64): M_g = M / 8 (the paper uses M_g = 6 for 48x48 STL-10), channels 1 or 3, from
--image_size/--channels (0 = native 32x32x3). The body builders take and return tensors so that `cdcgan32.py`
reuses them behind its label inputs.
"""

import keras
from keras import layers

from gan_dist.models import Gan, float32_logits, resolve_image_shape
from gan_dist.models.layers import batch_norm

IMAGE_SHAPE = (32, 32, 3)
SIZES = (32, 48, 64)
GENERATOR_FILTERS = (256, 128, 64)
DISCRIMINATOR_FILTERS = (64, 128, 256)
LEAKY_SLOPE = 0.1


def image_shape(cfg):
  """(H, W, C) for `cfg` (raises ValueError for a shape this architecture cannot make)."""
  return resolve_image_shape(cfg, IMAGE_SHAPE, SIZES)


def generator_body(cfg, x, shape):
  """Maps a [B, n] input (noise, or noise with a label code) to [B, H, W, C] float32 images in [-1, 1]."""
  start = shape[0] // 8
  x = layers.Dense(start * start * 512)(x)
  x = layers.Reshape((start, start, 512))(x)
  for filters in GENERATOR_FILTERS:
    x = layers.Conv2DTranspose(filters, 4, strides=2, padding="same", use_bias=False)(x)
    x = batch_norm(cfg)(x)
    x = layers.ReLU()(x)
  x = layers.Conv2D(shape[-1], 3, padding="same")(x)
  return layers.Activation("tanh", dtype="float32")(x)


def discriminator_features(images):
  """Maps [B, H, W, C] images to flattened features [B, H/8 * W/8 * 512]."""
  x = images
  for filters in DISCRIMINATOR_FILTERS:
    x = layers.Conv2D(filters, 3, padding="same")(x)
    x = layers.LeakyReLU(LEAKY_SLOPE)(x)
    x = layers.Conv2D(filters, 4, strides=2, padding="same")(x)
    x = layers.LeakyReLU(LEAKY_SLOPE)(x)
  x = layers.Conv2D(512, 3, padding="same")(x)
  x = layers.LeakyReLU(LEAKY_SLOPE)(x)
  return layers.Flatten()(x)


def make_generator(cfg, shape) -> keras.Model:
  """[B, latent_dim] noise -> [B, H, W, C] images in [-1, 1]."""
  noise = keras.Input((cfg.latent_dim,), name="noise")
  return keras.Model(noise, generator_body(cfg, noise, shape), name="generator")


def make_discriminator(shape) -> keras.Model:
  """[B, H, W, C] images -> [B, 1] logits."""
  images = keras.Input(shape, name="images")
  logits = float32_logits(layers.Dense(1)(discriminator_features(images)))
  return keras.Model(images, logits, name="discriminator")


def build(cfg, num_classes: int = 0) -> Gan:
  del num_classes  # Unconditional.
  shape = image_shape(cfg)
  return Gan(make_generator(cfg, shape), make_discriminator(shape), conditional=False, image_shape=shape,
             latent_dim=cfg.latent_dim)
