"""The generator behind the demo: a trained workdir or a SavedModel export, its facts, and bucketed generation.

Inputs are `sampling.inputs`: image i of seed s is the same whatever the number of images asked for, and
`python -m gan_dist.sample --seed=s` draws the same noise and labels. The generator is the exports' float32 copy, so
a float32 run's demo, exports and `gan_dist.sample` give the same bytes; a mixed-precision run's `gan_dist.sample`
(and Python API) computes in float16 or bfloat16: rounding apart (a 20-step cgan_mlp: at most 1 level of 255 in
float16, 3 in bfloat16). Batches are padded to the next bucket (1, 2, 4, ..., 64) so that generation is traced once
per bucket, never per request: each bucket gets its own concrete function, traced on the bucket's first request. One
tf.function called with all 7 buckets' shapes would trace as often, but TensorFlow would take those traces for
accidental retracing and log a warning that reads like a bug. `trace_counts` records each trace so that tests can
check it.
"""

import math
import threading
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

from gan_dist import exporter
from gan_dist import inference
from gan_dist import sampling

MAX_IMAGES = 64
BUCKETS = tuple(2 ** i for i in range(int(math.log2(MAX_IMAGES)) + 1))  # 1, 2, 4, ..., 64.


def bucket(num: int) -> int:
  """The smallest bucket holding `num` images (1 <= num <= MAX_IMAGES)."""
  return next(b for b in BUCKETS if b >= num)


class ServedModel:
  """A generator that turns (noise, labels) into uint8 images, thread-safely, one trace per batch bucket.

  Args:
    images_fn: (noise float32 [B, latent_dim], labels int32 [B]) -> uint8 images [B, H, W, C]; TensorFlow ops,
      traced inside a tf.function. Unconditional models ignore the labels.
    facts: `inference.facts(...)` of the model (arch, dataset, step, ema, image_shape, conditional, num_classes,
      latent_dim, ...), and its `source` ("workdir" or "saved_model").
  """

  def __init__(self, images_fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor], facts: dict):
    self.facts = dict(facts)
    self._images_fn = images_fn
    self._lock = threading.Lock()
    self.trace_counts: Dict[int, int] = {}
    self._generators: Dict[int, Callable[[tf.Tensor, tf.Tensor], tf.Tensor]] = {}

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

  @property
  def truncation(self) -> float:
    """The run's --truncation (0: none), the demo's default; 0 for exports written before it was a fact."""
    return float(self.facts.get("truncation", 0.0))

  def _traced(self, noise, labels):
    # Python code here runs only while TensorFlow traces: it counts traces, not calls.
    size = int(noise.shape[0])
    self.trace_counts[size] = self.trace_counts.get(size, 0) + 1
    return self._images_fn(noise, labels)

  def _generator(self, size: int) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """The generation function of bucket `size`, traced on first use: (noise float32 [size, latent_dim], labels
    int32 [size]) -> uint8 images [size, H, W, C]. Callers hold `_lock`.
    """
    if size not in self._generators:
      # A concrete function cannot retrace (another shape is an error, not a new trace), and neither
      # get_concrete_function nor its calls go through TensorFlow's frequent-retracing detector.
      signature = (tf.TensorSpec([size, self.latent_dim], tf.float32), tf.TensorSpec([size], tf.int32))
      self._generators[size] = tf.function(self._traced, autograph=False).get_concrete_function(*signature)
    return self._generators[size]

  def inputs(self, num: int, seed: int, label: Optional[int] = None, *,
             truncation: float) -> Tuple[np.ndarray, np.ndarray]:
    """`sampling.inputs` of a grid: noise float32 [num, latent_dim] (truncated to [-truncation, truncation] when >
    0), labels int32 [num].

    Labels: all `label`, or (None) image i has class i mod num_classes (zeros for unconditional models).
    """
    return sampling.inputs(num, self.latent_dim, self.num_classes, seed, label, truncation=truncation)

  def walk_inputs(self, seed_a: int, seed_b: int, frames: int, label: Optional[int] = None, *,
                  truncation: float) -> Tuple[np.ndarray, np.ndarray]:
    """A latent walk (`sampling.slerp`) from the first image of seed_a's grid to the first of seed_b's (both of
    that `truncation`).

    Returns:
      noise float32 [frames, latent_dim]; labels int32 [frames], all `label` (None: 0, the class of a grid's
      first image).
    """
    a = sampling.noise(1, self.latent_dim, seed_a, truncation)[0]
    b = sampling.noise(1, self.latent_dim, seed_b, truncation)[0]
    noise = sampling.slerp(a, b, np.linspace(0.0, 1.0, frames)).astype(np.float32)
    labels = np.zeros([frames], np.int32) if label is None else sampling.labels(frames, self.num_classes, label)
    return noise, labels

  def images(self, noise: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """uint8 images [N, H, W, C] of noise float32 [N, latent_dim] and labels int32 [N]."""
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
        result = self._generator(len(z))(tf.constant(z), tf.constant(y))
      out.append(result.numpy()[:num])
    return np.concatenate(out)


def from_workdir(workdir: str, step: Optional[int] = None, best: bool = False) -> ServedModel:
  """The generator of a trained workdir's latest (step-`step`, or best) checkpoint, as the exports hold it (the EMA
  copy if the run kept one, `inference.float32_copy`), so a workdir and its export serve the same images."""
  run = inference.load(workdir, step, best)
  generator = inference.float32_copy(run.generator)
  gan = run.gan

  def images_fn(noise, labels):
    return sampling.to_uint8(gan.generate(noise, labels, generator=generator))

  return ServedModel(images_fn, dict(inference.facts(run), source="workdir"))


def from_saved_model(path: str) -> ServedModel:
  """A SavedModel written by `python -m gan_dist.export`, through its `serving_default` signature.

  Raises:
    FileNotFoundError: `path` is not such an export.
  """
  if not tf.io.gfile.exists(f"{path.rstrip('/')}/saved_model.pb"):
    raise FileNotFoundError(f"{path}/saved_model.pb not found: --saved_model takes the directory that "
                            "`python -m gan_dist.export` wrote")
  facts = exporter.read_facts(path)
  loaded = tf.saved_model.load(path)
  serving = loaded.signatures["serving_default"]

  def images_fn(noise, labels):
    # The signature of an unconditional export has no labels input (see exporter.serving_function).
    inputs = dict(noise=noise, labels=labels) if facts["conditional"] else dict(noise=noise)
    return serving(**inputs)["images"]

  model = ServedModel(images_fn, dict(facts, source="saved_model"))
  model.loaded = loaded  # The signature's variables live as long as the loaded object.
  return model
