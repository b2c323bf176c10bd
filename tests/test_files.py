"""The one atomic write: complete files only, on any TensorFlow filesystem, with one recognisable temporary suffix."""

import os

import pytest
import tensorflow as tf

from gan_dist import files


@pytest.mark.parametrize("root", ["local", "ram://gan_dist_test_files"])
def test_write_atomic_creates_directories_and_leaves_no_temporary_file(tmp_path, root):
  base = str(tmp_path) if root == "local" else root
  path = f"{base}/a/b/out.bin"
  files.write_atomic(path, b"\x00\x01payload")
  assert files.read_bytes(path) == b"\x00\x01payload"
  files.write_atomic(path, "text, replaced")  # Text is written as UTF-8 over the old file.
  assert files.read_text(path) == "text, replaced"
  assert tf.io.gfile.listdir(f"{base}/a/b") == ["out.bin"]


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
  path = str(tmp_path / "kept.txt")
  files.write_atomic(path, "old")

  def broken_rename(*args, **kwargs):
    raise OSError("disk full")

  monkeypatch.setattr(tf.io.gfile, "rename", broken_rename)
  with pytest.raises(OSError):
    files.write_atomic(path, "new")
  assert open(path).read() == "old"
  leftovers = [n for n in os.listdir(tmp_path) if n.endswith(files.TMP_SUFFIX)]
  assert len(leftovers) == 1 and leftovers[0].startswith("kept.txt.")  # What clean_leftovers recognises.


def test_temporary_names_are_unique_per_writer():
  names = {files.temporary_name("/w/flags.txt") for _ in range(100)}
  assert len(names) == 100 and all(n.startswith("/w/flags.txt.") and n.endswith(files.TMP_SUFFIX) for n in names)


def test_path_helpers(tmp_path):
  assert files.parent("gs://b/run/flags.txt") == "gs://b/run" and files.parent("flags.txt") == ""
  assert files.is_local("/tmp/x") and files.is_local("runs/x") and not files.is_local("gs://b/x")
  assert files.existing_ancestor(str(tmp_path / "no" / "such" / "dir")) == str(tmp_path)
