"""A DCGAN (Radford et al. 2016) for 64x64x3 images, e.g. MNIST resized to 64x64 with its gray channel repeated.

Generator: noise [B, 100] -> Dense 4x4x512 -> Reshape -> BN -> LeakyReLU 0.2, then three blocks of
  Conv2DTranspose (4x4, s2, same) -> BN -> LeakyReLU 0.2 with 256, 128, 64 filters (8, 16, 32 pixels), and
  Conv2DTranspose 3 (4x4, s2, same, tanh) to 64x64. Layers followed by BatchNorm have no bias (BN's offset
  replaces it), as in the DCGAN paper.
  100*8192 + 4*512 + 16*512*256 + 4*256 + 16*256*128 + 4*128 + 16*128*64 + 4*64 + (16*64*3+3)
  = 3,578,627 parameters (3,576,707 trainable).
Discriminator: Conv2D 64 (4x4, s2, same) -> LeakyReLU 0.2 -> Dropout 0.3 -> Conv2D 128 (4x4, s2, same)
  -> LeakyReLU 0.2 -> Dropout 0.3 -> Flatten (16x16x128) -> Dense 1 logit.
  (16*3*64+64) + (16*64*128+128) + (16*16*128+1) = 167,105 parameters.
  D has no BatchNorm: the train step feeds real and fake batches separately, and dropout regularises a D that is
  small next to G, like the TF-tutorial DCGAN's.
Image shape: 64x64x3 natively; --image_size 32 or 128 (G starts from M/16 x M/16 x 512) and --channels 1 or 3.
  The counts above are those of 64x64x3.
"""

import keras
from keras import layers

from gan_dist.models import Gan, float32_logits, resolve_image_shape
from gan_dist.models.layers import batch_norm, strided_conv_features

IMAGE_SHAPE = (64, 64, 3)
SIZES = (32, 64, 128)


def make_generator(cfg, shape=IMAGE_SHAPE) -> keras.Model:
  """[B, latent_dim] noise -> [B, H, W, C] images in [-1, 1] (64x64x3 natively)."""
  start = shape[0] // 16
  noise = keras.Input((cfg.latent_dim,), name="noise")
  x = layers.Dense(start * start * 512, use_bias=False)(noise)
  x = layers.Reshape((start, start, 512))(x)
  x = batch_norm(cfg)(x)
  x = layers.LeakyReLU(0.2)(x)
  for filters in (256, 128, 64):
    x = layers.Conv2DTranspose(filters, 4, strides=2, padding="same", use_bias=False)(x)
    x = batch_norm(cfg)(x)
    x = layers.LeakyReLU(0.2)(x)
  x = layers.Conv2DTranspose(shape[-1], 4, strides=2, padding="same")(x)
  images = layers.Activation("tanh", dtype="float32")(x)
  return keras.Model(noise, images, name="generator")


def make_discriminator(shape=IMAGE_SHAPE) -> keras.Model:
  """[B, H, W, C] images -> [B, 1] logits."""
  images = keras.Input(shape, name="images")
  features = strided_conv_features(images, kernel_size=4, leaky_slope=0.2, dropout=0.3)
  logits = float32_logits(layers.Dense(1)(features))
  return keras.Model(images, logits, name="discriminator")


def build(cfg, num_classes: int = 0) -> Gan:
  del num_classes  # Unconditional.
  shape = resolve_image_shape(cfg, IMAGE_SHAPE, SIZES)
  return Gan(make_generator(cfg, shape), make_discriminator(shape), conditional=False, image_shape=shape,
             latent_dim=cfg.latent_dim)
