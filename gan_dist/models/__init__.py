"""Architecture registry: `--arch=NAME` imports `gan_dist.models.NAME` and calls its `build(cfg, num_classes)`;
`--arch=package.module` (a dotted path, importable from the working directory or PYTHONPATH) does the same with a
module of the user's own.

Adding an architecture is adding one file here that defines `build(cfg, num_classes) -> Gan` (see `dcgan.py`).
"""

import dataclasses
import importlib
import pkgutil
from typing import Tuple

from absl import logging
import keras
import tensorflow as tf

from gan_dist import config as config_lib
from gan_dist import errors

_NOT_ARCHS = {"layers"}


@dataclasses.dataclass
class Gan:
  """A generator/discriminator pair and what the rest of the trainer needs to know about it.

  Attributes:
    generator: maps noise [B, latent_dim] (and one-hot labels [B, num_classes] if conditional) to images
      [B, H, W, C] in [-1, 1], float32.
    discriminator: maps images [B, H, W, C] (and one-hot labels if conditional) to logits [B, 1], float32; with
      a class head, to [B, 1 + num_classes]: the logit, then class logits (an auxiliary classifier's).
    conditional: whether both networks take labels.
    image_shape: (H, W, C) of generated and training images.
    latent_dim: size of the noise vector.
    num_classes: number of label classes (0 for unconditional models).
    class_head: whether the discriminator also outputs class logits (for --class_loss_weight).
  """

  generator: keras.Model
  discriminator: keras.Model
  conditional: bool
  image_shape: Tuple[int, int, int]
  latent_dim: int
  num_classes: int = 0
  class_head: bool = False

  def _inputs(self, first, labels):
    """The model inputs for `first` (noise or images) and int labels [B]: one-hot labels only when conditional."""
    if not self.conditional:
      return first
    if labels is None:
      raise ValueError("A conditional model needs labels")
    return [first, tf.one_hot(labels, self.num_classes)]

  def generate(self, noise, labels=None, training: bool = False, generator: keras.Model = None):
    """Images from noise.

    Args:
      noise: float32 [B, latent_dim].
      labels: int [B] class ids (required by conditional models, ignored otherwise).
      training: BatchNorm in training mode (batch statistics) or inference mode (moving statistics).
      generator: another generator of the same architecture (e.g. the EMA copy); default `self.generator`.

    Returns:
      float32 [B, H, W, C] in [-1, 1].
    """
    generator = self.generator if generator is None else generator
    return generator(self._inputs(noise, labels), training=training)

  def discriminate(self, images, labels=None, training: bool = False):
    """Logits float32 [B, 1] for images [B, H, W, C] in [-1, 1] (and int labels [B] when conditional)."""
    return self.discriminate_with_classes(images, labels, training)[0]

  def discriminate_with_classes(self, images, labels=None, training: bool = False):
    """(logits float32 [B, 1], class logits float32 [B, num_classes] or None without a class head): one pass."""
    out = self.discriminator(self._inputs(images, labels), training=training)
    if not self.class_head:
      return out, None
    return out[:, :1], out[:, 1:]


def available() -> list:
  """Names of the architectures under gan_dist/models/."""
  return sorted(m.name for m in pkgutil.iter_modules(__path__)
                if m.name not in _NOT_ARCHS and not m.name.startswith("_"))


def module_of(arch: str):
  """The module of `--arch=arch`: gan_dist.models.<arch> for a name, the module itself for a dotted path.

  Raises:
    errors.UserError: one line: an unknown name (listing the known ones), a dotted path that does not import
      (with the import's own error), or a module without a callable `build`.
  """
  if "." not in arch:
    if arch not in available():
      raise errors.UserError(f"unknown --arch={arch!r}; known architectures: {', '.join(available())}, or a "
                             "dotted module path of your own (package.module defining build(cfg, num_classes))")
    return importlib.import_module(f"{__name__}.{arch}")
  try:
    module = importlib.import_module(arch)
  except Exception as e:  # pylint: disable=broad-except  (a user's module may fail in any way when imported)
    detail = " ".join(str(e).split()) or type(e).__name__
    raise errors.UserError(f"--arch={arch}: the module does not import ({type(e).__name__}: {detail}); it must be "
                           "importable from the working directory or PYTHONPATH") from None
  if not callable(getattr(module, "build", None)):
    raise errors.UserError(f"--arch={arch}: {module.__file__} defines no build(cfg, num_classes) -> "
                           "gan_dist.models.Gan")
  return module


# gan_dist's architectures that have a self-attention block (--attention_resolution) and the widths --g_channels,
# --d_channels.
ATTENTION_ARCHS = ("resnet", "cresnet")


def build(cfg, num_classes: int = 0) -> Gan:
  """Builds `cfg.arch`. Call inside `strategy.scope()` so the variables are distributed.

  Raises:
    errors.UserError: unknown architecture (see `module_of`), a custom build that returns something else than a
      Gan of Keras models, a conditional model without classes, --class_loss_weight for a model without a class
      head, --g_conditioning for another architecture than cresnet, or --attention_resolution for one of
      gan_dist's architectures without self-attention.
  """
  if cfg.g_conditioning != "embedding" and cfg.arch != "cresnet":
    raise errors.UserError(f"--g_conditioning={cfg.g_conditioning} is a choice of --arch=cresnet's generator; "
                           f"--arch={cfg.arch} has no conditional BatchNorms")
  # Only gan_dist's own architectures are known not to read these flags: a custom module (a dotted path) may.
  fixed_width = "." not in cfg.arch and cfg.arch not in ATTENTION_ARCHS
  if cfg.attention_resolution and fixed_width:
    raise errors.UserError(f"--attention_resolution={cfg.attention_resolution} puts self-attention into "
                           f"--arch={'/'.join(ATTENTION_ARCHS)}; --arch={cfg.arch} has none: drop it (0)")
  if fixed_width:
    # A warning, not a refusal: one command line (a benchmark's, a test's) may size every config's widths at once.
    widths = [f"--{n}={getattr(cfg, n)}" for n in ("g_channels", "d_channels")
              if getattr(cfg, n) != getattr(config_lib.Config(), n)]
    if widths:
      logging.warning("%s ignored: only --arch=resnet/cresnet read it; --arch=%s has fixed widths",
                      ", ".join(widths), cfg.arch)
  gan = module_of(cfg.arch).build(cfg, num_classes)
  if not isinstance(gan, Gan) or not all(isinstance(m, keras.Model) for m in (gan.generator, gan.discriminator)):
    raise errors.UserError(f"--arch={cfg.arch}: build(cfg, num_classes) returned {type(gan).__name__}, not a "
                           "gan_dist.models.Gan of two Keras models")
  if gan.conditional:
    require_classes(cfg.arch, gan.num_classes)
  if cfg.class_loss_weight > 0 and not gan.class_head:
    raise errors.UserError(f"--class_loss_weight={cfg.class_loss_weight:g} needs a discriminator with a class head "
                           f"(--arch=cresnet); --arch={cfg.arch} has none")
  return gan


def require_classes(arch: str, num_classes: int) -> None:
  """Raises errors.UserError unless a conditional `arch` has the at least 2 classes it needs (`build` checks every
  conditional model; an architecture whose layers cannot even be made without classes checks first)."""
  if num_classes < 2:
    raise errors.UserError(f"--arch={arch} is conditional and needs labels with at least 2 classes, "
                           f"got num_classes={num_classes}")


def float32_logits(x):
  """Casts a model's output to float32: under mixed precision the loss must be computed in float32."""
  return keras.layers.Activation("linear", dtype="float32")(x)


def resolve_image_shape(cfg, native: Tuple[int, int, int], sizes: Tuple[int, ...],
                        channels: Tuple[int, ...] = (1, 3)) -> Tuple[int, int, int]:
  """The (H, W, C) an architecture builds for `cfg`: --image_size and --channels, 0 meaning its native value.

  Args:
    cfg: the Config (arch, image_size, channels).
    native: the architecture's own shape (H, W, C), used where the flags are 0.
    sizes: the square sizes the architecture can make (its upsampling decides them).
    channels: the channel counts it can make.

  Raises:
    errors.UserError (a ValueError): a one-line message naming the shapes the architecture supports; `main` turns
      it into exit code 2 without a traceback.
  """
  size = cfg.image_size or native[0]
  depth = cfg.channels or native[2]
  if size not in sizes or depth not in channels:
    shapes = " or ".join(f"{s}x{s}" for s in sizes)
    raise errors.UserError(f"--arch={cfg.arch} makes {shapes} images with {' or '.join(map(str, channels))} "
                           f"channel(s), not {size}x{size}x{depth}; pick one of those with --image_size/--channels "
                           f"(0 = native {native[0]}x{native[1]}x{native[2]}), or another --arch")
  return (size, size, depth)
