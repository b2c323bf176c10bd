"""--dataset=packed: an image folder packed once into ArrayRecord shards (`python -m gan_dist.pack`).

Millions of small files on a network filesystem or a bucket make listing and opening them the bottleneck; a pack
holds the folder's encoded image files, unchanged, in a few ArrayRecord shards read by random access, with the
labels, class names, the files' relative paths and a manifest. A packed folder trains exactly as the folder does:
the same examples in the same order (its sorted paths), decoded by the same graph (bad files get the same
substitutes), so a run from the folder and from its pack are identical.

Layout of a pack directory:
  shard-00000-of-00004.array_record ...   the files' bytes, example i in shard i // shard_size
  manifest.json                           written last: format, source, paths, labels, class names, shards (file,
                                          first example, count, bytes, sha256); its presence marks the pack complete
  plan.json                               only while packing: what is being packed (an interrupted packing with the
                                          same plan resumes at the first missing shard; another plan restarts)
Shards are written locally, then copied through tf.io.gfile (any TensorFlow filesystem); reading a remote pack
copies each shard once into a local cache directory (ArrayRecord reads local files): --data_cache_dir when it is
local, else the temporary directory, named by the shard's SHA-256, so that a pack written again is copied again.
"""

import hashlib
import json
import os
import tempfile
import threading
from typing import Callable, List, Optional

from absl import logging
import numpy as np
import tensorflow as tf

from gan_dist import files
from gan_dist.datasets.base import DataError
from gan_dist.datasets.folder import FolderSource, list_images

FORMAT = "gan_dist-pack-v1"
# What the format of every version of a pack's manifest starts with.
_FORMAT_FAMILY = "gan_dist-pack-"
MANIFEST = "manifest.json"
PLAN = "plan.json"
SHARD_SIZE = 10000


def _array_record():
  # The module of the array_record package (a TFDS dependency) that holds its reader and writer.
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  return array_record_module


def read_manifest(directory: str) -> Optional[dict]:
  """The manifest of the complete pack in `directory`, or None where there is none: no manifest.json, or one that is
  not a gan_dist pack's (a folder of images may hold a manifest.json of its own, and is still a folder).

  A pack of another version of the format is a pack (`open_packed` names its format).
  """
  path = f"{directory.rstrip('/')}/{MANIFEST}"
  if not directory or not tf.io.gfile.exists(path) or tf.io.gfile.isdir(path):
    return None
  try:
    manifest = json.loads(files.read_text(path))
  except ValueError:  # Not JSON, or not UTF-8 (UnicodeDecodeError is a ValueError).
    return None
  if not isinstance(manifest, dict) or not str(manifest.get("format", "")).startswith(_FORMAT_FAMILY):
    return None
  return manifest


_OTHER_BYTES = "its bytes differ from the manifest's SHA-256"


class _DamagedCopy(Exception):
  """A remote shard whose copied bytes are not the manifest's."""


def _shard_name(index: int, count: int) -> str:
  return f"shard-{index:05d}-of-{count:05d}.array_record"


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with tf.io.gfile.GFile(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 22), b""):
      digest.update(chunk)
  return digest.hexdigest()


def _file_bytes(path: str, progress: Callable[[str], None]) -> bytes:
  """The bytes of image file `path`, or none if it cannot be read (a broken link, no permission): packed empty, it
  fails to decode as the unreadable file fails in the folder, and training replaces it the same way."""
  try:
    with tf.io.gfile.GFile(path, "rb") as f:
      return f.read()
  except tf.errors.OpError as e:
    progress(f"cannot read {path} ({type(e).__name__}: {' '.join(e.message.split())[:200]}): packed as an empty "
             "record, which training replaces like any undecodable image")
    return b""


def write_pack(folder: str, out: str, shard_size: int = SHARD_SIZE,
               progress: Callable[[str], None] = logging.info) -> dict:
  """Packs the image folder `folder` into `out` (see the module docstring); returns the manifest.

  Resumable: an interrupted packing of the same folder listing continues at its first missing shard; a different
  listing (files added or removed) starts over; a complete pack of the same listing is left as it is, except for
  shards that no longer match the manifest (missing, truncated, changed bytes), which are written again: the repair
  that a damaged shard's error asks for. A complete pack of the same listing with another shard size is refused
  (packing it again would replace every shard); an interrupted one starts over with the new size.

  Args:
    folder: the image folder to pack.
    out: the pack directory (any TensorFlow filesystem).
    shard_size: images per shard.
    progress: gets each line for the user: shards written or repaired, then the summary of the pack; or only the
      line that a complete pack is left as it is.

  Raises:
    DataError: the folder has no images, or `out` holds something else than a pack, or a complete pack of another
      listing or shard size.
    errors.UserError: `out` is a file, or nothing can be written where it is (files.check_writable_dir).
  """
  out = out.rstrip("/")
  files.check_writable_dir(out, "--out")
  paths, labels, class_names = list_images(folder)
  if not paths:
    raise DataError(f"--data_dir={folder} holds no images to pack")
  root = folder.rstrip("/")
  relative = [p[len(root) + 1:] for p in paths]
  count = -(-len(paths) // shard_size)
  plan = dict(format=FORMAT, source=root, num_examples=len(paths), class_names=list(class_names),
              paths=relative, labels=[int(v) for v in labels], shard_size=shard_size,
              shards=[dict(file=_shard_name(i, count), first=i * shard_size,
                           count=min(shard_size, len(paths) - i * shard_size)) for i in range(count)])
  plan_text = json.dumps(plan, sort_keys=True)
  manifest = read_manifest(out)
  if manifest is not None:
    if not all(manifest.get(k) == plan[k] for k in ("format", "paths", "labels", "class_names")):
      raise DataError(f"--out={out} holds a pack of another listing; remove it or choose another --out")
    if manifest.get("shard_size") != shard_size:
      old_size = manifest.get("shard_size")
      raise DataError(f"--out={out} holds this listing packed with --shard_size={old_size}, not {shard_size}; rerun "
                      f"with --shard_size={old_size} to keep it, or remove it or choose another --out to pack with "
                      f"--shard_size={shard_size}")
    damaged = _damaged_shards(out, manifest)
    if not damaged:
      progress(f"{out} already holds this pack ({len(paths)} images); nothing to do")
      return manifest
    # Back to a packing in progress (plan first, then no manifest): killed now, the next run resumes the repair.
    files.write_atomic(f"{out}/{PLAN}", plan_text)
    tf.io.gfile.remove(f"{out}/{MANIFEST}")
    for name, problem in damaged:
      progress(f"{out}/{name} is damaged: {problem}; packing it again")
      if tf.io.gfile.exists(f"{out}/{name}"):
        tf.io.gfile.remove(f"{out}/{name}")
  if tf.io.gfile.exists(out) and tf.io.gfile.listdir(out) and not tf.io.gfile.exists(f"{out}/{PLAN}"):
    raise DataError(f"--out={out} exists and is not a pack being written; choose an empty or new directory")
  tf.io.gfile.makedirs(out)
  old_plan = files.read_text(f"{out}/{PLAN}") if tf.io.gfile.exists(f"{out}/{PLAN}") else plan_text
  if old_plan != plan_text:
    progress(f"{out} holds an interrupted packing {_other_plan(old_plan, plan)}: starting over")
    for name in tf.io.gfile.listdir(out):
      tf.io.gfile.remove(f"{out}/{name}")
  files.write_atomic(f"{out}/{PLAN}", plan_text)
  writer_module = _array_record()
  shards = []
  for shard in plan["shards"]:
    target = f"{out}/{shard['file']}"
    if not tf.io.gfile.exists(target):
      staging = os.path.join(tempfile.mkdtemp(prefix="gan_dist_pack_"), shard["file"])
      writer = writer_module.ArrayRecordWriter(staging, "group_size:1")
      for path in paths[shard["first"]:shard["first"] + shard["count"]]:
        writer.write(_file_bytes(path, progress))
      writer.close()
      # Complete shards only ever have their final name: a kill leaves a temporary file that the next run removes.
      files.copy_atomic(staging, target)
      tf.io.gfile.rmtree(os.path.dirname(staging))
      progress(f"wrote {target} ({shard['count']} images)")
    shards.append(dict(shard, bytes=tf.io.gfile.stat(target).length, sha256=_sha256(target)))
  for name in tf.io.gfile.listdir(out):
    if name.endswith(files.TMP_SUFFIX):
      tf.io.gfile.remove(f"{out}/{name}")
  manifest = dict(plan, shards=shards)
  files.write_atomic(f"{out}/{MANIFEST}", json.dumps(manifest))  # Last: marks the pack complete.
  tf.io.gfile.remove(f"{out}/{PLAN}")
  progress(f"Packed {len(paths)} images of {root} ({len(class_names)} classes) into {count} shard(s) in {out}")
  return manifest


def _other_plan(old_text: str, plan: dict) -> str:
  """How the interrupted packing whose plan.json holds `old_text` differs from `plan`, for the line that it starts
  over: another shard size of this listing, or another listing."""
  try:
    old = json.loads(old_text)
  except ValueError:
    old = None
  if isinstance(old, dict) and dict(old, shard_size=plan["shard_size"], shards=plan["shards"]) == plan:
    return f"of this listing with --shard_size={old['shard_size']}, not {plan['shard_size']}"
  return "of another listing"


def _shard_file_problem(path: str, shard: dict) -> Optional[str]:
  """What is wrong with the shard file at `path` against its manifest entry as far as its size tells, or None."""
  if not tf.io.gfile.exists(path):
    return "it is missing"
  length = tf.io.gfile.stat(path).length
  return None if length == shard["bytes"] else f"it has {length} bytes, the manifest says {shard['bytes']}"


def _damaged_shards(out: str, manifest: dict) -> List[tuple]:
  """[(shard file name, what is wrong)] of the shards of the complete pack `out` that differ from its manifest
  (missing, another size, other bytes: their SHA-256)."""
  damaged = []
  for shard in manifest["shards"]:
    path = f"{out}/{shard['file']}"
    problem = _shard_file_problem(path, shard)
    if problem is None and _sha256(path) != shard["sha256"]:
      problem = _OTHER_BYTES
    if problem:
      damaged.append((shard["file"], problem))
  return damaged


class PackedSource(FolderSource):
  """A pack's examples: a FolderSource whose file bytes come from the shards (same order, decoding, labels)."""

  def __init__(self, pack: str, manifest: dict, records: np.ndarray, crop: str, skip_bad: bool, cache_dir: str,
               name: str = ""):
    paths = [f"{pack}/{manifest['paths'][i]}" for i in records]  # Named by pack and original path, for messages.
    super().__init__(pack, paths, np.asarray(manifest["labels"], np.int32)[records], manifest["class_names"], crop,
                     skip_bad, name or f"packed image folder {pack}")
    self.pack, self.manifest, self._records, self._cache_dir = pack, manifest, records, cache_dir
    self._firsts = np.asarray([s["first"] for s in manifest["shards"]], np.int64)
    self._readers: List[Optional[object]] = [None] * len(manifest["shards"])
    self._reader_lock = threading.Lock()

  def filtered(self, keep: np.ndarray, name: str) -> "PackedSource":
    return PackedSource(self.pack, self.manifest, self._records[keep], self.crop, self.skip_bad, self._cache_dir,
                        name)

  def _reader(self, shard: int):
    with self._reader_lock:
      if self._readers[shard] is None:
        entry = self.manifest["shards"][shard]
        path = f"{self.pack}/{entry['file']}"
        if not files.is_local(path):
          path = _local_copy(path, entry["sha256"], self._cache_dir)
        self._readers[shard] = _array_record().ArrayRecordReader(path, "readahead_buffer_size:0")
      return self._readers[shard]

  def _read(self, record: np.int64) -> bytes:
    """The bytes of pack record `record` (runs in tf.numpy_function)."""
    shard = int(np.searchsorted(self._firsts, record, side="right") - 1)
    return self._reader(shard).read([int(record - self._firsts[shard])])[0]

  def _file_bytes(self, paths, index):
    record = tf.gather(tf.constant(self._records, tf.int64), index)
    data = tf.numpy_function(self._read, [record], tf.string, stateful=False)
    data.set_shape([])
    return data


def _copies_dir(cache_dir: str) -> str:
  """The local folder of remote shards' copies: under --data_cache_dir if it is local, else the temporary one."""
  return os.path.join(cache_dir if cache_dir and files.is_local(cache_dir) else tempfile.gettempdir(),
                      "gan_dist_packs")


def _local_copy(path: str, sha256: str, cache_dir: str) -> str:
  """A local copy of the remote shard `path` whose bytes have the digest `sha256` (from the manifest), made once.

  Named by that digest: a pack packed again (a repaired shard) is copied again, never read from a stale copy.
  Workers of one machine may copy the same shard at once: each through a temporary name of its own.

  Raises:
    _DamagedCopy: the bytes copied are not the ones the manifest names (the copy is not kept).
  """
  folder = _copies_dir(cache_dir)
  local = os.path.join(folder, f"{sha256[:16]}-{os.path.basename(path)}")
  if not os.path.exists(local):
    os.makedirs(folder, exist_ok=True)
    with files.atomic_output(local) as tmp:
      tf.io.gfile.copy(path, tmp, overwrite=True)
      if _sha256(tmp) != sha256:  # Its name vouches for its bytes: a damaged shard is not kept under it.
        raise _DamagedCopy(_OTHER_BYTES)
  return local


def check_not_packing(directory: str) -> None:
  """Raises DataError if `directory` holds an interrupted packing (a plan, no manifest), naming it as such."""
  directory = directory.rstrip("/")
  if directory and tf.io.gfile.exists(f"{directory}/{PLAN}") and read_manifest(directory) is None:
    raise DataError(f"--data_dir={directory} is an interrupted packing (rerun python -m gan_dist.pack to finish it)")


def open_packed(pack: str, crop: str, skip_bad: bool, cache_dir: str,
                manifest: Optional[dict] = None) -> PackedSource:
  """Opens a complete pack, checking every shard's record count (a truncated or damaged shard is named).

  Args:
    pack: the pack directory.
    crop: --crop.
    skip_bad: --skip_bad_images.
    cache_dir: --data_cache_dir (where a remote pack's shards are copied).
    manifest: the pack's manifest where the caller has read it already (`read_manifest`); read here if None.

  Raises:
    DataError: not a complete pack, or a damaged shard.
  """
  pack = pack.rstrip("/")
  manifest = read_manifest(pack) if manifest is None else manifest
  if manifest is None:
    check_not_packing(pack)
    if tf.io.gfile.exists(f"{pack}/{MANIFEST}"):
      what = (f"not a pack: its {MANIFEST} is not a gan_dist pack's; for a folder of images pass "
              "--dataset=folder")
    else:
      what = f"not a pack (no {MANIFEST})"
    raise DataError(f"--data_dir={pack} is {what}")
  if manifest.get("format") != FORMAT:
    raise DataError(f"--data_dir={pack}: unknown pack format {manifest.get('format')!r} (this version reads {FORMAT})")
  source = PackedSource(pack, manifest, np.arange(manifest["num_examples"], dtype=np.int64), crop, skip_bad,
                        cache_dir)
  if not files.is_local(pack):
    copies = _copies_dir(cache_dir)
    files.check_writable_dir(copies, "--data_cache_dir", label=f"{copies} (where the shards of {pack} are copied)")
  for index, shard in enumerate(manifest["shards"]):
    path = f"{pack}/{shard['file']}"
    problem = _shard_file_problem(path, shard)
    if problem is None:
      try:
        found = source._reader(index).num_records()  # pylint: disable=protected-access
      except _DamagedCopy as e:
        found, problem = -1, str(e)
      except Exception as e:  # pylint: disable=broad-except  (the reader's own errors: a damaged file)
        found, problem = -1, f"it cannot be read ({' '.join(str(e).split())[:200]})"
      if problem is None and found != shard["count"]:
        problem = f"it holds {found} records, the manifest says {shard['count']}"
    if problem:
      raise DataError(f"pack shard {path} is damaged: {problem}; pack the folder again (python -m gan_dist.pack)")
  logging.info("Opened pack %s: %d images in %d shard(s)", pack, manifest["num_examples"], len(manifest["shards"]))
  return source
