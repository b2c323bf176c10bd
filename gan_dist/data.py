"""Training data: a folder of images, TensorFlow Datasets or MNIST-style IDX files, as per-replica batches.

Sources (`open_source`, chosen by --dataset and --data_dir):
  * --dataset=folder: the image files (JPEG, PNG, GIF, BMP, WebP) of the tree at --data_dir; class subfolders are
    labels (ImageFolder convention). Only the list of paths is held; files are decoded in the pipeline.
  * --dataset=mnist or fashion_mnist with --data_dir holding the four IDX files: read directly (offline); IDX splits
    are small and bounded, so they are held in memory (one uint8 copy per process).
  * any other name: a TensorFlow Datasets image dataset, read by random access from its prepared ArrayRecord files
    (a dataset prepared as TFRecord is converted once; see gan_dist/datasets/tfds_source.py).
Nothing is decoded in bulk when a source is opened, and nothing is ever written into the workdir.

Order: the pipeline only moves example indices until each worker reads the examples of its own slices, so the data
order is a pure function of (seed, step): every epoch is a `stateless_shuffle` of all indices seeded by (seed,
epoch); epoch e is cut into `num_examples // global_batch` global batches (the remainder of each epoch is dropped);
global batch b is what generator step b / d_steps_per_g trains on. It is split into `num_input_pipelines`
contiguous slices (one per worker; no two workers read the same examples in a step), and each slice into
per-replica batches in replica order. A resumed run skips to its step in microseconds (indices only), and the same
step reads the same examples whatever the topology. Horizontal flips (--random_flip) are drawn from (seed, global
batch, position in it), and an undecodable file is replaced by a substitute chosen by its index, so both keep that
property. Auto-sharding is OFF: the slicing already shards. A distributed iterator cannot be checkpointed; this is
why the order is computed rather than saved.

Preprocessing runs in the tf.data graph, in parallel (deterministic order) and prefetched: decode, channels
(--channels: gray, gray+alpha, RGB, RGBA, palette and 16-bit images converted), --crop=center|none, resize to
--image_size (antialiased bilinear), scale to [-1, 1], flip.
"""

import os
from typing import Callable, Optional, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from gan_dist import files
from gan_dist import sampling
from gan_dist.datasets.base import DataError, DataSource, graph_fn
from gan_dist.datasets.folder import ERROR_MARK as BAD_IMAGE_ERROR
from gan_dist.datasets.folder import FolderSource, open_folder
from gan_dist.datasets import packed as _packed
from gan_dist.datasets.packed import PackedSource, open_packed, read_manifest, write_pack
from gan_dist.datasets.idx import IDX_DATASETS, IdxSource, find_idx_files, load_idx, read_idx
from gan_dist.datasets.tfds_source import TfdsSource, open_tfds

__all__ = ["DataError", "DataSource", "FolderSource", "PackedSource", "IdxSource", "TfdsSource", "BAD_IMAGE_ERROR",
           "open_source", "bad_image_message", "check_first_batch", "steps_per_epoch", "make_dataset_fn",
           "eval_dataset", "global_batch_indices", "read_idx", "load_idx", "find_idx_files", "write_pack",
           "SHARD_SIZE", "graph_fn"]
SHARD_SIZE = _packed.SHARD_SIZE

# Salt of the flip draws, so that they are not correlated with the shuffles seeded by (seed, epoch).
_FLIP_SALT = 0x5F11


def open_source(cfg, split: Optional[str] = None) -> DataSource:
  """Opens `split` (default `cfg.split`) of the dataset `cfg` names. Cheap: lists files or opens an index.

  Args:
    cfg: the Config (dataset, data_dir, split, class_filter, num_classes, crop, skip_bad_images, data_cache_dir).
    split: overrides `cfg.split` (e.g. "test" for evaluation). Ignored by --dataset=folder (one split).

  Returns:
    A DataSource with `num_examples`, `num_classes` and `name`, for `make_dataset_fn` and `eval_dataset`.

  Raises:
    DataError: a one-line message naming the problem and the fix.
  """
  split = split or cfg.split
  # Read once: a pack's manifest lists every example.
  manifest = read_manifest(cfg.data_dir) if cfg.dataset in ("folder", "packed") else None
  if cfg.dataset == "packed" or manifest is not None:
    source = open_packed(cfg.data_dir, crop=cfg.crop, skip_bad=cfg.skip_bad_images, cache_dir=cfg.data_cache_dir,
                         manifest=manifest)
  elif cfg.dataset == "folder":
    try:
      source = open_folder(cfg.data_dir, crop=cfg.crop, skip_bad=cfg.skip_bad_images)
    except DataError:
      # Only once the listing failed: an image folder may hold a plan.json of its own. A pack being written holds
      # no images, and saying what it is beats "no image files (1 .array_record, 1 .json)".
      _packed.check_not_packing(cfg.data_dir)
      raise
  elif cfg.dataset in IDX_DATASETS and find_idx_files(cfg.data_dir, split):
    source = load_idx(cfg.data_dir, split, crop=cfg.crop)
  elif cfg.data_dir and not tf.io.gfile.isdir(cfg.data_dir):
    relative = f" (from {os.getcwd()})" if files.is_local(cfg.data_dir) and not os.path.isabs(cfg.data_dir) else ""
    raise DataError(f"--data_dir={cfg.data_dir} does not exist{relative}")
  else:
    source = open_tfds(cfg.dataset, cfg.data_dir, split, cache_dir=cfg.data_cache_dir, crop=cfg.crop)
  if cfg.class_filter >= 0:
    if not source.num_classes:
      raise DataError(f"--class_filter={cfg.class_filter}: {source.name} has no classes (no labels or class "
                      "folders); drop --class_filter")
    named = sampling.named_classes(source.class_names)
    if cfg.class_filter >= source.num_classes:
      raise DataError(f"--class_filter={cfg.class_filter}: no examples of that class in {source.name} "
                      f"({source.num_classes} classes{f': {named}' if named else ''}); pass a class in "
                      f"0..{source.num_classes - 1} or -1 for all")
    if isinstance(source, TfdsSource):
      logging.info("Reading the labels of %s once for --class_filter", source.name)
    keep = np.flatnonzero(source.example_labels() == cfg.class_filter).astype(np.int64)
    if not len(keep):
      raise DataError(f"--class_filter={cfg.class_filter}: no examples of that class in {source.name}")
    source = source.filtered(keep, f"{source.name}, class {sampling.class_label(cfg.class_filter, source.class_names)} "
                                   "only")
  if 0 < cfg.num_classes < source.num_classes:
    raise DataError(f"--num_classes={cfg.num_classes} is below the {source.num_classes} classes of {source.name}; "
                    f"pass --num_classes={source.num_classes} or leave it at 0 (from the data)")
  return source


def bad_image_message(error: Exception) -> Optional[str]:
  """The one-line message of an undecodable image met mid-run with --noskip_bad_images, from the input pipeline's
  error (a tf.errors.OpError), or None if the error is about something else."""
  text = str(getattr(error, "message", error))
  line = next((l for l in text.splitlines() if BAD_IMAGE_ERROR in l), None)
  if line is None:
    return None
  return line[line.index(BAD_IMAGE_ERROR):].strip().rstrip("]").strip()


def steps_per_epoch(num_examples: int, cfg) -> int:
  """Generator steps per epoch (each step draws `d_steps_per_g` global batches)."""
  return num_examples // cfg.batch_size // cfg.d_steps_per_g


def _batches_per_epoch(num_examples: int, global_batch: int) -> int:
  per_epoch = num_examples // global_batch
  if per_epoch < 1:
    raise DataError(f"The dataset has {num_examples} examples, fewer than one global batch of {global_batch}; "
                    "lower --batch_size or add data")
  return per_epoch


def check_first_batch(cfg, source: DataSource, image_shape: Tuple[int, int, int], start_step: int = 0) -> None:
  """Raises DataError, before a run writes anything, for data it cannot start on: fewer examples than one global
  batch, or (folders and packs) a first global batch that cannot be read: a folder of damaged files, or a damaged
  file in it under --noskip_bad_images. Reads that batch (eagerly, as one pipeline); a damaged file met later is
  still the mid-run error of `bad_image_message`.

  Args:
    cfg: the Config of the run.
    source: from `open_source`.
    image_shape: (H, W, C) the model trains on.
    start_step: the step the run starts from (its first batch is that step's).
  """
  _batches_per_epoch(source.num_examples, cfg.batch_size)
  if not source.decodes_files:
    return
  whole_batch = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0, num_replicas_in_sync=1)
  try:
    next(iter(make_dataset_fn(cfg, source, image_shape, start_step)(whole_batch).take(1)))
  except tf.errors.OpError as e:
    line = bad_image_message(e)
    if line is None:
      raise
    raise DataError(line) from e


def global_batch_indices(num_examples: int, global_batch: int, seed: int, start_batch: int = 0) -> tf.data.Dataset:
  """Infinite dataset of int64 [global_batch] example indices; element b is global batch number b + start_batch."""
  per_epoch = _batches_per_epoch(num_examples, global_batch)

  def epoch_batches(epoch):
    perm = tf.random.experimental.stateless_shuffle(tf.range(num_examples, dtype=tf.int64),
                                                    seed=tf.stack([tf.cast(seed, tf.int64), epoch]))
    return tf.data.Dataset.from_tensor_slices(tf.reshape(perm[:per_epoch * global_batch], [per_epoch, global_batch]))

  first_epoch = start_batch // per_epoch
  return (tf.data.Dataset.range(first_epoch, 2**62).flat_map(graph_fn(epoch_batches))
          .skip(start_batch - first_epoch * per_epoch))


def _sequential_batch_indices(num_examples: int, global_batch: int, start_batch: int) -> tf.data.Dataset:
  """--noshuffle_files: the examples in their stored order, epoch after epoch."""
  per_epoch = _batches_per_epoch(num_examples, global_batch)
  return tf.data.Dataset.range(start_batch, 2**62).map(
      graph_fn(lambda b: (b % per_epoch) * global_batch + tf.range(global_batch, dtype=tf.int64)))


def _flips(seed: int, batch: tf.Tensor, global_batch: int) -> tf.Tensor:
  """bool [global_batch]: which images of global batch `batch` are mirrored; a function of (seed, batch) alone."""
  key = tf.random.experimental.stateless_fold_in(tf.constant([seed, _FLIP_SALT], tf.int64), batch)
  return tf.random.stateless_uniform([global_batch], seed=key) < 0.5


def _options(dataset: tf.data.Dataset) -> tf.data.Dataset:
  options = tf.data.Options()
  # Sharding is done by slicing each global batch; auto-sharding would shard again (or by files).
  options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
  options.deterministic = True
  return dataset.with_options(options)


def make_dataset_fn(cfg, source: DataSource, image_shape: Tuple[int, int, int],
                    start_step: int = 0) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
  """Returns the function for `strategy.distribute_datasets_from_function`.

  Args:
    cfg: the Config (batch_size is global, seed, d_steps_per_g, shuffle_files, random_flip).
    source: from `open_source`.
    image_shape: (H, W, C) the model trains on.
    start_step: the generator step to start from (resume); the first batch is the one that step would draw.

  Returns:
    fn(input_context) -> dataset of {"images": float32 [b, H, W, C] in [-1, 1], "labels": int32 [b]}, where
    b = batch_size / num_replicas_in_sync and consecutive elements go to consecutive local replicas. The dataset of
    a worker reads only the examples of its own slices.
  """
  num_examples = source.num_examples
  image_shape = tuple(int(d) for d in image_shape)

  def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
    if cfg.batch_size % ctx.num_replicas_in_sync:
      raise DataError(f"--batch_size={cfg.batch_size} must divide evenly over {ctx.num_replicas_in_sync} replicas")
    per_replica = ctx.get_per_replica_batch_size(cfg.batch_size)
    local_replicas = ctx.num_replicas_in_sync // ctx.num_input_pipelines
    per_pipeline = per_replica * local_replicas
    start = per_pipeline * ctx.input_pipeline_id
    start_batch = start_step * cfg.d_steps_per_g
    if cfg.shuffle_files:
      indices = global_batch_indices(num_examples, cfg.batch_size, cfg.seed, start_batch)
    else:
      indices = _sequential_batch_indices(num_examples, cfg.batch_size, start_batch)
    numbers = tf.data.Dataset.range(start_batch, 2**62)

    def this_worker(number, idx):
      """This worker's slice of global batch `number`, one row per local replica."""
      flips = (_flips(cfg.seed, number, cfg.batch_size) if cfg.random_flip
               else tf.zeros([cfg.batch_size], tf.bool))
      shape = [local_replicas, per_replica]
      return (tf.reshape(idx[start:start + per_pipeline], shape),
              tf.reshape(flips[start:start + per_pipeline], shape))

    rows = tf.data.Dataset.zip(numbers, indices).map(graph_fn(this_worker)).unbatch()
    return _options(source.batches(rows, image_shape, per_replica)).prefetch(tf.data.AUTOTUNE)

  return dataset_fn


def eval_dataset(source: DataSource, image_shape: Tuple[int, int, int], batch_size: int,
                 num: Optional[int] = None) -> tf.data.Dataset:
  """The first `num` examples of `source` (all if None) in their fixed order: not shuffled, flipped or distributed.

  Args:
    source: from `open_source` (e.g. `open_source(cfg, "test")`).
    image_shape: (H, W, C) the images are made into (as for training).
    batch_size: examples per element; the last element holds the remainder.
    num: how many examples (at most `source.num_examples`).

  Returns:
    Dataset of {"images": float32 [b, H, W, C] in [-1, 1], "labels": int32 [b]}.
  """
  count = source.num_examples if num is None else min(int(num), source.num_examples)
  rows = tf.data.Dataset.range(count).batch(batch_size).map(graph_fn(lambda i: (i, tf.zeros_like(i, tf.bool))))
  return _options(source.batches(rows, tuple(int(d) for d in image_shape), batch_size)).prefetch(tf.data.AUTOTUNE)
