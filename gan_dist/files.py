"""Files on any TensorFlow filesystem (local, gs://, ram://): the one atomic write and the one temporary suffix.

Every file gan_dist writes into a workdir or a cache goes through `atomic_output` (`write_atomic` for bytes,
`copy_atomic` for a copy): it is written as `<path>.<random>.gan_dist_tmp` and renamed onto `path`, so a reader
(another worker, a resumed run) sees the old file or the new one, never half of one, and two processes writing the
same file at once (a shared cache) do not interleave. (TensorFlow writes checkpoints, TensorBoard events and
SavedModels itself, with its own temporary names; a SavedModel export writes its facts file last.) What a killed
process leaves behind ends in `TMP_SUFFIX`, which is how `checkpoint.clean_leftovers` recognises it.
"""

import contextlib
import os
import tempfile
import uuid
from typing import Iterator, Union

import tensorflow as tf

from gan_dist import errors

# The suffix of every file being written (see write_atomic). Leftovers of a killed run end with it.
TMP_SUFFIX = ".gan_dist_tmp"


def parent(path: str) -> str:
  """The directory part of `path` ("" for a bare file name)."""
  return path.rstrip("/").rsplit("/", 1)[0] if "/" in path.rstrip("/") else ""


def temporary_name(path: str) -> str:
  """A fresh name beside `path` for writing it atomically; unique per call (several writers may race)."""
  return f"{path}.{uuid.uuid4().hex[:12]}{TMP_SUFFIX}"


@contextlib.contextmanager
def atomic_output(path: str) -> Iterator[str]:
  """Yields a fresh temporary name beside `path` to write the file under; renames it onto `path` when the block
  ends, or removes it if the block raises (a full disk, a bad input, an interrupt): never half a file at `path`.

  For writers that take a file name (TensorFlow's copy, ArrayRecord's writer on local paths) rather than bytes.
  """
  tmp = temporary_name(path)
  try:
    yield tmp
    tf.io.gfile.rename(tmp, path, overwrite=True)
  except BaseException:
    try:
      if tf.io.gfile.exists(tmp):
        tf.io.gfile.remove(tmp)
    except (tf.errors.OpError, OSError):
      pass
    raise


def write_atomic(path: str, payload: Union[bytes, str]) -> None:
  """Writes `payload` to `path` (creating its directory) through a temporary name and a rename.

  Args:
    path: any TensorFlow filesystem path.
    payload: bytes, or text (written as UTF-8).
  """
  directory = parent(path)
  if directory:
    tf.io.gfile.makedirs(directory)
  with atomic_output(path) as tmp, tf.io.gfile.GFile(tmp, "wb") as f:
    f.write(payload.encode() if isinstance(payload, str) else payload)


def copy_atomic(source: str, path: str) -> None:
  """Copies the file `source` to `path` (any filesystems; `path`'s directory exists) through a temporary name and a
  rename: a reader sees no half copy, and processes copying the same file at once do not write into each other's."""
  with atomic_output(path) as tmp:
    tf.io.gfile.copy(source, tmp, overwrite=True)


def check_writable_file(path: str, flag: str) -> None:
  """Refuses, before any work, an output file that could not be written: `path` is a directory, its folder is a
  file, or (local paths) nothing can be created where its folder is or would be.

  Args:
    path: the output file (any TensorFlow filesystem).
    flag: the flag that named it, for the message (e.g. "--out").

  Raises:
    errors.UserError: the one-line reason.
  """
  if not path:
    raise errors.UserError(f"{flag} is empty; give a file name")
  if path.endswith("/") or tf.io.gfile.isdir(path):
    raise errors.UserError(f"{flag}={path} is a directory; give a file name")
  _check_can_create_in(parent(path) or ("/" if path.startswith("/") else "."), f"{flag}={path}")


def check_writable_dir(path: str, flag: str, label: str = "") -> None:
  """As `check_writable_file`, for an output directory: `path` must be a directory or not exist yet.

  `label`: how the messages name the directory when no flag names it alone (default "FLAG=PATH").
  """
  label = label or f"{flag}={path}"
  if tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path):
    raise errors.UserError(f"{label} is a file, not a directory")
  _check_can_create_in(path, label)


def _check_can_create_in(folder: str, what: str) -> None:
  """Raises errors.UserError unless `folder` is, or can be made, a directory that files can be created in."""
  while parent(folder) and not tf.io.gfile.exists(folder):  # The nearest ancestor that exists.
    folder = parent(folder)
  if not tf.io.gfile.exists(folder):
    return  # A relative path's first part, or a bucket: nothing to check before writing.
  if not tf.io.gfile.isdir(folder):
    raise errors.UserError(f"{what}: {folder} is a file, not a directory")
  if is_local(folder):
    try:  # Permissions alone do not tell (root, read-only mounts, /proc): create a file there, and remove it.
      handle, probe = tempfile.mkstemp(dir=folder, suffix=TMP_SUFFIX)
      os.close(handle)
      os.remove(probe)
    except OSError as e:
      raise errors.UserError(f"{what}: cannot write into {folder} ({e.strerror or e})") from None


def check_reachable(path: str, label: str) -> None:
  """Refuses a path on a filesystem TensorFlow cannot reach: a scheme it has no filesystem for (s3://, hdfs:// in
  TensorFlow 2.21) or a bucket it cannot talk to (no network, no credentials). Said before any work: the first use
  would raise the filesystem's error, with a traceback, after minutes of reading data. Local paths pass unprobed.

  Args:
    path: any path (a missing one is reachable: outputs do not exist yet).
    label: how the message names it (e.g. "--workdir=gs://b/run").

  Raises:
    errors.UserError: "LABEL cannot be reached: REASON" (the filesystem's first line).
  """
  if is_local(path):
    return
  try:
    tf.io.gfile.exists(path)
  except tf.errors.OpError as e:
    reason = (e.message or "").strip().splitlines()
    raise errors.UserError(f"{label} cannot be reached: {reason[0] if reason else type(e).__name__}") from None


def read_bytes(path: str) -> bytes:
  with tf.io.gfile.GFile(path, "rb") as f:
    return f.read()


def read_text(path: str) -> str:
  return read_bytes(path).decode()


def is_local(path: str) -> bool:
  """Whether `path` is on the local filesystem (no scheme such as gs:// or ram://)."""
  return "://" not in path


def is_within(path: str, folder: str) -> bool:
  """Whether `path` is `folder` or below it: local paths as they resolve (symbolic links, `..`), others as written."""
  if is_local(path) != is_local(folder):
    return False
  if is_local(path):
    path, folder = os.path.realpath(path), os.path.realpath(folder)
  path, folder = path.rstrip("/"), folder.rstrip("/")
  return path == folder or path.startswith(folder + "/")


def existing_ancestor(path: str) -> str:
  """The nearest existing directory at or above the local `path` (what a new directory would be created in)."""
  path = os.path.abspath(path)
  while not os.path.exists(path):
    path = os.path.dirname(path)
  return path
