"""The generator behind the demo: a trained workdir or a SavedModel export, its facts, and bucketed generation.

Noise is the sampling CLI's (`sample.sample_inputs`): image i of seed s is the same whatever the number of images
asked for, and `python -m gan_dist.sample --seed=s` draws the same images. Batches are padded to the next bucket
(1, 2, 4, ..., 64) so that the generation `tf.function` is traced once per bucket, never per request;
`trace_counts` records each trace so that tests can check it.
"""

import math
import threading
import types
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

from gan_dist import export as export_lib
from gan_dist import sample as sample_lib
from gan_dist import summaries

MAX_IMAGES = 64
BUCKETS = tuple(2 ** i for i in range(int(math.log2(MAX_IMAGES)) + 1))  # 1, 2, 4, ..., 64.
MAX_SEED = 2 ** 32 - 1  # numpy's RandomState takes seeds in [0, 2^32).


def bucket(num: int) -> int:
  """The smallest bucket holding `num` images (1 <= num <= MAX_IMAGES)."""
  return next(b for b in BUCKETS if b >= num)


class ServedModel:
  """A generator that turns (noise, labels) into uint8 images, thread-safely, one trace per batch bucket.

  Args:
    images_fn: (noise float32 [B, latent_dim], labels int32 [B]) -> uint8 images [B, H, W, C]; TensorFlow ops,
      traced inside a tf.function. Unconditional models ignore the labels.
    facts: `export.model_facts(...)` of the model (arch, dataset, step, ema, image_shape, conditional,
      num_classes, latent_dim, ...).
  """

  def __init__(self, images_fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor], facts: dict):
    self.facts = dict(facts)
    self._images_fn = images_fn
    self._lock = threading.Lock()
    self.trace_counts: Dict[int, int] = {}
    self._generate = tf.function(self._traced)

  @property
  def conditional(self) -> bool:
    return bool(self.facts["conditional"])

  @property
  def num_classes(self) -> int:
    return int(self.facts["num_classes"])

  @property
  def latent_dim(self) -> int:
    return int(self.facts["latent_dim"])

  @property
  def image_shape(self) -> Tuple[int, int, int]:
    return tuple(self.facts["image_shape"])

  def _traced(self, noise, labels):
    # Python code here runs only while TensorFlow traces: it counts traces, not calls.
    size = int(noise.shape[0])
    self.trace_counts[size] = self.trace_counts.get(size, 0) + 1
    return self._images_fn(noise, labels)

  def inputs(self, num: int, seed: int, label: Optional[int] = None) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Noise float32 [num, latent_dim] and labels int32 [num] (None if unconditional) of a grid.

    Conditional models: every image has class `label`, or (label None) image i has class i mod num_classes.
    """
    spec = types.SimpleNamespace(latent_dim=self.latent_dim, conditional=self.conditional,
                                 num_classes=self.num_classes)
    return sample_lib.sample_inputs(spec, num, seed, label)

  def walk_inputs(self, seed_a: int, seed_b: int, frames: int,
                  label: Optional[int] = None) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """A latent walk from the first image of seed_a's grid to the first of seed_b's, in `frames` steps.

    Spherical interpolation: Gaussian noise vectors concentrate near a sphere, and a straight line between two of
    them passes through shorter, atypical vectors (washed-out images mid-way).

    Returns:
      noise float32 [frames, latent_dim]; labels int32 [frames] of class `label` (None: 0, the class of a grid's
      first image), or None if unconditional.
    """
    a = self.inputs(1, seed_a)[0][0].astype(np.float64)
    b = self.inputs(1, seed_b)[0][0].astype(np.float64)
    t = np.linspace(0.0, 1.0, frames)[:, None]
    cos = np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))
    omega = np.arccos(np.clip(cos, -1.0, 1.0))
    if omega < 1e-6:
      noise = (1 - t) * a + t * b
    else:
      noise = (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)
    labels = np.full([frames], label or 0, np.int32) if self.conditional else None
    return noise.astype(np.float32), labels

  def images(self, noise: np.ndarray, labels: Optional[np.ndarray]) -> np.ndarray:
    """uint8 images [N, H, W, C] of noise [N, latent_dim] and int labels [N] (None if unconditional)."""
    if labels is None:
      labels = np.zeros([len(noise)], np.int32)
    out = []
    for start in range(0, len(noise), MAX_IMAGES):
      z, y = noise[start:start + MAX_IMAGES], labels[start:start + MAX_IMAGES]
      num = len(z)
      pad = bucket(num) - num
      z = np.concatenate([z, np.zeros([pad, z.shape[1]], np.float32)])
      y = np.concatenate([y, np.zeros([pad], np.int32)]).astype(np.int32)
      # One request at a time: TensorFlow already spreads one batch over every core, and the lock makes the
      # first call of a bucket trace it once even when requests arrive together.
      with self._lock:
        result = self._generate(tf.constant(z), tf.constant(y))
      out.append(result.numpy()[:num])
    return np.concatenate(out)


def grid_columns(num: int, num_classes: int = 0) -> int:
  """Columns of a grid of `num` images: one per class when the images cycle through `num_classes` classes (and
  fill a row), else a near-square grid as `summaries.image_grid` draws it."""
  if num_classes and num >= num_classes:
    return num_classes
  return math.ceil(num / max(1, math.floor(math.sqrt(num))))


def tile(images: np.ndarray, columns: int, scale: int = 1) -> np.ndarray:
  """uint8 images [N, H, W, C] -> one uint8 grid [rows * H * scale, columns * W * scale, C], empty cells black."""
  rows = math.ceil(len(images) / columns)
  padded = np.concatenate([images, np.zeros((rows * columns - len(images),) + images.shape[1:], np.uint8)])
  grid = summaries.image_grid(padded, rows)
  if scale > 1:
    grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)
  return grid


def from_workdir(workdir: str, step: Optional[int] = None) -> ServedModel:
  """The (EMA) generator of a trained workdir's latest (or step-`step`) checkpoint, as the exports hold it."""
  cfg, state = sample_lib.load_workdir(workdir, step)
  generator = export_lib.inference_generator(state.sampling_generator)
  gan = state.gan

  def images_fn(noise, labels):
    return export_lib.to_uint8(gan.generate(noise, labels, generator=generator))

  return ServedModel(images_fn, dict(export_lib.model_facts(cfg, state), source="workdir"))


def from_saved_model(path: str) -> ServedModel:
  """A SavedModel written by `python -m gan_dist.export`, through its `serving_default` signature."""
  if not tf.io.gfile.exists(f"{path.rstrip('/')}/saved_model.pb"):
    raise FileNotFoundError(f"{path}/saved_model.pb not found: --saved_model takes the directory that "
                            "`python -m gan_dist.export` wrote")
  facts = export_lib.read_facts(path)
  loaded = tf.saved_model.load(path)
  serving = loaded.signatures["serving_default"]

  def images_fn(noise, labels):
    inputs = dict(noise=noise, labels=labels) if facts["conditional"] else dict(noise=noise)
    return serving(**inputs)["images"]

  model = ServedModel(images_fn, dict(facts, source="saved_model"))
  model.loaded = loaded  # The signature's variables live as long as the loaded object.
  return model
