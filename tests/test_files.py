"""The one atomic write: complete files only, on any TensorFlow filesystem, with one recognisable temporary suffix."""

import os

import pytest
import tensorflow as tf

from gan_dist import errors
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


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary_file(tmp_path, monkeypatch):
  path = str(tmp_path / "kept.txt")
  files.write_atomic(path, "old")
  written = []
  real_rename = tf.io.gfile.rename

  def broken_rename(source, *args, **kwargs):
    written.append(open(source).read())  # The new bytes were written under the temporary name.
    raise OSError("disk full")

  monkeypatch.setattr(tf.io.gfile, "rename", broken_rename)
  with pytest.raises(OSError, match="disk full"):
    files.write_atomic(path, "new")
  assert open(path).read() == "old" and written == ["new"]
  assert os.listdir(tmp_path) == ["kept.txt"]  # Only a killed process leaves a *.gan_dist_tmp (clean_leftovers).
  monkeypatch.setattr(tf.io.gfile, "rename", real_rename)
  with pytest.raises(tf.errors.OpError):  # A directory where the file should go: the write fails, nothing is left.
    files.write_atomic(str(tmp_path), "into a directory")
  assert os.listdir(tmp_path) == ["kept.txt"] and not any(
      n.endswith(files.TMP_SUFFIX) for n in os.listdir(tmp_path.parent))


def test_output_paths_that_cannot_be_written_are_refused_in_one_line(tmp_path):
  (tmp_path / "a_file").write_text("x")
  (tmp_path / "a_dir").mkdir()
  refused = [
      (files.check_writable_file, str(tmp_path / "a_dir"), r"--out=.*/a_dir is a directory; give a file name"),
      (files.check_writable_file, str(tmp_path / "new") + "/", r"--out=.*/new/ is a directory; give a file name"),
      (files.check_writable_file, "", r"^--out is empty; give a file name$"),
      (files.check_writable_file, str(tmp_path / "a_file" / "x.npz"), r"/a_file is a file, not a directory"),
      (files.check_writable_file, "/proc/gan_dist_test/x.npz", r"cannot write into /proc \("),
      (files.check_writable_dir, str(tmp_path / "a_file"), r"--out=.*/a_file is a file, not a directory"),
      (files.check_writable_dir, str(tmp_path / "a_file" / "sub"), r"/a_file is a file, not a directory"),
  ]
  for check, path, message in refused:
    with pytest.raises(errors.UserError, match=message):
      check(path, "--out")
  for check, path in ((files.check_writable_file, str(tmp_path / "new" / "deeper" / "x.npz")),
                      (files.check_writable_file, str(tmp_path / "a_file")),  # Replaced, as asked.
                      (files.check_writable_dir, str(tmp_path / "a_dir")),
                      (files.check_writable_dir, str(tmp_path / "new_dir" / "sub")),
                      (files.check_writable_file, "ram://gan_dist_test/x.npz")):
    check(path, "--out")
  assert sorted(os.listdir(tmp_path)) == ["a_dir", "a_file"]  # The checks create nothing.


def test_temporary_names_are_unique_per_writer():
  names = {files.temporary_name("/w/flags.txt") for _ in range(100)}
  assert len(names) == 100 and all(n.startswith("/w/flags.txt.") and n.endswith(files.TMP_SUFFIX) for n in names)


def test_path_helpers(tmp_path):
  assert files.parent("gs://b/run/flags.txt") == "gs://b/run" and files.parent("flags.txt") == ""
  assert files.is_local("/tmp/x") and files.is_local("runs/x") and not files.is_local("gs://b/x")
  assert files.existing_ancestor(str(tmp_path / "no" / "such" / "dir")) == str(tmp_path)


def test_atomic_output_renames_on_success_and_removes_the_file_when_the_block_raises(tmp_path):
  path = str(tmp_path / "out.bin")
  with files.atomic_output(path) as tmp:
    assert tmp.endswith(files.TMP_SUFFIX) and os.path.dirname(tmp) == str(tmp_path)
    with open(tmp, "wb") as f:  # A writer that takes a file name (ArrayRecord's), not bytes.
      f.write(b"first")
    assert not os.path.exists(path)  # Nothing at `path` until the block ends.
  assert open(path, "rb").read() == b"first" and os.listdir(tmp_path) == ["out.bin"]
  with pytest.raises(ValueError, match="bad record count"):
    with files.atomic_output(path) as tmp:
      with open(tmp, "wb") as f:
        f.write(b"half of the second")
      raise ValueError("bad record count")
  assert open(path, "rb").read() == b"first" and os.listdir(tmp_path) == ["out.bin"]


def test_copy_atomic_copies_across_filesystems_and_leaves_no_temporary_file(tmp_path):
  local, remote = str(tmp_path / "a.bin"), "ram://gan_dist_test_copy/dir/a.bin"
  files.write_atomic(local, b"\x00bytes\xff" * 1000)
  files.copy_atomic(local, remote)
  assert files.read_bytes(remote) == b"\x00bytes\xff" * 1000
  files.copy_atomic(remote, str(tmp_path / "back.bin"))
  assert files.read_bytes(str(tmp_path / "back.bin")) == b"\x00bytes\xff" * 1000
  files.write_atomic(local, b"other")
  files.copy_atomic(local, str(tmp_path / "back.bin"))  # Replaces an existing file.
  assert files.read_bytes(str(tmp_path / "back.bin")) == b"other"
  assert tf.io.gfile.listdir("ram://gan_dist_test_copy/dir") == ["a.bin"]
  assert sorted(os.listdir(tmp_path)) == ["a.bin", "back.bin"]


def test_check_reachable_refuses_a_filesystem_tensorflow_cannot_reach_and_passes_the_others(tmp_path):
  """A scheme TensorFlow has no filesystem for is one line naming the path and TensorFlow's reason; local paths
  (missing ones too: outputs) and ram:// pass. (gs:// offline fails the same way, but tests do not reach out.)"""
  with pytest.raises(errors.UserError) as refused:
    files.check_reachable("foo://bucket/run", "--workdir=foo://bucket/run")
  assert str(refused.value) == ("--workdir=foo://bucket/run cannot be reached: File system scheme 'foo' not "
                                "implemented (file: 'foo://bucket/run')")
  for path in (str(tmp_path / "missing" / "run"), "relative/run", "ram://reachable/run"):
    files.check_reachable(path, "--out")
