"""--dataset=folder: a directory tree of image files, listed once, decoded on demand in the tf.data graph.

Labels follow torchvision's ImageFolder convention: the sorted names of the root's subdirectories that hold images
are classes 0..K-1, and every image below such a subdirectory (at any depth) has its label. Images directly in the
root are unlabeled: label 0 when the tree has no class subdirectories (num_classes 0), otherwise -1 (a conditional
model sees them with an all-zero one-hot, i.e. no class; a warning says so). Hidden entries (".name") are skipped.

The order of the examples is the sorted order of their paths (root files first, then class 0, 1, ...), the same on
every filesystem and every worker. Only the list of paths and labels is held in memory.

Bad files: an image that cannot be decoded (corrupt, truncated, empty, an unsupported variant such as a 1-bit BMP)
is replaced by a deterministic substitute, another example chosen by (example index, attempt) alone, so the batch
of a step stays a function of (seed, step) whatever the topology and however often the run resumes. Its path is
logged once (with the count of bad files met so far, kept in `bad_files`). With --noskip_bad_images the first one
stops the run with an error naming the file instead.
"""

import collections
import os
import threading
from typing import Counter, Dict, List, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from gan_dist import files
from gan_dist.datasets import images as images_lib
from gan_dist.datasets.base import DataError, DataSource, graph_fn

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")
# Substitutes tried for an undecodable file before the run gives up (each is a random other example).
MAX_SUBSTITUTES = 8
# Examples decoded concurrently (each is a one-element dataset of the interleave); deterministic order regardless.
_CYCLE_LENGTH = 64
# Marks the error of --noskip_bad_images (or of an example whose substitutes are all bad) in TensorFlow's message.
ERROR_MARK = "gan_dist.data: undecodable image file"


def _is_image(name: str) -> bool:
  return name.lower().endswith(IMAGE_EXTENSIONS)


def _join(directory: str, name: str) -> str:
  return f"{directory.rstrip('/')}/{name}"


def _kind(name: str) -> str:
  """How an ignored file is counted: by its extension, lower-cased (".tif", ".heic")."""
  extension = os.path.splitext(name)[1].lower()
  return extension if extension else "without extension"


def _kinds(ignored: Counter[str]) -> str:
  """"2 .tif, 1 .tiff, 1 without extension": what the ignored files are, most frequent first (4 kinds at most)."""
  ranked = sorted(ignored.items(), key=lambda item: (-item[1], item[0]))
  return ", ".join(f"{count} {kind}" for kind, count in ranked[:4]) + (", ..." if len(ranked) > 4 else "")


def _entries(directory: str) -> Tuple[List[str], List[str], Counter[str]]:
  """(image file names, subdirectory names, other entries by `_kind`) of `directory`, sorted, hidden entries
  skipped.

  Local directories are read with os.scandir, which types every entry in the same system call (following links)
  and sees names that are not UTF-8, which tf.io.gfile.listdir cannot return at all (the whole listing fails): such
  a name is skipped with a warning. On other filesystems a name with an image extension is taken as a file without
  asking (on object stores every isdir is a request; a folder of 100,000 images would take 100,000 of them).

  Raises:
    DataError: the directory cannot be listed (permissions), in one line.
  """
  found, dirs, other = [], [], collections.Counter()
  try:
    if files.is_local(directory):
      with os.scandir(os.fsencode(directory)) as scan:
        for entry in sorted(scan, key=lambda e: e.name):  # UTF-8 bytes sort as their characters do.
          try:
            name = entry.name.decode("utf-8")
          except UnicodeDecodeError:
            logging.warning("Skipped %r in %s: its name is not UTF-8 (rename it to use it)", entry.name, directory)
            other["with a name that is not UTF-8"] += 1
            continue
          if name.startswith("."):
            continue
          if _is_dir(entry):
            dirs.append(name)
          elif _is_image(name):
            found.append(name)
          else:
            other[_kind(name)] += 1
    else:
      for entry in sorted(tf.io.gfile.listdir(directory)):
        name = entry.rstrip("/")
        if not name or name.startswith("."):
          continue
        if entry.endswith("/"):
          dirs.append(name)
        elif _is_image(name):
          found.append(name)
        elif tf.io.gfile.isdir(_join(directory, name)):
          dirs.append(name)
        else:
          other[_kind(name)] += 1
  except (OSError, tf.errors.OpError) as e:
    reason = getattr(e, "strerror", None) or getattr(e, "message", None) or str(e)
    raise DataError(f"cannot list {directory}: {reason}") from None
  return found, dirs, other


def _is_dir(entry: os.DirEntry) -> bool:
  """Whether a local entry is a folder (links followed). A link that cannot be followed (to itself, in a loop) is
  not: with an image name it is listed as a file, which fails to decode and is replaced like any bad file."""
  try:
    return entry.is_dir()
  except OSError:
    return False


def _real(directory: str) -> str:
  """Where `directory` really is: links resolved on the local filesystem (object stores have none)."""
  return os.path.realpath(directory) if files.is_local(directory) else directory.rstrip("/")


def _images_below(directory: str, root: str) -> Tuple[List[str], Counter[str]]:
  """Paths of the image files anywhere below `directory` (a class folder of `root`), sorted, and the other entries
  by `_kind`. A linked folder is followed once: a link back to a folder already listed (e.g. `up -> ..`) is skipped
  with a warning rather than followed until the path is too long."""
  found, other, pending = [], collections.Counter(), [directory]
  listed = {_real(root), _real(directory)}
  while pending:
    current = pending.pop()
    names, dirs, skipped = _entries(current)
    found.extend(_join(current, f) for f in names)
    for name in dirs:
      path = _join(current, name)
      real = _real(path)
      if real in listed:
        logging.warning("Skipped %s: it leads to %s, which is listed already", path, real)
        continue
      listed.add(real)
      pending.append(path)
    other += skipped
  return sorted(found), other


def _image_subfolders(class_dir: str, found: List[str]) -> List[str]:
  """The sorted subfolders of `class_dir` (one level down) that hold its images `found`; none if one lies directly in
  it."""
  names = set()
  for path in found:
    relative = path[len(class_dir.rstrip("/")) + 1:]
    if "/" not in relative:
      return []
    names.add(relative.split("/", 1)[0])
  return sorted(names)


def _listed(names: List[str]) -> str:
  return ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")


def _warn_of_classes_one_level_down(root: str, classes: List[str], per_class: List[List[str]]) -> None:
  """Warns where the classes the user meant seem to lie one level below the class folders: data/train/{cat,dog}
  passed as data (one class, which a conditional model refuses), or data/{train,val}/{cat,dog} (the classes train
  and val). Listing stays ImageFolder's; the warning names the --data_dir that makes the subfolders classes."""
  below = [_image_subfolders(_join(root, name), found) for name, found in zip(classes, per_class)]
  if len(classes) == 1 and len(below[0]) >= 2:
    logging.warning("The images of the one class folder %s lie in its subfolders %s: they all count as class 0. If "
                    "those subfolders are the classes, pass --data_dir=%s", _join(root, classes[0]),
                    _listed(below[0]), _join(root, classes[0]))
  elif len(classes) >= 2 and len(below[0]) >= 2 and all(b == below[0] for b in below):
    logging.warning("The class folders %s of %s hold the same subfolders %s, which hold their images: the classes "
                    "are %s. If %s are the classes, pass --data_dir=%s (and keep the others apart)", _listed(classes),
                    root, _listed(below[0]), _listed(classes), _listed(below[0]), _join(root, classes[0]))


def list_images(root: str) -> Tuple[List[str], np.ndarray, List[str]]:
  """Lists the images of a folder tree.

  Returns:
    (paths in example order, int32 labels [N], class names).

  Raises:
    DataError: the folder is missing or a file, or holds no image files.
  """
  if not root:
    raise DataError("--dataset=folder needs --data_dir=FOLDER: a folder of image files (.jpg, .jpeg, .png, .gif, "
                    ".bmp, .webp), optionally one subfolder per class")
  if not tf.io.gfile.exists(root):
    if root.startswith("~"):  # `--data_dir=~/photos`: bash expands a ~ only at the start of a word.
      raise DataError(f"--data_dir={root} does not exist: the shell expands no ~ after =; write the path out (e.g. "
                      "$HOME/...)")
    relative = f" (from {os.getcwd()})" if files.is_local(root) and not os.path.isabs(root) else ""
    raise DataError(f"--data_dir={root} does not exist{relative}; pass the folder that holds the images")
  if not tf.io.gfile.isdir(root):
    raise DataError(f"--data_dir={root} is a file, not a folder; pass the folder that holds the images")
  root_files, subdirs, other = _entries(root)
  paths = [_join(root, f) for f in root_files]
  classes, per_class = [], []
  for name in subdirs:
    if _real(_join(root, name)) == _real(root):
      logging.warning("Skipped %s: it leads back to %s itself, not a class", _join(root, name), root)
      continue
    found, skipped = _images_below(_join(root, name), root)
    other += skipped
    if found:
      classes.append(name)
      per_class.append(found)
    else:  # What it holds instead (TIFF scans, HEIC photos) tells the user whether a class was meant.
      logging.warning("Folder %s holds no %s images%s: not a class", _join(root, name), "/".join(IMAGE_EXTENSIONS),
                      f" (ignored: {_kinds(skipped)})" if skipped else "")
  if not root_files and not classes:
    ignored = f"; {sum(other.values())} other files ignored ({_kinds(other)})" if other else ""
    raise DataError(f"--data_dir={root} holds no image files ({', '.join(IMAGE_EXTENSIONS)}) at any depth{ignored}; "
                    "point it at a folder of images")
  if classes:
    _warn_of_classes_one_level_down(root, classes, per_class)
  unlabeled = 0 if not classes else -1
  labels = [unlabeled] * len(paths)
  for label, found in enumerate(per_class):
    paths.extend(found)
    labels.extend([label] * len(found))
  if other:
    logging.info("Ignored %d files in %s that are not %s images: %s", sum(other.values()), root,
                 "/".join(IMAGE_EXTENSIONS), _kinds(other))
  if classes and root_files:
    logging.warning("%d images lie directly in %s, outside the %d class folders: they have no class (label -1); a "
                    "conditional model sees them with no class. Move them into a class folder to label them.",
                    len(root_files), root, len(classes))
  return paths, np.asarray(labels, np.int32), classes


class FolderSource(DataSource):
  """The images of a folder tree (see the module docstring).

  Attributes:
    class_names: names of the class subdirectories, in label order.
    labels: int32 [num_examples].
    bad_files: {path: times it was replaced} for the undecodable files met by this process's pipelines.
  """

  decodes_files = True

  def __init__(self, root: str, paths: List[str], labels: np.ndarray, class_names: List[str], crop: str,
               skip_bad: bool, name: str = ""):
    # Bytes, not str: numpy stores them at one byte per character (a path list, not a copy of the dataset).
    self._paths = np.asarray([p.encode() for p in paths], dtype=object)
    self.labels = labels
    self.class_names = list(class_names)
    self.num_classes = len(class_names)
    self.root = root
    self.crop = crop
    self.skip_bad = skip_bad
    self.name = name or f"image folder {root}"
    self.bad_files: Dict[str, int] = {}
    self._lock = threading.Lock()

  @property
  def num_examples(self) -> int:
    return len(self._paths)

  def example_labels(self) -> np.ndarray:
    return self.labels

  def path(self, index: int) -> str:
    return self._paths[index].decode()

  def filtered(self, keep: np.ndarray, name: str) -> "FolderSource":
    return FolderSource(self.root, [self.path(i) for i in keep], self.labels[keep], self.class_names, self.crop,
                        self.skip_bad, name)

  def _file_bytes(self, paths: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
    """The encoded bytes (tf.string scalar) of example `index` (in the graph); a pack reads them from its shards."""
    return tf.io.read_file(paths[index])

  def _report(self, index, substitute) -> np.int64:
    """Logs the first replacement of each bad file (called from the pipeline through tf.py_function)."""
    path, other = self.path(int(index)), self.path(int(substitute))
    with self._lock:
      first = path not in self.bad_files
      self.bad_files[path] = self.bad_files.get(path, 0) + 1
      count = len(self.bad_files)
    if first:
      logging.warning("Skipped undecodable image file %s (%d bad file(s) so far); example %d reads %s instead",
                      path, count, int(index), other)
    return np.int64(0)

  def batches(self, rows, image_shape, batch_size):
    paths = tf.constant(self._paths.tolist(), tf.string)
    labels = tf.constant(self.labels)
    num = self.num_examples
    min_side = max(image_shape[0], image_shape[1])

    def load(index):
      image = images_lib.decode(self._file_bytes(paths, index), min_side=min_side)
      return index, images_lib.transform(image, image_shape, self.crop)

    def substitute(index, attempt):
      return tf.random.stateless_uniform([], seed=tf.stack([index, attempt]), minval=0, maxval=num, dtype=tf.int64)

    def give_up(index):
      what = "" if not self.skip_bad else f" (nor any of its {MAX_SUBSTITUTES - 1} substitutes)"
      fix = ("remove or replace it, or leave --skip_bad_images on to skip such files" if not self.skip_bad else
             "most files seem damaged: check the folder")
      message = tf.strings.join([ERROR_MARK, " ", paths[index], what, "; ", fix])
      check = tf.debugging.Assert(tf.equal(index, -1), [message])  # Fails whenever this element is produced.
      with tf.control_dependencies([check]):
        return tf.identity(index), tf.zeros(image_shape, tf.float32)

    def example(index, flip):
      candidates = tf.data.Dataset.from_tensors(index)
      if self.skip_bad:
        attempts = tf.data.Dataset.range(1, MAX_SUBSTITUTES)
        candidates = candidates.concatenate(attempts.map(graph_fn(lambda a: substitute(index, a))))
      # Lazily: a later candidate is only read when every earlier one failed to decode.
      loaded = candidates.map(graph_fn(load)).ignore_errors().take(1)
      loaded = loaded.concatenate(tf.data.Dataset.from_tensors(index).map(graph_fn(give_up))).take(1)

      def finish(used, image):
        reported = tf.cond(tf.equal(used, index), lambda: tf.constant(0, tf.int64),
                           lambda: tf.py_function(self._report, [index, used], tf.int64))
        with tf.control_dependencies([reported]):
          return {"images": images_lib.flip(image, flip), "labels": tf.gather(labels, used)}

      return loaded.map(graph_fn(finish))

    examples = rows.unbatch().interleave(graph_fn(example), cycle_length=_CYCLE_LENGTH, block_length=1,
                                         num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return examples.batch(batch_size)


def open_folder(root: str, crop: str, skip_bad: bool) -> FolderSource:
  """Lists `root` (see `list_images`) into a FolderSource."""
  paths, labels, classes = list_images(root)
  described = f"{len(classes)} classes" if classes else "no class folders"
  logging.info("Listed %d images in %s (%s)", len(paths), root, described)
  return FolderSource(root, paths, labels, classes, crop, skip_bad)
