"""The feature network of a dataset: one small CNN per dataset and image shape, trained by gan_dist itself.

  net = features.load_or_train(cfg, (28, 28, 1))     # from --eval_cache_dir, or trained once and cached
  f, logits, labels = features.predict(net.model, source, (28, 28, 1))

Evaluation metrics (`gan_dist.eval.metrics`) use its penultimate layer (128 features) and its logits, the way FID
and IS use Inception-v3's pool3 features and logits, but with no download: the network is a function of the data,
the image shape and the fixed procedure below, so anyone can rebuild it and check its checksum.

Network, for images [B, H, W, C] in [-1, 1] at the generator's image shape:
  [Conv2D 3x3 same, ReLU, MaxPool 2] with 32, 64 filters, then 128 filters while the side is above 8
  (28 -> 14 -> 7; 32 -> 16 -> 8; 64 -> 32 -> 16 -> 8) -> Flatten -> Dense 128 ReLU = features -> Dropout 0.5
  -> Dense K = logits. Always float32 (a run's mixed-precision policy is not inherited).
Procedure, by `kind(image_shape, num_classes)`:
  "supervised" (greyscale images with at least 2 classes, e.g. MNIST; PROCEDURE): Adam(1e-3), batch 128, EPOCHS
  epochs of the train split in an order drawn from RandomState(seed + epoch); the logits learn the labels.
  "contrastive" (colour images, or no classes; CONTRASTIVE_PROCEDURE): `eval.contrastive`'s SimCLR loss on two
  augmented views of each image, plus the label cross-entropy where there are >= 2 classes; Adam(1e-3), batch
  CONTRASTIVE_BATCH, CONTRASTIVE_STEPS steps, epochs in orders drawn from RandomState(seed + epoch). A classifier
  of a small colour folder tells its classes apart by colour and layout and scores textures as real; the contrastive
  features describe each image (see `eval.contrastive`). Without classes, the logits are one constant class.
  Both: weights initialised from `seed` (0); the last partial batch of an epoch is dropped; images are read and made
  into the image shape by the data layer, as for training. A dataset without a test split (a folder) holds out a
  fixed random 10% as its test split.

Cache (`cache_root(cfg)`, i.e. --eval_cache_dir): `classifier/<key>/weights.npz` and `info.json`, info written last
(its presence means the entry is complete; both through `files.write_atomic`, so processes filling the same cache
at once do not collide). The key is the dataset's name, the image shape, a hash of the train split (its bytes when
in memory, else its files and labels; so another data set under the same name is not mistaken for it) and the
procedure version. An entry whose weights do not match the checksum in its info.json is refused.

Reproducibility: the initial weights, dropout masks and data order are functions of the seed; TensorFlow's CPU
kernels run in a fixed order for a fixed thread count, so the checksum repeats on the same machine; on other
hardware the last bits may differ (the accuracy, not the checksum, is the portable figure).
"""

import dataclasses
import hashlib
import io
import json
import math
import os
import re
from typing import Callable, Optional, Tuple

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from gan_dist import data
from gan_dist import errors
from gan_dist import files
from gan_dist.eval import contrastive

# Bump when the network or the procedure changes: cached networks of another version are not reused.
PROCEDURE_VERSION = 1
EPOCHS = 2
BATCH_SIZE = 128
LEARNING_RATE = 1e-3
FEATURE_DIM = 128
PROCEDURE = dict(version=PROCEDURE_VERSION, epochs=EPOCHS, batch_size=BATCH_SIZE, learning_rate=LEARNING_RATE,
                 feature_dim=FEATURE_DIM)
CONTRASTIVE_VERSION = 1
# 300 steps of 128 images (256 views): ~3 minutes at 64x64x3 on a 2-core CPU; the figures of `benchmarks/
# feature_check.py` (broken sample sets against real ones) were measured with these.
CONTRASTIVE_STEPS = 300
CONTRASTIVE_BATCH = 128
CONTRASTIVE_PROCEDURE = dict(kind="contrastive", version=CONTRASTIVE_VERSION, steps=CONTRASTIVE_STEPS,
                             batch_size=CONTRASTIVE_BATCH, learning_rate=LEARNING_RATE, feature_dim=FEATURE_DIM,
                             temperature=contrastive.TEMPERATURE, projection_dim=contrastive.PROJECTION_DIM)
# Test images of the view-match accuracy (`contrastive.view_match_accuracy`) written to info.json.
VIEW_MATCH_IMAGES = 500
# Share of a train split held out as the test split when the dataset has no test split of its own.
HOLDOUT_FRACTION = 0.1
# Images per forward pass when predicting (bounds memory only; results do not depend on it).
PREDICT_BATCH = 500

ImageShape = Tuple[int, int, int]


def kind(image_shape: ImageShape, num_classes: int) -> str:
  """"supervised" for greyscale images with >= 2 classes, else "contrastive" (see the module docstring)."""
  return "supervised" if int(image_shape[-1]) == 1 and num_classes >= 2 else "contrastive"


@dataclasses.dataclass
class FeatureNet:
  """A trained feature network and what identifies it.

  Attributes:
    model: images float32 [B, H, W, C] in [-1, 1] -> (features float32 [B, FEATURE_DIM], logits float32 [B, K]).
    key: cache key: dataset name, image shape, data hash, procedure version.
    num_classes: K.
    image_shape: (H, W, C) it takes.
    test_accuracy: accuracy on the test split, in [0, 1].
    checksum: 16 hex digits of the sha256 of its weights.
    info: everything above and the procedure, as written to info.json.
  """

  model: keras.Model
  key: str
  num_classes: int
  image_shape: ImageShape
  test_accuracy: float
  checksum: str
  info: dict


def build(image_shape: ImageShape, num_classes: int, seed: int = 0) -> keras.Model:
  """The feature network (see the module docstring), its initial weights and dropout a function of `seed`."""
  previous = keras.config.dtype_policy()
  keras.config.set_dtype_policy("float32")
  try:
    def init(i):
      return keras.initializers.GlorotUniform(seed=seed * 1000 + i)

    images = keras.Input(tuple(image_shape), name="images")
    x, side, i = images, image_shape[0], 0
    for filters in (32, 64, 128, 128, 128):
      if filters == 128 and side <= 8:
        break
      x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", kernel_initializer=init(i))(x)
      x = keras.layers.MaxPooling2D()(x)
      side, i = (side + 1) // 2, i + 1
    x = keras.layers.Flatten()(x)
    features = keras.layers.Dense(FEATURE_DIM, activation="relu", kernel_initializer=init(i), name="features")(x)
    x = keras.layers.Dropout(0.5, seed=seed * 1000 + 999)(features)
    logits = keras.layers.Dense(num_classes, kernel_initializer=init(i + 1), name="logits")(x)
    return keras.Model(images, [features, logits], name="feature_net")
  finally:
    keras.config.set_dtype_policy(previous)


def checksum(model: keras.Model) -> str:
  """16 hex digits of the sha256 of the weights (float32, little-endian, in order)."""
  digest = hashlib.sha256()
  for w in model.get_weights():
    digest.update(np.ascontiguousarray(w, dtype="<f4").tobytes())
  return digest.hexdigest()[:16]


def data_hash(source: data.DataSource) -> str:
  """12 hex digits identifying a split's content: its labels, and the bytes of an in-memory split (IDX, whatever its
  path), else its name and size, and a folder's file paths."""
  digest = hashlib.sha256()
  labels = np.ascontiguousarray(source.example_labels(), dtype="<i4")
  digest.update(labels.tobytes())
  if isinstance(source, data.IdxSource):
    images = source.images
    digest.update(str(images.shape).encode())
    digest.update(np.ascontiguousarray(images).tobytes())
  else:
    digest.update(f"{type(source).__name__}|{source.name}|{source.num_examples}".encode())
    if isinstance(source, data.FolderSource):
      digest.update("\n".join(source.path(i) for i in range(source.num_examples)).encode())
  return digest.hexdigest()[:12]


def spread_subset(source: data.DataSource, num: Optional[int], salt: int = 0) -> data.DataSource:
  """`source` restricted to `num` examples spread evenly at random over it (a fixed choice for a `salt`, kept in
  order), or `source` itself if it has no more. A folder lists its examples class by class: its first `num` would
  be a few classes only."""
  if num is None or num >= source.num_examples:
    return source
  keep = np.sort(np.random.RandomState(salt).choice(source.num_examples, num, replace=False)).astype(np.int64)
  return source.filtered(keep, f"{source.name}, {num} examples")


def holdout(source: data.DataSource) -> Tuple[data.DataSource, data.DataSource]:
  """(train, test): a fixed random HOLDOUT_FRACTION (at least one example) of `source` as test split, the rest as
  train split; both keep the source's order."""
  count = source.num_examples
  order = np.random.RandomState(0x7E57).permutation(count)
  cut = max(1, int(round(count * HOLDOUT_FRACTION)))
  test = np.sort(order[:cut]).astype(np.int64)
  train = np.sort(order[cut:]).astype(np.int64)
  return (source.filtered(train, f"{source.name}, {len(train)} examples (test split held out)"),
          source.filtered(test, f"{source.name}, {len(test)} examples held out as test split"))


def splits(cfg, apply_class_filter: bool = False) -> Tuple[data.DataSource, data.DataSource]:
  """(train, test) sources of `cfg`'s dataset, every class unless `apply_class_filter` (the feature network learns
  all classes; the real-data statistics of a --class_filter run are those of its class).

  A dataset without a test split (a folder of images, a TFDS dataset with only "train") gets a fixed random
  HOLDOUT_FRACTION of its train split as test split.

  Raises:
    errors.UserError (data.DataError): the dataset cannot be opened.
  """
  full = cfg.replace(class_filter=-1)
  train = data.open_source(full, "train")
  test = None
  if cfg.dataset not in ("folder", "packed"):  # A folder (or its pack) is one split, whatever the split asked for.
    try:
      test = data.open_source(full, "test")
    except data.DataError:
      pass
  if test is None:
    train, test = holdout(train)
  if apply_class_filter and cfg.class_filter >= 0:
    train, test = (s.filtered(np.flatnonzero(s.example_labels() == cfg.class_filter).astype(np.int64),
                              f"{s.name}, class {cfg.class_filter} only") for s in (train, test))
  return train, test


def training_splits(cfg) -> Tuple[data.DataSource, data.DataSource]:
  """`splits(cfg)` with at least one example in each.

  Raises:
    errors.UserError: the dataset is too small to hold out a test split.
  """
  train, test = splits(cfg)
  if train.num_examples < 2:
    raise errors.UserError(f"--dataset={cfg.dataset} has {train.num_examples + test.num_examples} example(s): too "
                           "few to train a feature network on")
  return train, test


def cache_key(name: str, image_shape: ImageShape, train_source: data.DataSource,
              max_examples: Optional[int] = None, steps: Optional[int] = None) -> str:
  """E.g. "mnist-28x28x1-0123456789ab-v1", "faces-64x64x3-0123456789ab-contrastive-v1"; contrastive `steps` other
  than CONTRASTIVE_STEPS add "-steps<N>", `max_examples` (tests) "-first<N>": such networks differ."""
  safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "data"
  version = (f"v{PROCEDURE_VERSION}" if kind(image_shape, train_source.num_classes) == "supervised" else
             f"contrastive-v{CONTRASTIVE_VERSION}")
  key = f"{safe}-{'x'.join(str(int(d)) for d in image_shape)}-{data_hash(train_source)}-{version}"
  if version.startswith("contrastive") and steps and steps != CONTRASTIVE_STEPS:
    key += f"-steps{int(steps)}"
  return key if max_examples is None else f"{key}-first{max_examples}"


def cache_root(cfg) -> str:
  """The evaluation cache directory of `cfg` (--eval_cache_dir; a leading ~ is the home directory)."""
  root = cfg.eval_cache_dir
  return os.path.expanduser(root) if root.startswith("~") else root.rstrip("/")


def net_dir(cfg, key: str) -> str:
  """The cache entry of the network `key`: `<cache_root>/classifier/<key>`."""
  return f"{cache_root(cfg)}/classifier/{key}"


def _rows(indices: np.ndarray, batch_size: int) -> tf.data.Dataset:
  """Rows (indices [b], flips [b]) for `DataSource.batches`: consecutive `batch_size` slices of `indices`."""
  return tf.data.Dataset.from_tensor_slices(indices.astype(np.int64)).batch(batch_size).map(
      data.graph_fn(lambda i: (i, tf.zeros_like(i, tf.bool))))


def _inference_fn(model) -> Callable:
  """A Keras feature network in inference mode as a tf.function; any other callable as it is."""
  return tf.function(lambda x: model(x, training=False), autograph=False) if isinstance(model, keras.Model) else model


def predict(model, source: data.DataSource, image_shape: ImageShape, num: Optional[int] = None
            ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(features float32 [N, F], logits float32 [N, K], labels int32 [N]) of the first `num` examples of `source`.

  Args:
    model: a feature network, or a function images -> (features, logits) (e.g. a tf.function traced once).
    source: a `data.DataSource`; its images are made into `image_shape` as for training.
    image_shape: (H, W, C) the model takes.
    num: how many examples; None: all.
  """
  run = _inference_fn(model)
  feats, logits, labels = [], [], []
  for batch in data.eval_dataset(source, tuple(image_shape), PREDICT_BATCH, num):
    f, l = run(batch["images"])
    feats.append(f.numpy())
    logits.append(l.numpy())
    labels.append(np.asarray(batch["labels"], np.int32))
  return np.concatenate(feats), np.concatenate(logits), np.concatenate(labels)


def predict_images(model, images: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """(features float32 [N, F], logits float32 [N, K]) of images float32 [N, H, W, C] in [-1, 1]."""
  run = _inference_fn(model)
  outputs = [run(tf.constant(images[i:i + PREDICT_BATCH], tf.float32)) for i in range(0, len(images), PREDICT_BATCH)]
  return (np.concatenate([np.asarray(f) for f, _ in outputs]), np.concatenate([np.asarray(l) for _, l in outputs]))


def train(train_source: data.DataSource, test_source: data.DataSource, image_shape: ImageShape, seed: int = 0,
          epochs: int = EPOCHS, max_examples: Optional[int] = None) -> Tuple[keras.Model, float]:
  """Trains the network on `train_source` by the supervised procedure; returns (model, accuracy on `test_source`).

  Args:
    train_source, test_source: `data.DataSource`s with labels (examples labelled -1, i.e. without a class, are
      left out of training and of the accuracy).
    image_shape: (H, W, C) the network takes (images are made into it as the trainer does).
    seed: initial weights, dropout masks and data order.
    epochs: passes over the train split.
    max_examples: use at most the first this many examples of each split (tests).
  """
  model = build(image_shape, int(train_source.num_classes), seed)
  optimizer = keras.optimizers.Adam(LEARNING_RATE)
  optimizer.build(model.trainable_variables)
  labels = np.asarray(train_source.example_labels())
  usable = np.flatnonzero(labels[:max_examples] >= 0)
  batch_size = min(BATCH_SIZE, len(usable))

  @tf.function(autograph=False)
  def step(images, labels):
    with tf.GradientTape() as tape:
      _, logits = model(images, training=True)
      loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
    return loss

  for epoch in range(epochs):
    order = usable[np.random.RandomState(seed + epoch).permutation(len(usable))]
    order = order[:len(order) // batch_size * batch_size]
    # Sorted within a batch: faster reads; the batch's content is the same.
    order = np.sort(order.reshape(-1, batch_size), axis=1).reshape(-1)
    for batch in train_source.batches(_rows(order, batch_size), tuple(image_shape), batch_size).prefetch(2):
      loss = step(batch["images"], batch["labels"])
    logging.info("Feature network: epoch %d/%d, last loss %.4f", epoch + 1, epochs, float(loss))
  return model, _accuracy(model, test_source, image_shape, max_examples)


def _accuracy(model: keras.Model, test_source: data.DataSource, image_shape: ImageShape,
              max_examples: Optional[int]) -> float:
  _, logits, test_labels = predict(model, test_source, image_shape, max_examples)
  has_class = test_labels >= 0
  return float(np.mean(np.argmax(logits[has_class], -1) == test_labels[has_class])) if has_class.any() else math.nan


def train_contrastive(train_source: data.DataSource, test_source: data.DataSource, image_shape: ImageShape,
                      seed: int = 0, steps: int = CONTRASTIVE_STEPS, max_examples: Optional[int] = None
                      ) -> Tuple[keras.Model, float, float]:
  """Trains the network by the contrastive procedure; returns (model, label accuracy on `test_source` (NaN without
  classes), view-match accuracy on up to VIEW_MATCH_IMAGES test images).

  Args:
    train_source, test_source: `data.DataSource`s, labelled or not (every example is trained on; those with a class
      also train the logits when there are >= 2 classes).
    image_shape: (H, W, C) the network takes.
    seed: initial weights, augmentations and data order.
    steps: optimizer steps.
    max_examples: use at most the first this many examples of each split (tests).
  """
  num_classes = int(train_source.num_classes)
  labelled = num_classes >= 2
  model = build(image_shape, max(num_classes, 1), seed)
  previous = keras.config.dtype_policy()
  keras.config.set_dtype_policy("float32")
  try:
    head = contrastive.projection_head(FEATURE_DIM, seed)
  finally:
    keras.config.set_dtype_policy(previous)
  optimizer = keras.optimizers.Adam(LEARNING_RATE)
  optimizer.build(model.trainable_variables + head.trainable_variables)
  count = min(train_source.num_examples, max_examples or train_source.num_examples)
  indices, batch_size = contrastive.batch_plan(count, CONTRASTIVE_BATCH, steps, seed)
  step = contrastive.make_step(model, head, optimizer, seed, labelled)
  batches = train_source.batches(_rows(indices, batch_size), tuple(image_shape), batch_size).prefetch(2)
  for index, batch in enumerate(batches):
    losses = step(batch["images"], batch["labels"], tf.constant(index, tf.int64))
    if index % 50 == 0 or index == steps - 1:
      logging.info("Feature network: step %d/%d, contrastive loss %.4f, label loss %.4f", index + 1, steps,
                   float(losses[0]), float(losses[1]))
  accuracy = _accuracy(model, test_source, image_shape, max_examples) if labelled else math.nan
  views = [b["images"].numpy() for b in data.eval_dataset(test_source, tuple(image_shape), PREDICT_BATCH,
                                                           min(VIEW_MATCH_IMAGES, max_examples or VIEW_MATCH_IMAGES))]
  return model, accuracy, contrastive.view_match_accuracy(model, np.concatenate(views), seed)


def train_net(cfg, image_shape: ImageShape, train_source: Optional[data.DataSource] = None,
              test_source: Optional[data.DataSource] = None, max_examples: Optional[int] = None,
              steps: Optional[int] = None) -> FeatureNet:
  """Trains the network of `cfg`'s dataset at `image_shape` (no cache involved).

  Args:
    cfg: Config (dataset, data_dir).
    image_shape: (H, W, C).
    train_source, test_source: `training_splits(cfg)` if already opened.
    max_examples: tests only: train and test on the first this many examples (the key says so).
    steps: contrastive steps instead of CONTRASTIVE_STEPS (the key says so; evaluation uses the default).
  """
  if train_source is None:
    train_source, test_source = training_splits(cfg)
  key = cache_key(cfg.dataset, image_shape, train_source, max_examples, steps)
  procedure_kind = kind(image_shape, train_source.num_classes)
  logging.info("Training the %s feature network %s on %d examples of %s", procedure_kind, key,
               min(train_source.num_examples, max_examples or train_source.num_examples), train_source.name)
  extra = {}
  if procedure_kind == "supervised":
    model, accuracy = train(train_source, test_source, image_shape, seed=0, max_examples=max_examples)
    procedure = PROCEDURE
  else:
    model, accuracy, extra["view_match_accuracy"] = train_contrastive(
        train_source, test_source, image_shape, seed=0, steps=steps or CONTRASTIVE_STEPS, max_examples=max_examples)
    procedure = dict(CONTRASTIVE_PROCEDURE, steps=steps or CONTRASTIVE_STEPS)
  info = dict(key=key, dataset=cfg.dataset, data=train_source.name, image_shape=[int(d) for d in image_shape],
              num_classes=max(int(train_source.num_classes), 1), seed=0,
              test_accuracy=None if math.isnan(accuracy) else accuracy,
              test_examples=int(min(test_source.num_examples, max_examples or test_source.num_examples)),
              checksum=checksum(model), procedure=procedure, **extra)
  view_match = f"view-match accuracy {format_accuracy(extra['view_match_accuracy'])}, " if extra else ""
  logging.info("Feature network %s: test accuracy %s, %schecksum %s", key, format_accuracy(info["test_accuracy"]),
               view_match, info["checksum"])
  return FeatureNet(model, key, info["num_classes"], tuple(image_shape), accuracy, info["checksum"], info)


def format_accuracy(value: Optional[float]) -> str:
  """An accuracy in [0, 1] as 4 decimals, or "n/a (no classes)" for None or NaN."""
  return "n/a (no classes)" if value is None or math.isnan(value) else f"{value:.4f}"


def save(net: FeatureNet, directory: str) -> None:
  """Writes `weights.npz` and `info.json` to `directory` (info last: its presence means the entry is complete)."""
  buffer = io.BytesIO()
  np.savez(buffer, *net.model.get_weights())
  files.write_atomic(f"{directory}/weights.npz", buffer.getvalue())
  files.write_atomic(f"{directory}/info.json", json.dumps(net.info, indent=1, sort_keys=True))


def load(directory: str) -> Optional[FeatureNet]:
  """The network saved in `directory`, or None if there is none (or an incomplete one).

  Raises:
    errors.UserError: the weights do not match the checksum of info.json.
  """
  info_path, weights_path = f"{directory}/info.json", f"{directory}/weights.npz"
  if not tf.io.gfile.exists(info_path) or not tf.io.gfile.exists(weights_path):
    return None
  info = json.loads(files.read_text(info_path))
  arrays = np.load(io.BytesIO(files.read_bytes(weights_path)))
  model = build(tuple(info["image_shape"]), info["num_classes"], info["seed"])
  model.set_weights([arrays[f"arr_{i}"] for i in range(len(arrays.files))])
  found = checksum(model)
  if found != info["checksum"]:
    raise errors.UserError(f"{weights_path} does not match its info.json (checksum {found}, expected "
                           f"{info['checksum']}); delete {directory} so that it is trained again")
  accuracy = math.nan if info["test_accuracy"] is None else info["test_accuracy"]
  return FeatureNet(model, info["key"], info["num_classes"], tuple(info["image_shape"]), accuracy, info["checksum"],
                    info)


def load_or_train(cfg, image_shape: ImageShape, write: bool = True, max_examples: Optional[int] = None,
                  agree: Callable[[bool], bool] = lambda found: found, steps: Optional[int] = None) -> FeatureNet:
  """The feature network of `cfg`'s dataset at `image_shape`: from the cache, or trained (and cached if `write`).

  Args:
    cfg: Config (dataset, data_dir, eval_cache_dir).
    image_shape: (H, W, C) of the generator's images.
    write: whether this process may write the cache (multi-worker runs: the chief only; the others train the same
      network in memory if it is not there yet).
    max_examples: tests only: train on this many examples (the key then differs from a full network's).
    steps: contrastive steps (see `train_net`).
    agree: called with whether the cache holds the network here; returns whether to load it (multi-worker runs:
      load only if every worker has it, so that all spend the same time and reach their next collective together).

  Raises:
    errors.UserError: the dataset is too small, the cached entry is damaged, or the cache cannot be written.
  """
  train_source, test_source = training_splits(cfg)
  key = cache_key(cfg.dataset, image_shape, train_source, max_examples, steps)
  directory = net_dir(cfg, key)
  net = load(directory) if agree(tf.io.gfile.exists(f"{directory}/info.json")) else None
  if net is not None:
    logging.info("Feature network %s loaded from %s (test accuracy %s, checksum %s)", key, directory,
                 format_accuracy(net.test_accuracy), net.checksum)
    return net
  if write:  # Checked before the training (minutes), not when its result is saved.
    files.check_writable_dir(cache_root(cfg), "--eval_cache_dir")
  net = train_net(cfg, image_shape, train_source, test_source, max_examples, steps)
  if write:
    save(net, directory)
  return net
