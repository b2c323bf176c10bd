"""--dataset=folder: listing and labels, every image mode, bad files, order and resume, workers' slices, crop."""

import logging as py_logging
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from gan_dist import data
from tests import helpers


def _ctx(num_pipelines=1, pipeline_id=0, replicas=1):
  return tf.distribute.InputContext(num_input_pipelines=num_pipelines, input_pipeline_id=pipeline_id,
                                    num_replicas_in_sync=replicas)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  return helpers.make_image_folder(str(tmp_path_factory.mktemp("images")), num=300)


@pytest.fixture(scope="module")
def clean_folder(tmp_path_factory):
  return helpers.make_image_folder(str(tmp_path_factory.mktemp("clean")), num=64, bad=())


def _cfg(root, **overrides):
  return helpers.config_values(dataset="folder", data_dir=root, **overrides)


def _take(dataset, num):
  return [{k: v.numpy() for k, v in batch.items()} for batch in dataset.take(num)]


def test_listing_labels_and_order(folder):
  source = data.open_source(_cfg(folder["root"]))
  assert source.num_examples == 302  # 300 images and the 2 bad files; notes.txt is not an image.
  assert source.num_classes == 3 and source.class_names == ["bird", "cat", "dog"]
  assert np.bincount(source.labels).tolist() == [102, 100, 100]
  paths = [source.path(i) for i in range(source.num_examples)]
  assert paths[:2] == folder["bad"]  # Sorted: bird/corrupt.jpg and bird/empty.png come first.
  assert any("/cat/more/" in p for p in paths)  # Nested folders belong to their class.
  for label, name in enumerate(source.class_names):
    assert all(f"/{name}/" in p for p, l in zip(paths, source.labels) if l == label)
  assert paths == sorted(paths[:102]) + sorted(paths[102:202]) + sorted(paths[202:])


def test_root_files_are_unlabeled(tmp_path):
  flat = helpers.make_image_folder(str(tmp_path / "flat"), num=12, classes=(), bad=())
  source = data.open_source(_cfg(flat["root"]))
  assert source.num_classes == 0 and source.labels.tolist() == [0] * 12
  with pytest.raises(data.DataError, match="has no classes"):
    data.open_source(_cfg(flat["root"], class_filter=0))
  mixed = helpers.make_image_folder(str(tmp_path / "mixed"), num=12, unlabeled=3, classes=("a", "b"), bad=())
  source = data.open_source(_cfg(mixed["root"]))
  assert source.num_classes == 2 and source.labels.tolist() == [-1] * 3 + [0] * 5 + [1] * 4


def test_links_odd_names_and_a_folder_named_like_an_image_are_listed_as_a_user_means_them(tmp_path, caplog):
  """What users' own folders hold: a link back up the tree (followed once, not until the path is too long, which
  also relabelled the other classes' images), a link to a folder elsewhere (its images join the class), a file
  name that is not UTF-8 (the whole listing failed), a folder named album.png (its images were never read)."""
  root = helpers.make_image_folder(str(tmp_path / "root"), num=12, classes=("a", "b"), bad=())["root"]
  elsewhere = helpers.make_image_folder(str(tmp_path / "elsewhere"), num=3, classes=(), bad=())["root"]
  os.symlink("..", os.path.join(root, "a", "up"))  # Back to the root: its classes are not a's.
  os.symlink(".", os.path.join(root, "b", "itself"))
  os.symlink(elsewhere, os.path.join(root, "b", "linked"))
  os.symlink(".", os.path.join(root, "loop"))  # At the root: the root again, not a class.
  os.symlink("self.png", os.path.join(root, "b", "self.png"))  # Cannot be followed: a bad file, as before.
  album = os.path.join(root, "a", "album.png")
  helpers.make_image_folder(album, num=2, classes=(), bad=())
  odd = os.path.join(os.fsencode(root), b"a", b"caf\xe9.png")
  with open(os.path.join(root, "a", "img0000.png"), "rb") as f, open(odd, "wb") as g:
    g.write(f.read())
  with caplog.at_level(py_logging.WARNING):
    source = data.open_source(_cfg(root))
  paths = [source.path(i) for i in range(source.num_examples)]
  assert source.class_names == ["a", "b"]
  # a: its 6 images and album.png's 2; b: its 6, the 3 linked from elsewhere and self.png.
  assert np.bincount(source.labels).tolist() == [8, 10] and f"{root}/b/self.png" in paths
  assert sum("/album.png/" in p for p in paths) == 2 and sum("/linked/" in p for p in paths) == 3
  assert not any("/up/" in p or "/itself/" in p or "/loop/" in p for p in paths)
  messages = "\n".join(r.getMessage() for r in caplog.records)
  assert "its name is not UTF-8" in messages and "caf\\xe9.png" in messages
  assert f"{root}/a/up: it leads to {os.path.realpath(root)}, which is listed already" in messages
  assert f"{root}/loop: it leads back to {root} itself, not a class" in messages


@pytest.mark.parametrize("setup,match", [
    ("missing", "does not exist"), ("empty", "holds no image files"), ("no_images", "1 other files ignored"),
    ("no_data_dir", "needs --data_dir")])
def test_folders_without_images_are_one_line_errors(tmp_path, setup, match):
  root = tmp_path / "root"
  if setup != "missing":
    root.mkdir()
    (root / "sub").mkdir()
  if setup == "no_images":
    (root / "sub" / "readme.txt").write_text("text")
  with pytest.raises(data.DataError, match=match) as error:
    data.open_source(_cfg("" if setup == "no_data_dir" else str(root)))
  assert "\n" not in str(error.value)


def test_a_data_dir_that_is_no_folder_is_named_as_what_it_is(tmp_path, monkeypatch):
  """--data_dir=~/photos (the shell leaves a ~ after = as it is) was "not a folder" while the user's ~/photos is one;
  a typo in a path read as if the path were a file."""
  monkeypatch.chdir(tmp_path)
  (tmp_path / "photo.jpg").write_bytes(b"not a folder")
  for root, message in [
      ("~/photos", "--data_dir=~/photos does not exist: the shell expands no ~ after =; write the path out "
                   "(e.g. $HOME/...)"),
      ("phtos", f"--data_dir=phtos does not exist (from {tmp_path}); pass the folder that holds the images"),
      (str(tmp_path / "phtos"), f"--data_dir={tmp_path / 'phtos'} does not exist; pass the folder that holds the "
                                "images"),
      ("photo.jpg", "--data_dir=photo.jpg is a file, not a folder; pass the folder that holds the images")]:
    with pytest.raises(data.DataError) as error:
      data.open_source(_cfg(root))
    assert str(error.value) == message


def test_files_of_other_types_are_counted_by_type_where_a_class_or_the_folder_is_refused(tmp_path, caplog):
  """A class of TIFF scans was dropped as a folder that "holds no images", and a folder of phone photos in HEIC was
  refused as holding "no image files ... 3 other files ignored", without a word of what they were."""
  root = helpers.make_image_folder(str(tmp_path / "root"), num=4, classes=("a", "b"), bad=())["root"]
  os.makedirs(os.path.join(root, "scans", "old"))
  for name in ("1.tif", "2.TIF", "old/3.tiff", "notes"):
    with open(os.path.join(root, "scans", name), "wb") as f:
      f.write(b"II*\x00")
  with caplog.at_level(py_logging.INFO, logger="absl"):
    source = data.open_source(_cfg(root))
  assert source.class_names == ["a", "b"]
  messages = [r.getMessage() for r in caplog.records]
  assert f"Folder {root}/scans holds no .jpg/.jpeg/.png/.gif/.bmp/.webp images (ignored: 2 .tif, 1 .tiff, 1 without " \
         "extension): not a class" in messages
  assert f"Ignored 5 files in {root} that are not .jpg/.jpeg/.png/.gif/.bmp/.webp images: 2 .tif, 1 .tiff, 1 .txt, " \
         "1 without extension" in messages  # The helper's notes.txt too.
  phone = tmp_path / "phone"
  phone.mkdir()
  for i in range(3):
    (phone / f"IMG_{i}.HEIC").write_bytes(b"ftypheic")
  with pytest.raises(data.DataError) as error:
    data.open_source(_cfg(str(phone)))
  assert str(error.value) == (f"--data_dir={phone} holds no image files (.jpg, .jpeg, .png, .gif, .bmp, .webp) at any "
                              "depth; 3 other files ignored (3 .heic); point it at a folder of images")


def test_class_folders_one_level_too_high_are_pointed_out(tmp_path, caplog):
  """data/train/{cat,dog} as --data_dir=data is one class, "train" (a conditional model was refused as having 1
  class, with no word of why), and data/{train,val}/{cat,dog} are the classes train and val: both are said, with
  the --data_dir that makes the subfolders classes."""
  one = tmp_path / "one"
  helpers.make_image_folder(str(one / "train"), num=4, classes=("cat", "dog"), bad=())
  two = tmp_path / "two"
  for split in ("train", "val"):
    helpers.make_image_folder(str(two / split), num=4, classes=("cat", "dog"), bad=())
  flat = tmp_path / "flat"  # Classes with images of their own and a subfolder or two: nothing to say.
  helpers.make_image_folder(str(flat / "cat"), num=4, classes=("", "more", "old"), bad=())
  helpers.make_image_folder(str(flat / "dog"), num=2, classes=(), bad=())
  for root, classes in ((one, ["train"]), (two, ["train", "val"]), (flat, ["cat", "dog"])):
    caplog.clear()
    with caplog.at_level(py_logging.WARNING):
      assert data.open_source(_cfg(str(root))).class_names == classes
    messages = [r.getMessage() for r in caplog.records]
    if root == one:
      assert messages == [f"The images of the one class folder {one}/train lie in its subfolders cat, dog: they all "
                          f"count as class 0. If those subfolders are the classes, pass --data_dir={one}/train"]
    elif root == two:
      assert messages == [f"The class folders train, val of {two} hold the same subfolders cat, dog, which hold "
                          f"their images: the classes are train, val. If cat, dog are the classes, pass "
                          f"--data_dir={two}/train (and keep the others apart)"]
    else:
      assert not messages


def test_class_filter_and_num_classes(folder):
  """--class_filter keeps one class folder, named in the source's description; a class the data lacks is refused with
  the names of the classes it has (--class_filter takes the id: the names tell which)."""
  cats = data.open_source(_cfg(folder["root"], class_filter=1))
  assert cats.num_examples == 100 and set(cats.labels.tolist()) == {1} and cats.num_classes == 3
  assert all("/cat/" in cats.path(i) for i in range(cats.num_examples))
  assert cats.name.endswith(", class 1 (cat) only")
  with pytest.raises(data.DataError, match=r"no examples of that class in .* \(3 classes: 0 \(bird\), 1 \(cat\), "
                                           r"2 \(dog\)\); pass a class in 0..2 or -1 for all$"):
    data.open_source(_cfg(folder["root"], class_filter=3))
  with pytest.raises(data.DataError, match=r"--num_classes=2 is below the 3 classes.*--num_classes=3"):
    data.open_source(_cfg(folder["root"], num_classes=2))


def test_every_mode_and_format_decodes_like_pillow(tmp_path):
  """Gray, gray+alpha, RGB, RGBA, palette (PNG, GIF, BMP) and 16-bit PNGs, at their own size (no resize)."""
  rng = np.random.RandomState(1)
  pixels = rng.randint(0, 256, size=(16, 16, 3)).astype(np.uint8)
  base = Image.fromarray(pixels)
  files = {"rgb.png": base, "rgb.bmp": base, "gray.png": base.convert("L"), "la.png": base.convert("LA"),
           "rgba.png": base.convert("RGBA"), "p.png": base.convert("P"), "p.gif": base.convert("P"),
           "p.bmp": base.convert("P"), "g16.png": Image.fromarray(pixels[..., 0].astype(np.uint16) * 257)}
  for name, image in files.items():
    image.save(tmp_path / name)
  source = data.open_source(_cfg(str(tmp_path)))
  names = [os.path.basename(source.path(i)) for i in range(source.num_examples)]
  for channels in (3, 1):
    batch = next(iter(data.eval_dataset(source, (16, 16, channels), batch_size=len(names))))
    decoded = np.round((batch["images"].numpy() + 1.0) * 127.5)
    for name, got in zip(names, decoded):
      image = Image.open(tmp_path / name)
      if name == "g16.png":  # 16 bits scaled to 8, then gray repeated.
        want = np.repeat(np.round(np.asarray(image, np.float64) / 257.0)[..., None], 3, axis=-1)
      else:
        want = np.asarray(image.convert("RGB"), np.float64)
      if channels == 1:
        want = np.round(want @ np.array([0.2989, 0.5870, 0.1140]))[..., None]
      np.testing.assert_allclose(got, want, atol=1.0, err_msg=f"{name}, {channels} channel(s)")


def test_an_animated_webp_trains_on_its_first_frame(tmp_path):
  """Stickers and web images: TensorFlow's decoder sized its buffer by the WebP header's alpha flag (RGB without it)
  but wrote every animation frame as RGBA past it: the process aborted ("free(): corrupted unsorted chunks") or,
  with larger frames, the image came out garbled."""
  rng = np.random.RandomState(2)
  first = rng.randint(0, 256, size=(16, 24, 3)).astype(np.uint8)
  Image.fromarray(first).save(tmp_path / "anim.webp", save_all=True, append_images=[Image.new("RGB", (24, 16))],
                              lossless=True)
  assert Image.open(tmp_path / "anim.webp").n_frames == 2
  source = data.open_source(_cfg(str(tmp_path), crop="none"))
  for channels in (3, 1):
    batch = next(iter(data.eval_dataset(source, (16, 24, channels), batch_size=1)))
    got = np.round((batch["images"].numpy()[0] + 1.0) * 127.5)
    want = first if channels == 3 else np.round(first @ np.array([0.2989, 0.5870, 0.1140]))[..., None]
    np.testing.assert_allclose(got, want, atol=1.0)


@pytest.mark.parametrize("name,scale", [("wide.png", 1), ("wide.jpg", 8)])
def test_center_crop_and_stretch(tmp_path, name, scale):
  """A red | green | blue image twice as wide as high; the JPEG is big enough to be decoded at 1/8 scale."""
  wide = np.zeros((8 * scale, 16 * scale, 3), np.uint8)
  wide[:, :4 * scale] = [255, 0, 0]
  wide[:, 4 * scale:12 * scale] = [0, 255, 0]
  wide[:, 12 * scale:] = [0, 0, 255]
  Image.fromarray(wide).save(tmp_path / name, quality=95)
  for crop, red in (("center", False), ("none", True)):
    source = data.open_source(_cfg(str(tmp_path), crop=crop))
    image = next(iter(data.eval_dataset(source, (8, 8, 3), batch_size=1)))["images"].numpy()[0]
    assert (image[:, 0, 0] > 0.5).all() == red, crop  # The left columns are red only if the sides were kept.
    assert (image[:, 4, 1] > 0.8).all()  # The middle is green either way.


def test_bad_files_are_substituted_logged_and_counted(folder, caplog):
  cfg = _cfg(folder["root"], shuffle_files=False, batch_size=8)
  source = data.open_source(cfg)
  with caplog.at_level(py_logging.WARNING):
    first = _take(data.make_dataset_fn(cfg, source, (16, 16, 3))(_ctx()), 1)[0]
  for path in folder["bad"]:
    assert any(path in r.getMessage() and "Skipped undecodable image file" in r.getMessage()
               for r in caplog.records), path
  assert set(source.bad_files) == set(folder["bad"])
  assert np.isfinite(first["images"]).all() and first["images"].shape == (8, 16, 16, 3)
  # The substitutes are a function of the example alone: another pipeline reads the same batch.
  again = _take(data.make_dataset_fn(cfg, data.open_source(cfg), (16, 16, 3))(_ctx()), 1)[0]
  np.testing.assert_array_equal(first["images"], again["images"])
  np.testing.assert_array_equal(first["labels"], again["labels"])


def test_noskip_bad_images_stops_at_the_first_one(folder):
  cfg = _cfg(folder["root"], shuffle_files=False, batch_size=8, skip_bad_images=False)
  dataset = data.make_dataset_fn(cfg, data.open_source(cfg), (16, 16, 3))(_ctx())
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"undecodable image file .*bird/corrupt\.jpg"):
    _take(dataset, 1)


def test_order_and_flips_are_functions_of_seed_and_step(clean_folder):
  cfg = _cfg(clean_folder["root"], batch_size=8, seed=5, random_flip=True)
  source = data.open_source(cfg)
  shape = (16, 16, 3)
  stream = _take(data.make_dataset_fn(cfg, source, shape)(_ctx()), 11)  # 11 steps: more than an epoch of 8.
  resumed = _take(data.make_dataset_fn(cfg, source, shape, start_step=6)(_ctx()), 5)
  for step, batch in enumerate(resumed, start=6):
    np.testing.assert_array_equal(batch["images"], stream[step]["images"])
    np.testing.assert_array_equal(batch["labels"], stream[step]["labels"])
  # Flips: every image is the unflipped one or its mirror, about half of them mirrored, each image by its own coin.
  plain = _take(data.make_dataset_fn(_cfg(clean_folder["root"], batch_size=8, seed=5), source, shape)(_ctx()), 11)
  flipped = same = 0
  per_batch = []  # Mirrored images of each batch of 8.
  for a, b in zip(stream, plain):
    mirrored = 0
    for x, y in zip(a["images"], b["images"]):
      same += np.array_equal(x, y)
      mirrored += np.array_equal(x, y[:, ::-1])
    flipped += mirrored
    per_batch.append(mirrored)
  assert same + flipped == 88 and 20 <= flipped <= 68
  # A coin per image leaves a batch all flipped or all plain with probability 2/2**8, so nearly every batch mixes
  # both (3 unmixed of 11: ~1e-4). One coin per batch mixes none; one per half batch passes this ~3% of the time.
  assert sum(0 < m < 8 for m in per_batch) >= 9, per_batch


@pytest.mark.parametrize("start_step", [0, pytest.param(5, marks=pytest.mark.slow)])
def test_workers_get_disjoint_slices_of_each_global_batch(clean_folder, start_step):
  """As tests/test_multiworker.py does for IDX: each of 2 workers holds its half of the one-process batch."""
  cfg = _cfg(clean_folder["root"], batch_size=16, seed=3, random_flip=True)
  source = data.open_source(cfg)
  fn = data.make_dataset_fn(cfg, source, (16, 16, 3), start_step=start_step)
  steps = 6  # More than one epoch (4 steps), so reshuffled epochs are covered too.
  whole = _take(fn(_ctx(1, 0, 1)), steps)
  halves = [_take(fn(_ctx(2, i, 2)), steps) for i in range(2)]
  for s in range(steps):
    w0, w1 = halves[0][s], halves[1][s]
    assert len(w0["images"]) == len(w1["images"]) == 8
    np.testing.assert_array_equal(np.concatenate([w0["images"], w1["images"]]), whole[s]["images"])
    np.testing.assert_array_equal(np.concatenate([w0["labels"], w1["labels"]]), whole[s]["labels"])
    keys0 = {x.tobytes() for x in w0["images"]}
    assert not keys0 & {x.tobytes() for x in w1["images"]}, f"step {start_step + s}: both workers read an example"


def test_eval_dataset_is_the_fixed_order(folder):
  source = data.open_source(_cfg(folder["root"]))
  batches = _take(data.eval_dataset(source, (8, 8, 3), batch_size=32, num=70), 10)
  assert [len(b["labels"]) for b in batches] == [32, 32, 6]
  labels = np.concatenate([b["labels"] for b in batches])
  # Examples 0 and 1 are the bad files: their substitutes bring their own labels.
  np.testing.assert_array_equal(labels[2:], source.labels[2:70])
  assert all(b["images"].dtype == np.float32 and b["labels"].dtype == np.int32 for b in batches)


def test_sources_read_through_tf_io_gfile():
  """A folder and IDX files on TensorFlow's in-memory ram:// filesystem: nothing may bypass tf.io.gfile."""
  import gzip  # pylint: disable=g-import-not-at-top
  import io  # pylint: disable=g-import-not-at-top
  root = "ram://gan_dist_test_data_gfile"
  for cls in ("a", "b"):
    tf.io.gfile.makedirs(f"{root}/images/{cls}")
    for i in range(3):
      buffer = io.BytesIO()
      Image.fromarray(np.full((6, 6, 3), 40 * i, np.uint8)).save(buffer, format="PNG")
      with tf.io.gfile.GFile(f"{root}/images/{cls}/{i}.png", "wb") as f:
        f.write(buffer.getvalue())
  source = data.open_source(_cfg(f"{root}/images"))
  assert source.class_names == ["a", "b"] and source.labels.tolist() == [0, 0, 0, 1, 1, 1]
  batch = next(iter(data.eval_dataset(source, (6, 6, 3), batch_size=6)))
  np.testing.assert_allclose(batch["images"].numpy()[:3, 0, 0, 0], [-1.0, 40 / 127.5 - 1, 80 / 127.5 - 1], atol=1e-6)
  tf.io.gfile.makedirs(f"{root}/idx")
  images = np.arange(5 * 4 * 4, dtype=np.uint8).reshape(5, 4, 4)
  for name, array in (("train-images-idx3-ubyte.gz", images), ("train-labels-idx1-ubyte.gz", np.arange(5) % 2)):
    array = np.asarray(array, np.uint8)
    header = b"\0\0\x08" + bytes([array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with tf.io.gfile.GFile(f"{root}/idx/{name}", "wb") as f:
      f.write(gzip.compress(header + array.tobytes()))
  idx = data.open_source(helpers.config_values(dataset="mnist", data_dir=f"{root}/idx"))
  assert idx.num_examples == 5 and idx.num_classes == 2
  np.testing.assert_array_equal(idx.images[..., 0], images)
