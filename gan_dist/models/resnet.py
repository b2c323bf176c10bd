"""A ResNet GAN for color images, SNGAN/BigGAN style (Miyato et al. 2018, Zhang et al. 2019, Brock et al. 2019):
spectral normalisation in G and D, residual blocks, optional self-attention, orthogonal initialisation.

M = image size (32, 64 or 128), n = log2(M / 4) up- or downsampling blocks, ch = --g_channels or --d_channels.
Every Conv2D/Dense is spectrally normalised (models.layers.SpectralNormalization) with an orthogonal initial kernel;
3x3 convolutions are "same". D's layers and G's output convolution have a bias; G's other layers do not: every map
they make reaches a BatchNorm (directly, or through the residual sums that feed the next block's BatchNorm and,
last, the output BatchNorm), which removes any per-channel constant, so a bias there would get no gradient (its
updates would be rounding noise amplified by Adam), as in this repo's DCGANs (SNGAN and BigGAN keep them).

Generator: noise [B, latent_dim] -> SN Dense 4*4*w(4) -> Reshape [4, 4, w(4)], then one up block per resolution
  r = 8, 16, ..., M to width w(r) = ch * min(8, M / r) (ch*8, ..., ch*4, ch*2, ch going up, as SNGAN's 64/128
  tables), then BN -> ReLU -> SN Conv2D C (3x3) -> tanh (float32).
  Up block (in -> out channels): BN -> ReLU -> Upsample x2 (nearest) -> Conv 3x3 out -> BN -> ReLU -> Conv 3x3 out,
  plus the shortcut Conv 1x1 out -> Upsample x2 (a 1x1 convolution and nearest upsampling commute; convolving
  first is 4x cheaper).
Discriminator: the optimized first block (Conv 3x3 ch -> ReLU -> Conv 3x3 ch -> AvgPool 2, shortcut AvgPool 2 ->
  Conv 1x1 ch) to M/2, then down blocks to ch*2, ch*4, ... until 4x4, then one block without downsampling (same
  width), ReLU, the sum over positions (h [B, ch * 2^(n-1)]) and SN Dense 1 -> logits (float32).
  Down block: ReLU -> Conv 3x3 out -> ReLU -> Conv 3x3 out -> AvgPool 2, plus the shortcut AvgPool 2 -> Conv 1x1 out
  (pooling and a 1x1 convolution commute; pooling first is 4x cheaper); without downsampling and with equal widths
  the shortcut is the identity (SNGAN's "learnable shortcut" only where shapes change).
  D has no BatchNorm (as in SNGAN): spectral normalisation is its only normalisation.
Self-attention (--attention_resolution R, 0 = none): a models.layers.SelfAttention block after G's up block that
  outputs R x R and after D's block that outputs R x R (SAGAN; BigGAN uses R = 64 at 128x128). R is one of 8, 16,
  ..., M/2: the resolutions both networks have.

Parameters (trainable), with w(r) as above, C image channels and w D's last width:
  G: latent*16*w4 + sum over up blocks in->out [2*in (BN) + 9*in*out + 2*out (BN) + 9*out*out + in*out]
  + 2*ch (BN) + 9*ch*C + C (+ attention: c*c/8*2 + c*c/2 + c/2*c + 1 at width c).
  D: (9*C*ch + ch + 9*ch*ch + ch + C*ch + ch) + per down block in->out (9*in*out + out + 9*out*out + out + in*out + out)
  + the last block (2 * (9*w*w + w)) + (w + 1).
  Non-trainable: each BN's moving mean and variance, and u [1, out] per spectrally normalised layer.
  At 32x32x3, ch=8, latent 100: G 141,947 trainable (+ 1,547 non-trainable), D 37,433 (+ 233); at the default
  ch=32: G 1,035,491 (+ 6,179), D 592,865 (+ 929). tests/models/test_resnet.py counts every size.

Image shape: --image_size 32 (native), 64 or 128, --channels 1 or 3 (native 3). Defaults of --g_channels and
--d_channels (32) suit a CPU; SNGAN's ImageNet 128x128 networks are these tables with ch=64 (its CIFAR-10 ones keep
256 channels in G's and 128 in D's blocks at every resolution).
The builders take and return tensors so that `cresnet.py` reuses them with conditional BatchNorm and projection.
"""

import math
from typing import Callable, Tuple

import keras
from keras import layers

from gan_dist import errors
from gan_dist.models import Gan, float32_logits, resolve_image_shape
from gan_dist.models.layers import GlobalSumPooling2D, SelfAttention, UpSampling2D, batch_norm, sn_conv, sn_dense

IMAGE_SHAPE = (32, 32, 3)
SIZES = (32, 64, 128)
START = 4  # G's first map is START x START; D's last blocks run at START x START.


def image_shape(cfg) -> Tuple[int, int, int]:
  """(H, W, C) for `cfg`, after checking --attention_resolution against it.

  Raises:
    errors.UserError: a size the ResNet cannot make, or an attention resolution the networks do not have.
  """
  shape = resolve_image_shape(cfg, IMAGE_SHAPE, SIZES)
  check_attention(cfg, shape[0])
  return shape


def attention_resolutions(size: int) -> Tuple[int, ...]:
  """The resolutions where both networks can hold a self-attention block at image size `size`: 8, ..., size / 2."""
  return tuple(2 ** k for k in range(3, int(math.log2(size))))


def check_attention(cfg, size: int) -> None:
  """Refuses an --attention_resolution that G and D at `size` x `size` do not have, in one line."""
  resolution = cfg.attention_resolution
  if resolution and resolution not in attention_resolutions(size):
    choices = ", ".join(map(str, attention_resolutions(size)))
    raise errors.UserError(f"--attention_resolution={resolution}: --arch={cfg.arch} at {size}x{size} can put "
                           f"self-attention at {choices} (the maps both networks have), or 0 for none")


def up_resolutions(size: int) -> Tuple[int, ...]:
  """The resolutions G's up blocks make at image size `size`: 8, 16, ..., size."""
  return tuple(START * 2 ** k for k in range(1, int(math.log2(size // START)) + 1))


def generator_width(ch: int, size: int, resolution: int) -> int:
  """G's channels at `resolution`: ch * min(8, size / resolution)."""
  return ch * min(8, size // resolution)


def up_block(x, filters: int, norm: Callable):
  """SNGAN's generator block: [B, r, r, in] -> [B, 2r, 2r, filters]; `norm` maps a tensor to its normalisation."""
  h = layers.ReLU()(norm(x))
  h = UpSampling2D(2, interpolation="nearest")(h)
  h = sn_conv(filters, 3, use_bias=False)(h)
  h = layers.ReLU()(norm(h))
  h = sn_conv(filters, 3, use_bias=False)(h)
  shortcut = UpSampling2D(2, interpolation="nearest")(sn_conv(filters, 1, use_bias=False)(x))
  return layers.Add()([h, shortcut])


def generator_body(cfg, noise, shape, norm: Callable):
  """Maps noise [B, latent_dim] (or any input vector [B, D] of the first layer) to images [B, H, W, C] float32 in
  [-1, 1]; `norm(x)` normalises the blocks' maps (BatchNorm, or conditional BatchNorm in cresnet); the output
  layer's BatchNorm is a plain one in both."""
  size, ch = shape[0], cfg.g_channels
  width = generator_width(ch, size, START)
  x = sn_dense(START * START * width, use_bias=False)(noise)
  x = layers.Reshape((START, START, width))(x)
  for resolution in up_resolutions(size):
    width = generator_width(ch, size, resolution)
    x = up_block(x, width, norm)
    if resolution == cfg.attention_resolution:
      x = SelfAttention(width)(x)
  x = layers.ReLU()(batch_norm(cfg)(x))
  x = sn_conv(shape[-1], 3)(x)
  return layers.Activation("tanh", dtype="float32")(x)


def down_block(x, filters: int, downsample: bool = True, first: bool = False):
  """SNGAN's discriminator block [B, r, r, in] -> [B, r/2, r/2, filters] (r without `downsample`); `first`: the
  optimized block on images (no leading ReLU)."""
  h = x if first else layers.ReLU()(x)
  h = sn_conv(filters, 3)(h)
  h = sn_conv(filters, 3)(layers.ReLU()(h))
  shortcut = x
  if downsample:
    h = layers.AveragePooling2D(2)(h)
    shortcut = layers.AveragePooling2D(2)(shortcut)
  if downsample or x.shape[-1] != filters:
    shortcut = sn_conv(filters, 1)(shortcut)
  return layers.Add()([h, shortcut])


def discriminator_features(cfg, images):
  """Maps images [B, M, M, C] to h [B, d_channels * 2^(n-1)] (the pooled features before the logit)."""
  size, ch = images.shape[1], cfg.d_channels
  x = down_block(images, ch, first=True)
  resolution = size // 2
  if resolution == cfg.attention_resolution:
    x = SelfAttention(ch)(x)
  width = ch
  while resolution > START:
    width *= 2
    x = down_block(x, width)
    resolution //= 2
    if resolution == cfg.attention_resolution:
      x = SelfAttention(width)(x)
  x = down_block(x, width, downsample=False)
  return GlobalSumPooling2D()(layers.ReLU()(x))


def make_generator(cfg, shape) -> keras.Model:
  """[B, latent_dim] noise -> [B, H, W, C] images in [-1, 1]."""
  noise = keras.Input((cfg.latent_dim,), name="noise")
  images = generator_body(cfg, noise, shape, lambda x: batch_norm(cfg)(x))
  return keras.Model(noise, images, name="generator")


def make_discriminator(cfg, shape) -> keras.Model:
  """[B, H, W, C] images -> [B, 1] logits."""
  images = keras.Input(shape, name="images")
  logits = float32_logits(sn_dense(1)(discriminator_features(cfg, images)))
  return keras.Model(images, logits, name="discriminator")


def build(cfg, num_classes: int = 0) -> Gan:
  del num_classes  # Unconditional.
  shape = image_shape(cfg)
  return Gan(make_generator(cfg, shape), make_discriminator(cfg, shape), conditional=False, image_shape=shape,
             latent_dim=cfg.latent_dim)
