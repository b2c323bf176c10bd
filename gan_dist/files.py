"""Files on any TensorFlow filesystem (local, gs://, ram://): the one atomic write and the one temporary suffix.

Every file gan_dist writes into a workdir or a cache goes through `write_atomic`: the bytes go to
`<path>.<random>.gan_dist_tmp` and are renamed onto `path`, so a reader (another worker, a resumed run) sees the old
file or the new one, never half of one, and two processes writing the same file at once (a shared cache) do not
interleave. What a killed process leaves behind ends in `TMP_SUFFIX`, which is how `checkpoint.clean_leftovers`
recognises it.
"""

import os
import uuid
from typing import Union

import tensorflow as tf

# The suffix of every file being written (see write_atomic). Leftovers of a killed run end with it.
TMP_SUFFIX = ".gan_dist_tmp"


def parent(path: str) -> str:
  """The directory part of `path` ("" for a bare file name)."""
  return path.rstrip("/").rsplit("/", 1)[0] if "/" in path.rstrip("/") else ""


def temporary_name(path: str) -> str:
  """A fresh name beside `path` for writing it atomically; unique per call (several writers may race)."""
  return f"{path}.{uuid.uuid4().hex[:12]}{TMP_SUFFIX}"


def write_atomic(path: str, payload: Union[bytes, str]) -> None:
  """Writes `payload` to `path` (creating its directory) through a temporary name and a rename.

  Args:
    path: any TensorFlow filesystem path.
    payload: bytes, or text (written as UTF-8).
  """
  directory = parent(path)
  if directory:
    tf.io.gfile.makedirs(directory)
  tmp = temporary_name(path)
  with tf.io.gfile.GFile(tmp, "wb") as f:
    f.write(payload.encode() if isinstance(payload, str) else payload)
  tf.io.gfile.rename(tmp, path, overwrite=True)


def read_bytes(path: str) -> bytes:
  with tf.io.gfile.GFile(path, "rb") as f:
    return f.read()


def read_text(path: str) -> str:
  return read_bytes(path).decode()


def is_local(path: str) -> bool:
  """Whether `path` is on the local filesystem (no scheme such as gs:// or ram://)."""
  return "://" not in path


def existing_ancestor(path: str) -> str:
  """The nearest existing directory at or above the local `path` (what a new directory would be created in)."""
  path = os.path.abspath(path)
  while not os.path.exists(path):
    path = os.path.dirname(path)
  return path
