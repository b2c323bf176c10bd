"""Training data: MNIST-style IDX files or TensorFlow Datasets, as per-replica batches for tf.distribute.

The whole split is held in memory as uint8 (MNIST: 47 MB) and the pipeline only moves indices until the last
step, which gathers, normalises and resizes a batch. That makes the data order a pure function of (seed, step):
the global batch of step `s` is the same whichever topology trains it, and a resumed run skips to its step in
microseconds instead of replaying the input. A distributed iterator cannot be checkpointed; this is why.

Order: every epoch is a `stateless_shuffle` of all indices seeded by (seed, epoch); epoch `e` is cut into
`len // global_batch` global batches (the remainder of each epoch is dropped). Global batch `b` is split into
`num_input_pipelines` contiguous slices (one per worker; no two workers see the same examples in a step), and each
slice into per-replica batches in replica order.
"""

import dataclasses
import gzip
import os
import struct
from typing import Callable, Optional, Tuple

import numpy as np
import tensorflow as tf

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DataError(Exception):
  """A dataset cannot be found or read; the message says what to pass instead."""


@dataclasses.dataclass(frozen=True)
class DataSource:
  """A split in memory.

  Attributes:
    images: uint8 [N, H, W, C].
    labels: int32 [N].
    num_classes: classes of the dataset (also when `class_filter` kept only one).
    name: where it came from, for logs.
  """

  images: np.ndarray
  labels: np.ndarray
  num_classes: int
  name: str

  @property
  def num_examples(self) -> int:
    return len(self.labels)


def _open(path: str):
  return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def read_idx(path: str) -> np.ndarray:
  """Reads an IDX file (optionally gzipped) of unsigned bytes: images [N, H, W] or labels [N].

  Raises:
    DataError: the file is not an IDX file of uint8 data, or is truncated.
  """
  with _open(path) as f:
    header = f.read(4)
    if len(header) != 4 or header[:2] != b"\0\0":
      raise DataError(f"{path} is not an IDX file (bad magic {header!r})")
    dtype_code, ndim = header[2], header[3]
    if dtype_code != 0x08:
      raise DataError(f"{path}: only unsigned-byte IDX data is supported, got type code {dtype_code:#x}")
    shape = struct.unpack(f">{ndim}I", f.read(4 * ndim))
    data = f.read()
  expected = int(np.prod(shape))
  if len(data) != expected:
    raise DataError(f"{path}: header says {shape} = {expected} bytes, file holds {len(data)}")
  return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def find_idx_files(data_dir: str, split: str) -> Optional[Tuple[str, str]]:
  """Paths of the (images, labels) IDX files of `split` in `data_dir`, gzipped or not, or None."""
  if not data_dir or split not in IDX_FILES or not os.path.isdir(data_dir):
    return None
  found = []
  for stem in IDX_FILES[split]:
    candidates = [os.path.join(data_dir, stem + ext) for ext in (".gz", "")]
    path = next((p for p in candidates if os.path.exists(p)), None)
    if path is None:
      return None
    found.append(path)
  return found[0], found[1]


def load_idx(data_dir: str, split: str) -> DataSource:
  paths = find_idx_files(data_dir, split)
  if paths is None:
    raise DataError(f"No IDX files for split {split!r} in {data_dir}: expected {' and '.join(IDX_FILES[split])}[.gz]")
  images, labels = read_idx(paths[0]), read_idx(paths[1])
  if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
    raise DataError(f"{paths}: expected images [N, H, W] and labels [N], got {images.shape} and {labels.shape}")
  return DataSource(images[..., None], labels.astype(np.int32), int(labels.max()) + 1, f"IDX files in {data_dir}")


def load_tfds(name: str, data_dir: str, split: str) -> DataSource:
  """Loads a TFDS image dataset into memory; prepares it first if it is missing and the network allows."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (slow import, not needed for IDX)
  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
  except Exception as e:  # pylint: disable=broad-except  (TFDS raises many types for unknown names)
    raise DataError(f"Unknown TensorFlow Datasets name --dataset={name}: {str(e).splitlines()[0]}") from None
  if not builder.is_prepared():
    try:
      builder.download_and_prepare()
    except Exception as e:  # pylint: disable=broad-except  (network errors come in many types)
      raise DataError(
          f"--dataset={name} is not in --data_dir={data_dir or tfds.core.constants.DATA_DIR} and could not be "
          f"downloaded ({type(e).__name__}). Offline, pass --data_dir=DIR where DIR holds the four IDX .gz files of "
          f"MNIST or Fashion-MNIST (e.g. --data_dir=../shared/data/mnist), or a TFDS data dir prepared elsewhere."
      ) from None
  features = builder.info.features
  image_key = next((k for k in ("image", "img") if k in features), None)
  if image_key is None:
    raise DataError(f"--dataset={name} has no 'image' feature (features: {list(features)})")
  label_key = "label" if "label" in features else None
  # Read in chunks rather than batch_size=-1: that needs a known cardinality, which not every source has.
  chunks = list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False).batch(10000)))
  if not chunks:
    raise DataError(f"--dataset={name} split {split!r} is empty")
  images = np.concatenate([c[image_key] for c in chunks]).astype(np.uint8)
  if images.ndim == 3:
    images = images[..., None]
  if label_key:
    labels = np.concatenate([c[label_key] for c in chunks]).astype(np.int32)
    num_classes = int(features[label_key].num_classes)
  else:
    labels, num_classes = np.zeros(len(images), np.int32), 0
  return DataSource(images, labels, num_classes, f"TFDS {name} in {builder.data_dir}")


def load(cfg) -> DataSource:
  """Loads `cfg.split` of `cfg.dataset`: IDX files if `cfg.data_dir` holds them, otherwise TFDS.

  Raises:
    DataError: with a one-line message saying what to pass.
  """
  if find_idx_files(cfg.data_dir, cfg.split):
    source = load_idx(cfg.data_dir, cfg.split)
  elif cfg.data_dir and not os.path.isdir(cfg.data_dir):
    raise DataError(f"--data_dir={cfg.data_dir} does not exist")
  else:
    source = load_tfds(cfg.dataset, cfg.data_dir, cfg.split)
  if cfg.class_filter >= 0:
    keep = source.labels == cfg.class_filter
    if not keep.any():
      raise DataError(f"--class_filter={cfg.class_filter}: no examples of that class in {source.name}")
    source = dataclasses.replace(source, images=source.images[keep], labels=source.labels[keep],
                                 name=f"{source.name}, class {cfg.class_filter} only")
  return source


def open_source(cfg, split: Optional[str] = None) -> DataSource:
  """Opens `split` (default `cfg.split`) of the dataset that `cfg` names (see `load`)."""
  return load(cfg if split is None else dataclasses.replace(cfg, split=split))


def steps_per_epoch(num_examples: int, cfg) -> int:
  """Generator steps per epoch (each step draws `d_steps_per_g` global batches)."""
  return num_examples // cfg.batch_size // cfg.d_steps_per_g


def preprocess(images: tf.Tensor, image_shape: Tuple[int, int, int]) -> tf.Tensor:
  """uint8 [B, h, w, c] -> float32 [B, H, W, C] in [-1, 1], resized and with channels repeated as needed."""
  x = tf.cast(images, tf.float32) / 127.5 - 1.0
  height, width, channels = image_shape
  if x.shape[1] != height or x.shape[2] != width:
    x = tf.image.resize(x, (height, width), method="bilinear", antialias=True)
    x = tf.clip_by_value(x, -1.0, 1.0)
  if x.shape[-1] != channels:
    if x.shape[-1] != 1:
      raise DataError(f"Cannot turn {x.shape[-1]}-channel images into {channels} channels")
    x = tf.tile(x, [1, 1, 1, channels])
  return x


def global_batch_indices(num_examples: int, global_batch: int, seed: int, start_batch: int = 0) -> tf.data.Dataset:
  """Infinite dataset of int64 [global_batch] example indices; element b is global batch number b + start_batch."""
  per_epoch = num_examples // global_batch
  if per_epoch < 1:
    raise DataError(f"The dataset has {num_examples} examples, fewer than one global batch of {global_batch}")

  def epoch_batches(epoch):
    perm = tf.random.experimental.stateless_shuffle(tf.range(num_examples, dtype=tf.int64),
                                                    seed=tf.stack([tf.cast(seed, tf.int64), epoch]))
    return tf.data.Dataset.from_tensor_slices(tf.reshape(perm[:per_epoch * global_batch], [per_epoch, global_batch]))

  first_epoch = start_batch // per_epoch
  return (tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch_batches)
          .skip(start_batch - first_epoch * per_epoch))


def make_dataset_fn(cfg, source: DataSource, image_shape: Tuple[int, int, int],
                    start_step: int = 0) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
  """Returns the function for `strategy.distribute_datasets_from_function`.

  Args:
    cfg: the Config (batch_size is global, seed, d_steps_per_g, shuffle_files).
    source: the split in memory.
    image_shape: (H, W, C) the model trains on.
    start_step: the generator step to start from (resume); the first batch is the one that step would draw.

  Returns:
    fn(input_context) -> dataset of {"images": float32 [b, H, W, C] in [-1, 1], "labels": int32 [b]}, where
    b = batch_size / num_replicas_in_sync and consecutive elements go to consecutive local replicas.
  """
  num_examples = len(source.images)
  seed = cfg.seed if cfg.shuffle_files else None

  def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
    if cfg.batch_size % ctx.num_replicas_in_sync:
      raise DataError(f"--batch_size={cfg.batch_size} must divide evenly over {ctx.num_replicas_in_sync} replicas")
    per_replica = ctx.get_per_replica_batch_size(cfg.batch_size)
    local_replicas = ctx.num_replicas_in_sync // ctx.num_input_pipelines
    per_pipeline = per_replica * local_replicas
    start = per_pipeline * ctx.input_pipeline_id
    start_batch = start_step * cfg.d_steps_per_g
    if seed is None:
      per_epoch = num_examples // cfg.batch_size
      ds = tf.data.Dataset.range(2**62).skip(start_batch).map(
          lambda b: (b % per_epoch) * cfg.batch_size + tf.range(cfg.batch_size, dtype=tf.int64))
    else:
      ds = global_batch_indices(num_examples, cfg.batch_size, seed, start_batch)
    # This worker's slice of each global batch, then one row per local replica.
    ds = ds.map(lambda idx: tf.reshape(idx[start:start + per_pipeline], [local_replicas, per_replica]))
    ds = ds.unbatch()
    images = tf.constant(source.images)
    labels = tf.constant(source.labels)

    def gather(idx):
      return {"images": preprocess(tf.gather(images, idx), image_shape), "labels": tf.gather(labels, idx)}

    ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    # Sharding is done above by slicing each global batch; auto-sharding would shard again (or by files).
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    options.deterministic = True
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)

  return dataset_fn
