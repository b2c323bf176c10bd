"""MNIST-style IDX files (MNIST, Fashion-MNIST), read through tf.io.gfile and held in memory.

IDX splits are small and bounded (MNIST's training images are 47 MB), so they are the one source kept in memory:
one uint8 copy per process, moved into a TensorFlow tensor the first time a pipeline needs it (the numpy array is
then dropped), instead of the several copies a read-concatenate-convert-constant chain makes.
"""

import gzip
import struct
from typing import Optional, Tuple
import zlib

from absl import logging
import numpy as np
import tensorflow as tf

from gan_dist.datasets import images as images_lib
from gan_dist.datasets.base import DataError, DataSource, graph_fn

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# The dataset names whose files come as IDX (the same four file names for both).
IDX_DATASETS = ("mnist", "fashion_mnist")
_CHUNK_BYTES = 16 << 20
_READ_ERRORS = (OSError, EOFError, zlib.error, struct.error, tf.errors.OpError)


def _fail(path: str, problem: str) -> DataError:
  return DataError(f"{path} {problem}; replace it with an intact copy (e.g. download it again)")


def _read_exactly(f, count: int, path: str, what: str) -> bytes:
  data = f.read(count)
  if len(data) != count:
    raise _fail(path, f"is truncated: {what} needs {count} bytes, the file holds {len(data)}")
  return data


def read_idx(path: str) -> np.ndarray:
  """Reads an IDX file (gzipped if its name ends in .gz) of unsigned bytes: images [N, H, W] or labels [N].

  Raises:
    DataError: one line naming the file and the problem: missing, bad gzip, truncated, not IDX, wrong counts.
  """
  if not tf.io.gfile.exists(path):
    raise DataError(f"{path} does not exist; point --data_dir at the folder holding the IDX files")
  try:
    with tf.io.gfile.GFile(path, "rb") as raw:
      f = gzip.GzipFile(fileobj=raw, mode="rb") if path.endswith(".gz") else raw
      header = f.read(4)
      if len(header) != 4 or header[:2] != b"\0\0":
        raise _fail(path, f"is not an IDX file (bad magic {header!r})")
      dtype_code, ndim = header[2], header[3]
      if dtype_code != 0x08:
        raise _fail(path, f"holds IDX type code {dtype_code:#x}; only unsigned-byte IDX data (0x08) is supported")
      if not 1 <= ndim <= 4:
        raise _fail(path, f"is not an IDX file of images or labels ({ndim} dimensions)")
      shape = struct.unpack(f">{ndim}I", _read_exactly(f, 4 * ndim, path, "the header"))
      expected = int(np.prod(shape))
      data = np.empty(expected, np.uint8)
      got = 0
      while got < expected:  # In chunks, into the one array: no intermediate copy of the whole file.
        chunk = f.read(min(expected - got, _CHUNK_BYTES))
        if not chunk:
          break
        data[got:got + len(chunk)] = np.frombuffer(chunk, np.uint8)
        got += len(chunk)
      if got != expected:
        raise _fail(path, f"is truncated: header says {shape} = {expected} bytes, the file holds {got}")
      if f.read(1):
        raise _fail(path, f"has more data than its header's {shape} = {expected} bytes (wrong counts)")
  except DataError:
    raise
  except _READ_ERRORS as e:
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise _fail(path, f"cannot be read ({type(e).__name__}: {reason})") from None
  return data.reshape(shape)


def _idx_path(data_dir: str, stem: str) -> Optional[str]:
  """The file `stem`.gz or `stem` in `data_dir`, or None."""
  candidates = [f"{data_dir.rstrip('/')}/{stem}{ext}" for ext in (".gz", "")]
  return next((p for p in candidates if tf.io.gfile.exists(p)), None)


def find_idx_files(data_dir: str, split: str) -> Optional[Tuple[str, str]]:
  """Paths of the (images, labels) IDX files of `split` in `data_dir`, gzipped or not.

  Returns:
    The two paths, or None when `data_dir` holds no IDX file at all (it may be a TFDS data dir).

  Raises:
    DataError: `data_dir` holds IDX files, but not both of `split`'s: a copy is incomplete, and going on to TFDS
      (a download) would hide that.
  """
  if not data_dir or split not in IDX_FILES or not tf.io.gfile.isdir(data_dir):
    return None
  found = {stem: _idx_path(data_dir, stem) for stem in IDX_FILES[split]}
  images, labels = found.values()
  if images and labels:
    return images, labels
  # Only an incomplete folder pays for looking up the other split's files (a request each on a bucket).
  found.update({stem: _idx_path(data_dir, stem) for stems in IDX_FILES.values() for stem in stems if stem not in found})
  if any(found.values()):
    missing = " and ".join(f"{stem}[.gz]" for stem in IDX_FILES[split] if not found[stem])
    present = ", ".join(sorted(p.rsplit("/", 1)[-1] for p in found.values() if p))
    raise DataError(f"--data_dir={data_dir} holds IDX files ({present}) but not {missing} of the {split} split; "
                    "copy the missing file(s) there (MNIST and Fashion-MNIST come as four files)")
  return None


class IdxSource(DataSource):
  """An IDX split in memory.

  Attributes:
    labels: int32 [num_examples] (after --class_filter).
    images: uint8 [num_examples, H, W, 1] as numpy (a copy, for tools such as the MNIST classifier).
  """

  def __init__(self, images: np.ndarray, labels: np.ndarray, num_classes: int, name: str, crop: str,
               keep: Optional[np.ndarray] = None):
    self._images = images  # uint8 [N_all, H, W, C]; replaced by a tensor on first use.
    self._images_tensor = None
    self._all_labels = labels
    self._keep = keep  # int64 [num_examples] rows of the split, or None for all of them.
    self.num_classes = num_classes
    self.name = name
    self.crop = crop

  @property
  def num_examples(self) -> int:
    return len(self._all_labels) if self._keep is None else len(self._keep)

  @property
  def labels(self) -> np.ndarray:
    return self._all_labels if self._keep is None else self._all_labels[self._keep]

  def example_labels(self) -> np.ndarray:
    return self.labels

  @property
  def images(self) -> np.ndarray:
    array = self._images if self._images is not None else self._images_tensor.numpy()
    return array if self._keep is None else array[self._keep]

  def filtered(self, keep: np.ndarray, name: str) -> "IdxSource":
    """The same split restricted to its examples `keep` (int64 indices into this split), sharing the images."""
    rows = np.asarray(keep, np.int64) if self._keep is None else self._keep[np.asarray(keep, np.int64)]
    source = IdxSource(self._images, self._all_labels, self.num_classes, name, self.crop, keep=rows)
    source._images_tensor = self._images_tensor  # pylint: disable=protected-access
    return source

  def _tensor(self) -> tf.Tensor:
    if self._images_tensor is None:
      with tf.device("/cpu:0"):
        self._images_tensor = tf.convert_to_tensor(self._images)
      self._images = None  # One copy: the tensor's.
    return self._images_tensor

  def batches(self, rows, image_shape, batch_size):
    del batch_size  # Each row is gathered as one batch.
    images = self._tensor()
    labels = tf.constant(self._all_labels)
    keep = None if self._keep is None else tf.constant(self._keep, tf.int64)

    def gather(indices, flips):
      rows_ = indices if keep is None else tf.gather(keep, indices)
      batch = images_lib.transform(tf.gather(images, rows_), image_shape, self.crop)
      return {"images": images_lib.flip(batch, flips), "labels": tf.gather(labels, rows_)}

    return rows.map(graph_fn(gather), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def load_idx(data_dir: str, split: str, crop: str) -> IdxSource:
  """Reads `split` ("train" or "test") of the IDX files in `data_dir`.

  Raises:
    DataError: the files are missing, damaged, or their counts disagree.
  """
  paths = find_idx_files(data_dir, split)
  if paths is None:
    raise DataError(f"No IDX files for split {split!r} in {data_dir}: expected {' and '.join(IDX_FILES[split])}[.gz]")
  images, labels = read_idx(paths[0]), read_idx(paths[1])
  if images.ndim != 3 or labels.ndim != 1:
    raise DataError(f"{paths[0]} and {paths[1]} must hold images [N, H, W] and labels [N], got {images.shape} and "
                    f"{labels.shape}; are the two files swapped?")
  if len(images) != len(labels):
    raise DataError(f"{paths[0]} holds {len(images)} images but {paths[1]} {len(labels)} labels; both files must "
                    "come from the same split (replace the damaged one)")
  if not len(labels):
    raise DataError(f"{paths[0]} holds no images; replace it with an intact copy")
  logging.info("Read %d IDX images of %s (%.1f MB, held in memory)", len(images), split, images.nbytes / 2**20)
  return IdxSource(images[..., None], labels.astype(np.int32), int(labels.max()) + 1, f"IDX files in {data_dir}", crop)
