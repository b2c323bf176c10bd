"""python -m gan_dist.pack and --dataset=packed: a pack trains exactly as its folder, packing resumes or restarts,
a damaged shard is named in one line."""

import dataclasses
import json
import os
import tempfile
import types

import numpy as np
import pytest
import tensorflow as tf

from gan_dist import data
from gan_dist import errors
from gan_dist import files
from gan_dist import main
from gan_dist import pack
from gan_dist import train
from tests import helpers


@pytest.fixture
def folder(tmp_path):
  # Mixed sizes, modes and formats, three classes, two bad files (substituted by index, in both).
  return helpers.make_image_folder(str(tmp_path / "images"), num=40)["root"]


def test_pack_holds_the_folder_in_order_and_is_recognised(tmp_path, folder, monkeypatch, capsys):
  out = str(tmp_path / "pack")
  code, err = helpers.tool_command(pack, [f"--data_dir={folder}", f"--out={out}", "--shard_size=7"], monkeypatch,
                                   capsys)
  assert code == 0, err
  manifest = json.loads(open(os.path.join(out, "manifest.json")).read())
  assert [s["count"] for s in manifest["shards"]] == [7] * 6
  assert sorted(os.listdir(out)) == sorted(["manifest.json"] + [s["file"] for s in manifest["shards"]])
  folder_source = data.open_source(helpers.config(tmp_path, dataset="folder", data_dir=folder))
  for cfg in (helpers.config(tmp_path, dataset="packed", data_dir=out),
              helpers.config(tmp_path, dataset="folder", data_dir=out)):  # Recognised as a pack.
    packed = data.open_source(cfg)
    assert isinstance(packed, data.PackedSource)
    assert packed.num_examples == folder_source.num_examples == 42
    np.testing.assert_array_equal(packed.example_labels(), folder_source.example_labels())
    assert packed.class_names == folder_source.class_names
  # Packing again: nothing to do.
  messages = []
  assert data.write_pack(folder, out, shard_size=7, progress=messages.append) == manifest
  assert messages == [f"{out} already holds this pack (42 images); nothing to do"]


@pytest.mark.slow
def test_a_run_from_the_pack_equals_the_run_from_its_folder(tmp_path, folder, one_device):
  out = str(tmp_path / "pack")
  data.write_pack(folder, out, shard_size=9)
  base = helpers.config(tmp_path, dataset="folder", data_dir=folder, arch="mlp", channels=3, latent_dim=8,
                        strategy="one_device", train_steps=3, random_flip=True, checkpoint_every=3)
  runs = []
  for name, overrides in (("folder", {}), ("pack", dict(dataset="packed", data_dir=out))):
    cfg = dataclasses.replace(base, workdir=str(tmp_path / name), **overrides)
    train.run(cfg, one_device)
    runs.append(helpers.checkpoint_values(os.path.join(cfg.workdir, "checkpoints", "ckpt-3")))
  assert runs[0].keys() == runs[1].keys()
  for name in runs[0]:  # The same examples, flips and substitutes of the bad files, decoded by the same graph.
    np.testing.assert_array_equal(runs[0][name], runs[1][name], err_msg=name)


def test_interrupted_packing_resumes_and_another_listing_starts_over(tmp_path, folder):
  out = str(tmp_path / "pack")
  written = []

  def killed_after_two(message):
    written.append(message)
    if len(written) == 2:
      raise KeyboardInterrupt  # A kill in the middle of packing.

  with pytest.raises(KeyboardInterrupt):
    data.write_pack(folder, out, shard_size=7, progress=killed_after_two)
  assert sorted(os.listdir(out)) == ["plan.json", "shard-00000-of-00006.array_record",
                                     "shard-00001-of-00006.array_record"]
  for dataset in ("packed", "folder"):  # As --dataset=folder, it "held no image files (1 .array_record, 1 .json)".
    with pytest.raises(errors.UserError) as refused:
      data.open_source(helpers.config(tmp_path, dataset=dataset, data_dir=out))
    assert str(refused.value) == (f"--data_dir={out} is an interrupted packing (rerun python -m gan_dist.pack to "
                                  "finish it)")
  messages = []
  data.write_pack(folder, out, shard_size=7, progress=messages.append)
  assert len([m for m in messages if m.startswith("wrote")]) == 4  # Only the missing shards.
  assert data.open_source(helpers.config(tmp_path, dataset="packed", data_dir=out)).num_examples == 42

  # Interrupted again, then the folder changes: the next packing starts over.
  other = str(tmp_path / "pack2")
  written.clear()
  with pytest.raises(KeyboardInterrupt):
    data.write_pack(folder, other, shard_size=7, progress=killed_after_two)
  helpers.make_image_folder(os.path.join(folder, "bird", "extra"), num=3, classes=(), bad=(), seed=5)
  messages = []
  data.write_pack(folder, other, shard_size=7, progress=messages.append)
  assert messages[0].endswith("holds an interrupted packing of another listing: starting over")
  assert data.open_source(helpers.config(tmp_path, dataset="packed", data_dir=other)).num_examples == 45


def test_a_damaged_shard_is_one_line_and_exit_2(tmp_path, folder, one_device, capsys):
  out = str(tmp_path / "pack")
  data.write_pack(folder, out, shard_size=7)
  shard = os.path.join(out, "shard-00002-of-00006.array_record")
  with open(shard, "r+b") as f:
    f.truncate(100)
  with pytest.raises(errors.UserError, match=rf"pack shard {shard} is damaged: it has 100 bytes"):
    data.open_source(helpers.config(tmp_path, dataset="packed", data_dir=out))
  cfg = helpers.config(tmp_path, dataset="packed", data_dir=out, strategy="one_device")
  assert main.run_cli(cfg, make_strategy=lambda _: one_device) == errors.EXIT_USAGE
  err = capsys.readouterr().err
  assert [line for line in err.splitlines() if line.startswith("error:")] == [
      f"error: pack shard {shard} is damaged: it has 100 bytes, the manifest says "
      f"{json.load(open(os.path.join(out, 'manifest.json')))['shards'][2]['bytes']}; pack the folder again "
      "(python -m gan_dist.pack)"]
  assert not os.path.exists(cfg.workdir)


@pytest.mark.parametrize("damage", ["truncated", "missing", "flipped_byte"])
def test_packing_again_repairs_a_damaged_shard_as_its_error_says(tmp_path, folder, monkeypatch, capsys, damage):
  out = str(tmp_path / "pack")
  data.write_pack(folder, out, shard_size=7)
  shard = os.path.join(out, "shard-00002-of-00006.array_record")
  good = {name: open(os.path.join(out, name), "rb").read() for name in os.listdir(out)}
  if damage == "missing":
    os.remove(shard)
  else:
    with open(shard, "r+b") as f:
      if damage == "truncated":
        f.truncate(100)
      else:  # The same size, one byte changed: only the manifest's SHA-256 tells.
        f.seek(50)
        byte = f.read(1)
        f.seek(50)
        f.write(bytes([byte[0] ^ 0xFF]))
  code, err = helpers.tool_command(pack, [f"--data_dir={folder}", f"--out={out}", "--shard_size=7"], monkeypatch,
                                   capsys)
  assert code == 0, err
  repaired = {name: open(os.path.join(out, name), "rb").read() for name in os.listdir(out)}
  assert repaired == good  # The same shards and manifest as the first packing, nothing else left.
  data.open_source(helpers.config(tmp_path, dataset="packed", data_dir=out))  # Opens again.


def _pack_command(argv, monkeypatch, capsys):
  """helpers.tool_command(pack, ...) that also returns what the tool printed: (exit code, stdout, stderr)."""
  printed = []

  def readouterr():
    captured = capsys.readouterr()
    printed.append(captured.out)
    return captured

  code, err = helpers.tool_command(pack, argv, monkeypatch, types.SimpleNamespace(readouterr=readouterr))
  return code, printed[-1], err


def test_pack_prints_its_summary_and_a_rerun_on_the_complete_pack_only_nothing_to_do(tmp_path, folder, monkeypatch,
                                                                                      capsys):
  # A rerun printed "nothing to do" and then "Packed 42 images ...", as if it had packed them again.
  out = str(tmp_path / "pack")
  argv = [f"--data_dir={folder}", f"--out={out}", "--shard_size=7"]
  code, printed, err = _pack_command(argv, monkeypatch, capsys)
  assert code == 0, err
  assert printed.splitlines()[-1] == f"Packed 42 images of {folder} (3 classes) into 6 shard(s) in {out}"
  code, printed, err = _pack_command(argv, monkeypatch, capsys)
  assert code == 0, err
  assert printed == f"{out} already holds this pack (42 images); nothing to do\n"


def test_a_complete_pack_with_another_shard_size_is_refused_naming_the_shard_size_and_left_as_it_was(
    tmp_path, folder, monkeypatch, capsys):
  # The same listing with another --shard_size was refused as "a pack of another listing".
  out = str(tmp_path / "pack")
  data.write_pack(folder, out, shard_size=7)
  before = helpers.snapshot(out)
  code, printed, err = _pack_command([f"--data_dir={folder}", f"--out={out}", "--shard_size=9"], monkeypatch, capsys)
  assert code == 2 and not printed
  assert err.splitlines() == [
      f"error: --out={out} holds this listing packed with --shard_size=7, not 9; rerun with --shard_size=7 to keep "
      "it, or remove it or choose another --out to pack with --shard_size=9"]
  assert helpers.snapshot(out) == before


def test_an_interrupted_packing_with_another_shard_size_starts_over_naming_the_shard_size(tmp_path, folder):
  out = str(tmp_path / "pack")
  written = []

  def killed_after_one(message):
    written.append(message)
    raise KeyboardInterrupt  # Killed once the first shard is written.

  with pytest.raises(KeyboardInterrupt):
    data.write_pack(folder, out, shard_size=7, progress=killed_after_one)
  assert sorted(os.listdir(out)) == ["plan.json", "shard-00000-of-00006.array_record"]
  messages = []
  manifest = data.write_pack(folder, out, shard_size=9, progress=messages.append)
  assert messages[0] == f"{out} holds an interrupted packing of this listing with --shard_size=7, not 9: starting over"
  assert sorted(os.listdir(out)) == sorted(["manifest.json"] + [s["file"] for s in manifest["shards"]])
  assert [s["count"] for s in manifest["shards"]] == [9, 9, 9, 9, 6]


def test_pack_needs_data_dir_and_out(tmp_path, folder, monkeypatch, capsys):
  code, err = helpers.tool_command(pack, [f"--data_dir={folder}"], monkeypatch, capsys)
  assert code == 2 and "needs --data_dir=FOLDER and --out=DIR" in err
  (tmp_path / "busy").mkdir()
  (tmp_path / "busy" / "notes.txt").write_text("mine")
  code, err = helpers.tool_command(pack, [f"--data_dir={folder}", f"--out={tmp_path / 'busy'}"], monkeypatch, capsys)
  assert code == 2 and "exists and is not a pack being written" in err
  (tmp_path / "a_file").write_text("mine")
  code, err = helpers.tool_command(pack, [f"--data_dir={folder}", f"--out={tmp_path / 'a_file'}"], monkeypatch,
                                   capsys)
  assert code == 2 and f"--out={tmp_path / 'a_file'} is a file, not a directory" in err
  assert (tmp_path / "a_file").read_text() == "mine"


@pytest.mark.parametrize("text", [b'{"name": "my photos", "version": 3}', b"not json", b"[1, 2]", b"\xff\xfe"])
def test_a_folder_with_a_manifest_json_of_its_own_is_a_folder_not_a_pack(tmp_path, folder, monkeypatch, capsys,
                                                                          text):
  """Downloaded datasets come with a manifest.json of their own: --dataset=folder took such a folder for a pack
  (refused as "unknown pack format None", or a traceback and exit 1 where it was not a JSON object), and packing into
  a directory holding one failed the same ways."""
  with open(os.path.join(folder, "manifest.json"), "wb") as f:
    f.write(text)
  source = data.open_source(helpers.config(tmp_path, dataset="folder", data_dir=folder))
  assert not isinstance(source, data.PackedSource) and source.num_examples == 42
  with pytest.raises(errors.UserError) as refused:
    data.open_source(helpers.config(tmp_path, dataset="packed", data_dir=folder))
  assert str(refused.value) == (f"--data_dir={folder} is not a pack: its manifest.json is not a gan_dist pack's; "
                                "for a folder of images pass --dataset=folder")
  out = tmp_path / "out"
  out.mkdir()
  (out / "manifest.json").write_bytes(text)
  code, err = helpers.tool_command(pack, [f"--data_dir={folder}", f"--out={out}"], monkeypatch, capsys)
  assert code == 2 and err.strip().endswith(f"--out={out} exists and is not a pack being written; choose an empty "
                                            "or new directory"), err
  assert os.listdir(out) == ["manifest.json"]


def test_an_unreadable_file_is_packed_empty_and_replaced_as_in_its_folder(tmp_path, folder):
  # A broken link: training on the folder skips it like any bad file; packing stopped with a traceback.
  os.symlink(str(tmp_path / "gone.png"), os.path.join(folder, "cat", "broken.png"))
  out = str(tmp_path / "pack")
  messages = []
  manifest = data.write_pack(folder, out, shard_size=9, progress=messages.append)
  assert manifest["num_examples"] == 43
  assert [m for m in messages if m.startswith(f"cannot read {folder}/cat/broken.png (NotFoundError")]
  images = []
  for cfg in (helpers.config(tmp_path, dataset="folder", data_dir=folder),
              helpers.config(tmp_path, dataset="packed", data_dir=out)):
    batch = next(iter(data.eval_dataset(data.open_source(cfg), (16, 16, 3), batch_size=43)))
    images.append(batch["images"].numpy())
  np.testing.assert_array_equal(images[0], images[1])  # The same substitute for it, and for the two bad files.


def test_a_remote_pack_is_copied_once_by_shard_digest_and_a_copy_must_match_the_manifest(tmp_path, folder,
                                                                                          monkeypatch):
  # ArrayRecord reads local files: the shards of a pack on another filesystem (ram:// here, gs:// for users) are
  # copied into --data_cache_dir, named by their SHA-256 in the manifest.
  out, cache = f"ram://gan_dist_test_remote_pack_{os.getpid()}/pack", str(tmp_path / "cache")
  manifest = data.write_pack(folder, out, shard_size=7)
  cfg = helpers.config(tmp_path, dataset="packed", data_dir=out, data_cache_dir=cache)
  folder_images = _images(helpers.config(tmp_path, dataset="folder", data_dir=folder))
  np.testing.assert_array_equal(_images(cfg), folder_images)
  copies = os.path.join(cache, "gan_dist_packs")
  expected = sorted(f"{s['sha256'][:16]}-{s['file']}" for s in manifest["shards"])
  assert sorted(os.listdir(copies)) == expected  # One per shard; no temporary file left.
  stamps = {name: os.stat(os.path.join(copies, name)).st_mtime_ns for name in expected}
  data.open_source(cfg)  # Opened again: the copies are read, not made again.
  assert {name: os.stat(os.path.join(copies, name)).st_mtime_ns for name in expected} == stamps

  # Another folder packed at the same place: same shard names, other bytes. Its copies are its own (a copy named
  # by path alone served the old images).
  tf.io.gfile.rmtree(out)
  other = helpers.make_image_folder(str(tmp_path / "other"), num=40, seed=7)["root"]
  data.write_pack(other, out, shard_size=7)
  np.testing.assert_array_equal(_images(cfg), _images(helpers.config(tmp_path, dataset="folder", data_dir=other)))
  assert len(os.listdir(copies)) == 12

  # A remote shard damaged in place (same size, one byte changed): its copy does not match the manifest and is not
  # kept. A remote --data_cache_dir is no place for local copies: the temporary directory is.
  shard = f"{out}/shard-00002-of-00006.array_record"
  damaged = bytearray(files.read_bytes(shard))
  damaged[50] ^= 0xFF
  files.write_atomic(shard, bytes(damaged))
  monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
  (tmp_path / "cwd").mkdir()
  monkeypatch.chdir(tmp_path / "cwd")
  remote_cache = dataclasses.replace(cfg, data_cache_dir="ram://gan_dist_test_pack_cache")
  with pytest.raises(errors.UserError) as refused:
    data.open_source(remote_cache)
  assert str(refused.value) == (f"pack shard {shard} is damaged: its bytes differ from the manifest's SHA-256; pack "
                                "the folder again (python -m gan_dist.pack)")
  shards = json.loads(files.read_text(f"{out}/manifest.json"))["shards"]
  # Shards 0 and 1 copied (opening checks them in order), shard 2's bad copy removed; no local "ram:" folder.
  assert sorted(os.listdir(tmp_path / "tmp" / "gan_dist_packs")) == sorted(f"{s['sha256'][:16]}-{s['file']}"
                                                                           for s in shards[:2])
  assert not os.listdir(tmp_path / "cwd")
  # A local --data_cache_dir under a file: one line naming it, before any copy.
  (tmp_path / "a_file").write_text("mine")
  with pytest.raises(errors.UserError, match=rf"^{tmp_path}/a_file/gan_dist_packs \(where the shards of {out} are "
                                             rf"copied\): {tmp_path}/a_file is a file, not a directory$"):
    data.open_source(dataclasses.replace(cfg, data_cache_dir=str(tmp_path / "a_file")))


def _images(cfg) -> np.ndarray:
  """The source's images in its fixed order (16x16 RGB), for comparing two sources example by example."""
  batches = data.eval_dataset(data.open_source(cfg), (16, 16, 3), batch_size=64)
  return np.concatenate([b["images"].numpy() for b in batches])
