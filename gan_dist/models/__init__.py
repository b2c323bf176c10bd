"""Architecture registry: `--arch=NAME` imports `gan_dist.models.NAME` and calls its `build(cfg, num_classes)`.

Adding an architecture is adding one file here that defines `build(cfg, num_classes) -> Gan` (see `dcgan.py`).
"""

import dataclasses
import importlib
import pkgutil
from typing import Tuple

import keras

_NOT_ARCHS = {"layers"}


@dataclasses.dataclass
class Gan:
  """A generator/discriminator pair and what the rest of the trainer needs to know about it.

  Attributes:
    generator: maps noise [B, latent_dim] (and one-hot labels [B, num_classes] if conditional) to images
      [B, H, W, C] in [-1, 1], float32.
    discriminator: maps images [B, H, W, C] (and one-hot labels if conditional) to logits [B, 1], float32.
    conditional: whether both networks take labels.
    image_shape: (H, W, C) of generated and training images.
    latent_dim: size of the noise vector.
    num_classes: number of label classes (0 for unconditional models).
  """

  generator: keras.Model
  discriminator: keras.Model
  conditional: bool
  image_shape: Tuple[int, int, int]
  latent_dim: int
  num_classes: int = 0


def available() -> list:
  """Names of the architectures under gan_dist/models/."""
  return sorted(m.name for m in pkgutil.iter_modules(__path__)
                if m.name not in _NOT_ARCHS and not m.name.startswith("_"))


def build(cfg, num_classes: int = 0) -> Gan:
  """Builds `cfg.arch`. Call inside `strategy.scope()` so the variables are distributed.

  Raises:
    ValueError: unknown architecture (the message lists the known ones), or a conditional model without classes.
  """
  if cfg.arch not in available():
    raise ValueError(f"Unknown --arch={cfg.arch!r}; known architectures: {', '.join(available())}")
  module = importlib.import_module(f"{__name__}.{cfg.arch}")
  gan = module.build(cfg, num_classes)
  if gan.conditional and gan.num_classes < 2:
    raise ValueError(f"--arch={cfg.arch} is conditional and needs labels with at least 2 classes, "
                     f"got num_classes={gan.num_classes}")
  return gan


def float32_logits(x):
  """Casts a model's output to float32: under mixed precision the loss must be computed in float32."""
  return keras.layers.Activation("linear", dtype="float32")(x)
