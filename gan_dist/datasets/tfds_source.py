"""TensorFlow Datasets image datasets, read by random access from their prepared ArrayRecord files.

A split is TFDS's ArrayRecord data source (`builder.as_data_source`): `len()` and records by index, nothing read in
bulk. The pipeline asks it for the serialized examples of each row of indices (one Python call per row), then parses
and decodes them in the tf.data graph like the image files of a folder.

A dataset prepared as TFRecord can only be read sequentially, which would break "global batch s is a function of
(seed, s)" or force the whole split into memory. It is converted once to ArrayRecord, shard by shard in the same
record order (what `tfds convert_format` does; its module needs Apache Beam, so the few steps are done here with
TFDS's own file adapters), into --data_cache_dir (default <TFDS data dir>/gan_dist_array_record/<name>/<config>/
<version>), and read from there from then on. Its dataset_info.json is written last: a directory without it is an
unfinished conversion and is completed by the next run. Workers converting at the same time write identical files
(each shard under a temporary name, then renamed).
"""

import json
import os
import shutil
import socket
import tempfile
import threading
from typing import Optional
import urllib.request

from absl import logging
import numpy as np
import tensorflow as tf

from gan_dist import errors
from gan_dist import files
from gan_dist.datasets import images as images_lib
from gan_dist.datasets.base import DataError, DataSource, graph_fn

_SCAN_CHUNK = 4096
# Set (to anything but "" or "0") on a machine without internet access: a dataset that is not prepared is an error at
# once, without trying a download.
OFFLINE_ENV = "GAN_DIST_OFFLINE"
# TFDS's download mirror, and MNIST's own host. TFDS retries a failed download 10 times with exponential backoff, so
# offline it fails only after about 3.5 minutes; a connection to this host, tried first, tells in seconds.
DOWNLOAD_HOST = ("storage.googleapis.com", 443)
DOWNLOAD_CHECK_TIMEOUT_S = 10.0


def _tfds():
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (slow import, not needed for files)
  return tfds


def _first_line(error: Exception) -> str:
  return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _builder(name: str, data_dir: str):
  tfds = _tfds()
  try:
    return tfds.builder(name, data_dir=data_dir or None)
  except Exception as e:  # pylint: disable=broad-except  (TFDS raises many types for unknown names)
    raise DataError(f"Unknown TensorFlow Datasets name --dataset={name}: {_first_line(e)}") from None


def _prepare(builder, name: str, data_dir: str) -> None:
  """Downloads and prepares `builder`'s dataset unless it is prepared; refuses in seconds where that cannot work."""
  tfds = _tfds()
  if not builder.is_prepared():
    problem = download_problem(os.fspath(builder.data_dir_root))
    if problem is None:
      try:
        builder.download_and_prepare(file_format="array_record")
      except Exception as e:  # pylint: disable=broad-except  (network errors come in many types)
        problem = type(e).__name__
    if problem is not None:
      raise DataError(
          f"--dataset={name} is not in --data_dir={data_dir or tfds.core.constants.DATA_DIR} and could not be "
          f"downloaded ({problem}). Offline, pass --data_dir=DIR where DIR holds the four IDX .gz files of "
          f"MNIST or Fashion-MNIST (e.g. --data_dir=../shared/data/mnist), a TFDS data dir prepared elsewhere, or "
          f"use --dataset=folder --data_dir=FOLDER for your own images."
      ) from None


def download_problem(data_dir_root: str) -> Optional[str]:
  """Why a TFDS download into `data_dir_root` cannot work, found in seconds; None when it may.

  Files already in its downloads/ folder let TFDS prepare a dataset offline, so they are always given a try. A proxy
  (http_proxy, https_proxy, ...) decides what is reachable, so a direct connection would tell nothing.
  """
  downloads = f"{data_dir_root.rstrip('/')}/downloads"
  if tf.io.gfile.isdir(downloads) and tf.io.gfile.listdir(downloads):
    return None
  if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
    return f"{OFFLINE_ENV}={os.environ[OFFLINE_ENV]} is set"
  if any(urllib.request.getproxies().get(scheme) for scheme in ("https", "http", "all")):
    return None
  try:
    socket.create_connection(DOWNLOAD_HOST, timeout=DOWNLOAD_CHECK_TIMEOUT_S).close()
  except OSError as e:
    return f"no connection to {DOWNLOAD_HOST[0]}: {e}"
  return None


def conversion_dir(builder, cache_dir: str) -> str:
  """Where the ArrayRecord copy of a TFRecord-prepared dataset goes: <root>/<name>/[<config>/]<version>, where
  <root> is `cache_dir` or <TFDS data dir>/gan_dist_array_record.

  The dataset's full name, not its directory: a builder read from its files alone (a dataset whose code TFDS does
  not have) has its data dir as its root, and the copy would go inside TFDS's own prepared directory."""
  root = cache_dir or f"{os.fspath(builder.data_dir_root).rstrip('/')}/gan_dist_array_record"
  return f"{root.rstrip('/')}/{builder.info.full_name}"


def _write_array_record(records, path: str) -> int:
  """Writes serialized records to an ArrayRecord file at `path` through TFDS's adapter; returns their number."""
  from tensorflow_datasets.core import file_adapters  # pylint: disable=g-import-not-at-top
  count = [0]

  def keyed():
    for record in records:
      count[0] += 1
      yield count[0], record

  file_adapters.ArrayRecordFileAdapter.write_examples(path, keyed())
  return count[0]


def convert_to_array_record(builder, out_dir: str) -> str:
  """Converts a TFRecord-prepared dataset to ArrayRecord in `out_dir`, once (see the module docstring)."""
  from etils import epath  # pylint: disable=g-import-not-at-top  (a TFDS dependency)
  info_path = f"{out_dir}/dataset_info.json"
  if tf.io.gfile.exists(info_path):
    return out_dir
  source_dir = os.fspath(builder.data_dir)
  files.check_writable_dir(out_dir, "--data_cache_dir",
                           label=f"{out_dir} (where --dataset={builder.name} is converted; --data_cache_dir chooses)")
  logging.warning("--dataset=%s is prepared as TFRecord (sequential reads only): converting it once to ArrayRecord "
                  "(random access) in %s; later runs read the converted copy (set --data_cache_dir to choose where)",
                  builder.name, out_dir)
  tf.io.gfile.makedirs(out_dir)
  local = files.is_local(out_dir)
  for split in builder.info.splits.values():
    template = split.filename_template
    out_template = template.replace(data_dir=epath.Path(out_dir), filetype_suffix="array_record")
    for shard, expected in enumerate(split.shard_lengths):
      source = os.fspath(template.sharded_filepath(shard_index=shard, num_shards=split.num_shards))
      target = os.fspath(out_template.sharded_filepath(shard_index=shard, num_shards=split.num_shards))
      if tf.io.gfile.exists(target):
        continue
      records = (r.numpy() for r in tf.data.TFRecordDataset(source))
      with files.atomic_output(target) as partial:
        # ArrayRecord writes through its own file layer: write locally, then copy through tf.io.gfile if remote.
        staging = partial if local else os.path.join(tempfile.mkdtemp(prefix="gan_dist_"), os.path.basename(target))
        try:
          written = _write_array_record(records, staging)
          if written != expected:
            raise DataError(f"{source} holds {written} records but its dataset_info.json says {expected}; prepare "
                            f"--dataset={builder.name} again")
          if not local:
            tf.io.gfile.copy(staging, partial, overwrite=True)
        finally:
          if not local:
            shutil.rmtree(os.path.dirname(staging), ignore_errors=True)
      logging.info("Converted %s (%d records) to %s", source, written, target)
  for name in tf.io.gfile.listdir(source_dir):
    if ".tfrecord-" in name or name == "dataset_info.json" or tf.io.gfile.isdir(f"{source_dir}/{name}"):
      continue
    files.copy_atomic(f"{source_dir}/{name}", f"{out_dir}/{name}")
  with tf.io.gfile.GFile(f"{source_dir}/dataset_info.json") as f:
    info = json.load(f)
  info["fileFormat"] = "array_record"
  info.pop("alternativeFileFormats", None)
  files.write_atomic(info_path, json.dumps(info, indent=2))  # Last: marks the conversion complete.
  return out_dir


class TfdsSource(DataSource):
  """A split of a TFDS image dataset, read by random access (see the module docstring)."""

  def __init__(self, data_source, features, image_key: str, label_key: Optional[str], num_classes: int, name: str,
               crop: str, keep: Optional[np.ndarray] = None):
    self._data_source = data_source
    self._features = features
    self._image_key = image_key
    self._label_key = label_key
    self._keep = keep  # int64 record keys of the examples (after --class_filter), or None for all records.
    self._lock = threading.Lock()
    self.num_classes = num_classes
    names = list(features[label_key].names) if label_key else []
    # A ClassLabel made from a number of classes names them "0", "1", ...: no names.
    self.class_names = [] if names == [str(k) for k in range(len(names))] else names
    self.name = name
    self.crop = crop

  @property
  def num_examples(self) -> int:
    return len(self._data_source) if self._keep is None else len(self._keep)

  def filtered(self, keep: np.ndarray, name: str) -> "TfdsSource":
    record_keys = keep if self._keep is None else self._keep[keep]
    return TfdsSource(self._data_source, self._features, self._image_key, self._label_key, self.num_classes, name,
                      self.crop, np.asarray(record_keys, np.int64))

  def read(self, indices: np.ndarray) -> np.ndarray:
    """Serialized examples (object array of bytes) of example indices (int64 [b]); runs in tf.numpy_function."""
    keys = indices if self._keep is None else self._keep[indices]
    keys = [int(k) for k in keys]
    with self._lock:  # The ArrayRecord readers open lazily; keep concurrent pipeline threads out of each other.
      try:
        records = self._data_source.__getitems__(keys)  # One batched (parallel) read.
      except TypeError:  # tfds.testing.mock_data's data source implements only __getitem__.
        records = [self._data_source[k] for k in keys]
    return np.asarray(records, dtype=object)

  def _parser(self):
    tfds = _tfds()
    wanted = {self._image_key: True}
    if self._label_key:
      wanted[self._label_key] = True
    partial = tfds.decode.PartialDecoding(wanted, decoders={self._image_key: tfds.decode.SkipDecoding()})
    subset = partial.extract_features(self._features)
    return lambda serialized: subset.deserialize_example(serialized, decoders=partial.decoders)

  def _records(self, rows: tf.data.Dataset) -> tf.data.Dataset:
    def read(indices, flips):
      records = tf.numpy_function(self.read, [indices], tf.string)
      return tf.ensure_shape(records, indices.shape), flips

    return rows.map(graph_fn(read), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

  def example_labels(self) -> np.ndarray:
    """int32 labels of every example: parses the label of each record (a scan of the split)."""
    if not self._label_key:
      return np.zeros(self.num_examples, np.int32)
    parse = self._parser()
    rows = tf.data.Dataset.range(self.num_examples).batch(_SCAN_CHUNK).map(
        graph_fn(lambda i: (i, tf.zeros_like(i, tf.bool))))
    labels = self._records(rows).unbatch().map(graph_fn(lambda r, _: parse(r)[self._label_key]),
                                               num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return np.fromiter(labels.batch(_SCAN_CHUNK).unbatch().as_numpy_iterator(), np.int32, self.num_examples)

  def batches(self, rows, image_shape, batch_size):
    parse = self._parser()
    min_side = max(image_shape[0], image_shape[1])

    def example(record, flip):
      features = parse(record)
      image = images_lib.decode(features[self._image_key], min_side=min_side)
      image = images_lib.flip(images_lib.transform(image, image_shape, self.crop), flip)
      label = features[self._label_key] if self._label_key else tf.constant(0, tf.int64)
      return {"images": image, "labels": tf.cast(label, tf.int32)}

    examples = self._records(rows).unbatch().map(graph_fn(example), num_parallel_calls=tf.data.AUTOTUNE,
                                                 deterministic=True)
    return examples.batch(batch_size)


def _image_and_label_keys(name: str, features):
  tfds = _tfds()
  images = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
  if not images:
    raise DataError(f"--dataset={name} has no image feature (features: {', '.join(features)}); gan_dist trains on "
                    "datasets with a tfds.features.Image")
  image_key = "image" if "image" in images else images[0]
  label_key = "label" if "label" in features and isinstance(features["label"], tfds.features.ClassLabel) else None
  return image_key, label_key


def open_tfds(name: str, data_dir: str, split: str, cache_dir: str, crop: str) -> TfdsSource:
  """Opens `split` of TFDS dataset `name` for random access (converting it once if it was prepared as TFRecord).

  Raises:
    DataError: unknown dataset or split, not prepared and not downloadable, no image feature.
  """
  tfds = _tfds()
  builder = _builder(name, data_dir)
  features = builder.info.features  # Known before a download: a dataset without images is refused first.
  image_key, label_key = _image_and_label_keys(name, features)
  _prepare(builder, name, data_dir)
  known = list(builder.info.splits.keys()) if isinstance(builder.info.splits, dict) else []
  base_split = split.split("[")[0]
  if known and base_split not in known:
    raise DataError(f"--split={split}: --dataset={name} has the splits {', '.join(known)}")
  raw = tfds.decode.DeserializeMethod.RAW_BYTES
  where = os.fspath(builder.data_dir)
  try:
    if known:  # The split's syntax and slice, checked before a conversion that may take minutes.
      splits = builder.info.splits
      parts = tfds.core.ReadInstruction.from_spec(split).to_absolute(splits)
      if not any((splits[p.splitname].num_examples if p.to is None else p.to) > (p.from_ or 0) for p in parts):
        raise ValueError("it selects no examples")
    try:
      data_source = builder.as_data_source(split=split, deserialize_method=raw)
    except NotImplementedError:  # Prepared as TFRecord: no random access.
      where = convert_to_array_record(builder, conversion_dir(builder, cache_dir))
      data_source = tfds.builder_from_directory(where).as_data_source(split=split, deserialize_method=raw)
  except errors.UserError:  # The conversion's own refusals (a UserError is a ValueError too).
    raise
  except (ValueError, KeyError, AssertionError) as e:
    raise DataError(f"--split={split} of --dataset={name}: {_first_line(e)}") from None
  num_classes = int(features[label_key].num_classes) if label_key else 0
  source = TfdsSource(data_source, features, image_key, label_key, num_classes, f"TFDS {name} {split} in {where}",
                      crop)
  logging.info("Opened %s: %d examples, read by random access", source.name, source.num_examples)
  return source
