"""The evaluator the trainer, `gan_dist.evaluate` and `benchmarks/quality.py` share.

  evaluator = Evaluator(cfg, strategy, gan)       # every worker, after the state exists
  metrics = evaluator(generator, step)            # every worker, at the same steps; the same dict everywhere
  evaluator.floors                                # the same figures for real test images (the real-data floor)

Construction loads or trains the feature network of the dataset at the generator's image shape
(`gan_dist.eval.features`, cached under --eval_cache_dir; only the chief writes there, the other workers load it or
train the same network in memory), and the features of --eval_num real images of the train split (the reference)
and of the test split (the floor), cached too, as `<cache>/features/<network>-<shape>-<data hash>-n<N>.npz`. With
--inception_weights, the same for Inception-v3 (FID and IS).

A call generates --eval_num images with `strategy.run` on every replica, each replica its share: sample i has
noise row i of a RandomState seeded by (--seed, EVAL_NOISE_STREAM) (truncated with --truncation) and label i mod K,
whatever the number of replicas and workers, so the metrics do not depend on the topology (up to the last bits of a
convolution on another batch size). Features and logits are computed on the replicas, gathered (`strategy.gather`)
so that every worker holds all of them, and the metrics computed on the host. In a multi-worker run the metric
values of replica 0 are then shared by one all-gather, so that every worker returns bitwise the same dict (a worker
deciding differently whether a checkpoint is the best would enter a collective alone). Nothing depends on being the
chief except cache writes.

Metrics (plain floats): fcd, kid, kid_std, classifier_score, precision, recall; conditional models also
label_accuracy and label_accuracy/<k> for every class k; with --eval_data_dir also memorization (the share of
samples nearer to a training image than to a held-out one); with --inception_weights also fid and inception_score.
See `gan_dist.eval.metrics` for their definitions.
"""

import io
import math
from typing import Callable, Dict, List, Optional, Tuple

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from gan_dist import data
from gan_dist import errors
from gan_dist import files
from gan_dist import sampling
from gan_dist import strategy as strategy_lib
from gan_dist.eval import features as features_lib
from gan_dist.eval import inception as inception_lib
from gan_dist.eval import metrics as metrics_lib

# Images generated per replica per call of the distributed function (bounds memory; sample order is unaffected).
EVAL_BATCH_PER_REPLICA = 250
# Second word of the evaluation noise's seed, so that it differs from the sample grids' noise of the same --seed.
EVAL_NOISE_STREAM = 0xE7A1


class _Extractor:
  """One feature network (variables replicated under the strategy), its cache identity and its reference.

  Args:
    name: "classifier" or "inception".
    model: images float32 [B, H, W, C] -> (features [B, F], logits [B, K]).
    cache_id: names its real-image features in the cache (network and weights).
    full: all metrics (the classifier), or only FID and IS (Inception: see `metrics.Reference`).
  """

  def __init__(self, name: str, model: keras.Model, cache_id: str, full: bool):
    self.name, self.model, self.cache_id, self.full = name, model, cache_id, full
    # Traced once for every batch size, and called both on real images (cross-replica context: the replicas'
    # variables are equal) and inside the replicas' function on generated ones.
    self.predict = tf.function(lambda images: model(images, training=False), autograph=False,
                               input_signature=[tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)])
    self.reference: Optional[metrics_lib.Reference] = None


def features_cache_path(cfg, cache_id: str, source: data.DataSource, image_shape) -> str:
  """Where the real-image features of `source` by the network `cache_id` are cached."""
  shape = "x".join(str(int(d)) for d in image_shape)
  return (f"{features_lib.cache_root(cfg)}/features/{cache_id}-{shape}-{features_lib.data_hash(source)}"
          f"-n{source.num_examples}.npz")


def real_features(cfg, extractor: _Extractor, source: data.DataSource, image_shape, write: bool,
                  agree: Callable[[bool], bool]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(features float32 [N, F], logits float32 [N, K], labels int32 [N]) of every image of `source`: from the cache
  if `agree` says so, else computed (and cached if `write`)."""
  path = features_cache_path(cfg, extractor.cache_id, source, image_shape)
  if agree(tf.io.gfile.exists(path)):
    arrays = np.load(io.BytesIO(files.read_bytes(path)))
    return arrays["features"], arrays["logits"], arrays["labels"]
  logging.info("Computing %s features of %d real images of %s", extractor.name, source.num_examples, source.name)
  found = features_lib.predict(extractor.predict, source, image_shape)
  if write:
    buffer = io.BytesIO()
    np.savez(buffer, features=found[0], logits=found[1], labels=found[2])
    files.write_atomic(path, buffer.getvalue())
  return found


class Evaluator:
  """Sample-quality metrics of a generator, computed on every replica of `strategy` (see the module docstring).

  Args:
    cfg: the run's Config (dataset, data_dir, class_filter, seed, eval_num, eval_cache_dir, inception_weights).
    strategy: the run's strategy; the evaluator's networks are replicated under its scope.
    gan: the run's Gan (image_shape, latent_dim, conditional, num_classes, generate).

  Attributes:
    num: samples per evaluation (--eval_num).
    floors: the metrics of `num` real test images against the reference (label_accuracy: the classifier's
      accuracy on them), i.e. the best a generator can be expected to score with this many samples.
    feature_net: the dataset's `features.FeatureNet` (supervised or contrastive; test accuracy, checksum).

  Raises:
    errors.UserError: a conditional model on data without labels, or too few images.
  """

  def __init__(self, cfg, strategy: tf.distribute.Strategy, gan):
    self.cfg, self.strategy, self.gan = cfg, strategy, gan
    self.num = cfg.eval_num
    self._multi_worker = strategy_lib.task(strategy)[0] is not None
    write = strategy_lib.is_chief(strategy)
    image_shape = tuple(gan.image_shape)
    train, test = features_lib.splits(cfg, apply_class_filter=True)
    reference_set = features_lib.spread_subset(train, self.num, salt=1)
    floor_set = features_lib.spread_subset(test, self.num, salt=2)
    if cfg.eval_data_dir:
      # Held-out images: the reference; the training images (all of them, not a split) are scored as the floor.
      # (open_source applies --class_filter.)
      held_out = data.open_source(cfg.replace(dataset="folder", data_dir=cfg.eval_data_dir))
      trained = data.open_source(cfg)
      reference_set = features_lib.spread_subset(held_out, self.num, salt=1)
      floor_set = features_lib.spread_subset(trained, self.num, salt=2)
    # The real sets hold at most `num` images: fewer where the data has fewer (e.g. MNIST's 10,000 test images).
    self.num_reference, self.num_floor = reference_set.num_examples, floor_set.num_examples
    if min(self.num_reference, self.num_floor) < self.num:
      logging.warning("--eval_num=%d: the reference holds %d real images and the floor %d (all there are)",
                      self.num, self.num_reference, self.num_floor)
    least = metrics_lib.PR_NEIGHBOURS + 1  # k-NN precision and recall need more real images than neighbours.
    if min(self.num_reference, self.num_floor) < least:
      raise errors.UserError(
          f"too few real images to evaluate on: {self.num_reference} in the reference, {self.num_floor} in the floor "
          f"({floor_set.name}); the metrics need at least {least} in each: add images (a folder holds out "
          f"{features_lib.HOLDOUT_FRACTION:.0%} of them for the floor) or give held-out ones with --eval_data_dir")
    self._memorization = None  # (training-image features, held-out features) with --eval_data_dir.
    self.extractors: List[_Extractor] = []
    if gan.conditional and train.num_classes < 2:
      raise errors.UserError("a conditional model needs a labelled dataset to check its labels on")
    # A wrong --inception_weights is refused before the feature network may train (minutes).
    inception_checksum = inception_lib.weights_checksum(cfg.inception_weights) if cfg.inception_weights else ""
    self.feature_net = features_lib.load_or_train(cfg, image_shape, write=write, agree=self._agree)
    with strategy.scope():
      replicated = features_lib.build(image_shape, self.feature_net.num_classes, self.feature_net.info["seed"])
    replicated.set_weights(self.feature_net.model.get_weights())
    self.extractors.append(_Extractor("classifier", replicated, f"classifier-{self.feature_net.checksum}", full=True))
    if cfg.inception_weights:
      with strategy.scope():
        replicated = inception_lib.build(cfg.inception_weights, image_shape)
      self.extractors.append(_Extractor("inception", replicated, f"inception-{inception_checksum}", full=False))

    floors: Dict[str, float] = {}
    for extractor in self.extractors:
      ref_features, _, _ = real_features(cfg, extractor, reference_set, image_shape, write, self._agree)
      extractor.reference = metrics_lib.Reference(ref_features, full=extractor.full)
      test_features, test_logits, test_labels = real_features(cfg, extractor, floor_set, image_shape, write,
                                                              self._agree)
      floors.update(extractor.reference.compare(test_features, test_logits))
      if extractor.name == "classifier" and gan.conditional:
        floors.update(label_metrics(test_logits, test_labels, gan.num_classes))
      if extractor.name == "classifier" and cfg.eval_data_dir:
        self._memorization = (test_features, ref_features)
        floors["memorization"] = metrics_lib.memorization(ref_features, test_features, ref_features,
                                                          leave_one_out=True)
    self.floors = {k: float(v) for k, v in floors.items()}
    self._functions = {}
    logging.info("Evaluator ready (%d samples per evaluation); real-data floor: %s", self.num,
                 format_metrics(self.floors))

  def _agree(self, found: bool) -> bool:
    """Whether to use a cache entry: here if found; in a multi-worker run only if every worker found it (one
    all-gather), so that either all load it or all compute it. A worker computing for a minute what the others
    load in a second would leave them waiting in their next collective past --peer_timeout_s."""
    if not self._multi_worker:
      return found
    return bool(strategy_lib.gather_rows(self.strategy, np.array([1.0 if found else 0.0])).min() > 0)

  def _distributed_fn(self, generator: keras.Model) -> Callable:
    """tf.function (per-replica noise, labels) -> (finite [n] float32: 1 where every pixel of the image is finite,
    features, logits of every extractor) of all replicas' n images, gathered in replica order.

    Gathered inside the function: an eager `strategy.gather` of a multi-worker strategy traces a function of its own
    at every call (TensorFlow warned of retracing from the fifth)."""
    key = id(generator)
    if key not in self._functions:
      gan, extract = self.gan, [e.predict for e in self.extractors]

      def replica_fn(noise, labels):
        images = tf.cast(gan.generate(noise, labels, training=False, generator=generator), tf.float32)
        # Checked on the images, not on the features: the CPU's fused Conv/ReLU/MaxPool kernels turn NaN pixels into
        # finite features (every all-NaN image got the same ones, scored as an image). float32: gathered anywhere.
        finite = tf.cast(tf.reduce_all(tf.math.is_finite(tf.reshape(images, [tf.shape(images)[0], -1])), axis=1),
                         tf.float32)
        outputs = [finite]
        for predict in extract:
          features, logits = predict(images)
          outputs += [features, logits]
        return tuple(outputs)

      @tf.function(autograph=False)
      def run(noise, labels):
        outputs = self.strategy.run(replica_fn, args=(noise, labels))
        return [self.strategy.gather(o, axis=0) for o in outputs]

      self._functions[key] = (generator, run)  # Holding the generator keeps id() unique while the entry lives.
    return self._functions[key][1]

  def sample_inputs(self, total: int, truncation: float) -> Tuple[np.ndarray, np.ndarray]:
    """Noise float32 [total, latent_dim] (truncated to [-truncation, truncation] when > 0, `sampling.truncate`)
    and labels int32 [total]: row i depends on (--seed, i) only."""
    noise = np.random.RandomState([self.cfg.seed % 2**32, EVAL_NOISE_STREAM]).standard_normal(
        (total, self.gan.latent_dim)).astype(np.float32)
    return sampling.truncate(noise, truncation), sampling.labels(total, self.gan.num_classes)

  def generated_outputs(self, generator: keras.Model, truncation: float) -> Tuple[List[np.ndarray], np.ndarray]:
    """([features_0 [num, F0], logits_0 [num, K0], features_1, ...] of `num` generated images, their labels int32
    [num]), on every worker. The features and logits of an image with a NaN or inf pixel are NaN, so that the
    figures of such a generator are NaN (`metrics`), not those of whatever the networks made of it."""
    strategy = self.strategy
    replicas = strategy.num_replicas_in_sync
    per_replica = min(EVAL_BATCH_PER_REPLICA, math.ceil(self.num / replicas))
    chunk = per_replica * replicas
    chunks = math.ceil(self.num / chunk)
    noise, labels = self.sample_inputs(chunks * chunk, truncation)
    run = self._distributed_fn(generator)
    parts = []
    for c in range(chunks):
      def slice_of(array, base=c * chunk):
        return lambda ctx: tf.constant(array[base + ctx.replica_id_in_sync_group * per_replica:
                                             base + (ctx.replica_id_in_sync_group + 1) * per_replica])
      outputs = run(strategy.experimental_distribute_values_from_function(slice_of(noise)),
                    strategy.experimental_distribute_values_from_function(slice_of(labels)))
      # Replica order is sample order: replica r of chunk c holds samples c*chunk + r*per_replica + [0, per_replica).
      parts.append([np.asarray(o) for o in outputs])
    gathered = [np.concatenate([p[i] for p in parts])[:self.num] for i in range(len(parts[0]))]
    bad = gathered.pop(0) < 0.5
    if bad.any():
      logging.warning("%d of %d generated images have NaN or inf pixels: the figures of this evaluation are NaN",
                      int(bad.sum()), self.num)
      for array in gathered:
        array[bad] = np.nan
    return gathered, labels[:self.num]

  def __call__(self, generator: keras.Model, step: Optional[int] = None,
               truncation: Optional[float] = None) -> Dict[str, float]:
    """Metrics of `generator` (e.g. `state.sampling_generator`; call `state.prepare_ema()` first). All workers.

    Args:
      generator: a generator of the evaluator's Gan (the model itself or its EMA copy).
      step: logged with the figures when given.
      truncation: the noise's truncation (`sampling.truncate`); None: the Config's --truncation.

    Returns:
      {metric name: float}, bitwise the same on every worker.
    """
    outputs, labels = self.generated_outputs(generator, self.cfg.truncation if truncation is None else truncation)
    found: Dict[str, float] = {}
    for i, extractor in enumerate(self.extractors):
      features, logits = outputs[2 * i], outputs[2 * i + 1]
      found.update(extractor.reference.compare(features, logits))
      if extractor.name == "classifier" and self.gan.conditional:
        found.update(label_metrics(logits, labels, self.gan.num_classes))
      if extractor.name == "classifier" and self._memorization is not None:
        found["memorization"] = metrics_lib.memorization(features, *self._memorization)
    names = sorted(found)
    values = np.array([found[n] for n in names], np.float64)
    if self._multi_worker:
      values = strategy_lib.gather_rows(self.strategy, values)[0]  # Replica 0's figures on every worker.
    found = {n: float(v) for n, v in zip(names, values)}
    if step is not None:
      logging.info("Evaluation at step %d: %s", step, format_metrics(found))
    return found


def label_metrics(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> Dict[str, float]:
  """{"label_accuracy": overall, "label_accuracy/<k>": of class k} of logits [N, K] for requested labels [N]."""
  overall, per_class = metrics_lib.label_accuracy(logits, labels, num_classes)
  found = {"label_accuracy": overall}
  found.update({f"label_accuracy/{k}": float(v) for k, v in enumerate(per_class)})
  return found


def format_metrics(metrics: Dict[str, float]) -> str:
  """One line of the main figures, e.g. "fcd 3.37  kid 0.147" (per-class accuracies left out)."""
  return "  ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items()) if "/" not in k)
