"""A trained generator written for programs that do not have gan_dist: a TensorFlow SavedModel or a Keras file.

Both hold the generator `inference.load` picks (the EMA copy when the run kept one), in inference mode (BatchNorm
moving statistics), as the float32 copy of `inference.float32_copy`: Keras' own layer classes only, so loading needs
TensorFlow/Keras and nothing of gan_dist, and a mixed-precision run's generator is exported in float32 too.

SavedModel (a directory): one signature, `serving_default`:
  inputs:  noise float32 [B, latent_dim]  (+ labels int32 [B] for conditional models)
  outputs: images uint8 [B, H, W, C]
for `tf.saved_model.load(path).signatures["serving_default"](noise=...)`, TF Serving or `saved_model_cli run`. The
model's facts (`inference.facts`: architecture, dataset, step, EMA, image shape, classes, latent size, the run's
sampling truncation) go to `<path>/assets.extra/gan_dist.json` (TF Serving's place for extra files; loaders ignore
it); `read_facts` reads them.

Keras file: the generator itself: `keras.saving.load_model("G.keras").predict(noise)` (conditional models:
`.predict([noise, one_hot_labels])`) gives float32 images [B, H, W, C] in [-1, 1]. A custom architecture's own
layer classes stay in it (`inference.float32_copy`), so loading it then needs them too (a warning names them); its
SavedModel, a traced graph, does not.

  exporter.export("runs/quick", "runs/quick/export")                 # SavedModel
  exporter.export("runs/quick", "G.keras", fmt="keras", step=2000)   # Keras file of checkpoint 2000
"""

import json
import os
import tempfile
from typing import Callable, List, Optional, Tuple

from absl import logging
import keras
import tensorflow as tf

from gan_dist import errors
from gan_dist import files
from gan_dist import inference
from gan_dist import models
from gan_dist import sampling

FORMATS = ("saved_model", "keras")
# Where a SavedModel export keeps the model's facts, relative to the export directory. Written last: it marks the
# export complete.
FACTS_PATH = "assets.extra/gan_dist.json"
# What a SavedModel directory holds: an export interrupted before its facts were written holds nothing else.
_SAVED_MODEL_ENTRIES = {"saved_model.pb", "fingerprint.pb", "variables", "assets", "assets.extra"}


def check_out(fmt: str, out: str) -> None:
  """Refuses an output path that format `fmt` cannot be written to, before anything is loaded or written.

  Raises:
    errors.UserError: an unknown format, an empty path, a path that does not suit the format or cannot be written,
      or (saved_model) a directory that holds other files than a SavedModel: an export never mixes its files with
      others (e.g. --out=W, the workdir itself); an earlier export, complete or interrupted, is replaced.
  """
  if fmt not in FORMATS:
    raise errors.UserError(f"--format={fmt!r} is not one of {', '.join(FORMATS)}")
  if not out:
    raise errors.UserError("--out is empty; give the path to write the export to")
  if fmt == "keras" and not out.endswith(".keras"):
    raise errors.UserError(f"--out={out} must end with .keras for --format=keras (Keras refuses other names), "
                           "e.g. --out=G.keras")
  if fmt == "saved_model" and out.endswith(".keras"):
    raise errors.UserError(f"--out={out} names a Keras file but --format=saved_model writes a directory; pass "
                           "--format=keras, or a directory")
  if fmt == "keras":
    files.check_writable_file(out, "--out")
    return
  files.check_writable_dir(out, "--out")
  if tf.io.gfile.isdir(out) and not {name.rstrip("/") for name in tf.io.gfile.listdir(out)} <= _SAVED_MODEL_ENTRIES:
    raise errors.UserError(f"--out={out} is a directory that holds other files than an export; give a new or empty "
                           "directory (an earlier export there would be replaced)")


def serving_function(generator: keras.Model, gan: models.Gan) -> Tuple[Callable, List[tf.TensorSpec]]:
  """The `serving_default` function of `generator` and its input signature.

  Returns:
    (function, [noise spec (+ labels spec)]): noise float32 [B, latent_dim] (+ labels int32 [B] for conditional
    models) -> {"images": uint8 [B, H, W, C]}; noise that is not finite, labels outside [0, K), or labels not one
    per row of noise, are an InvalidArgumentError.
  """
  def images(noise, labels):
    # NaN or Inf noise (a client's bad input) made NaN pixels, which the uint8 cast turned into black images, silently.
    noise = tf.debugging.assert_all_finite(noise, "noise must be finite (no NaN or Inf)")
    return {"images": sampling.to_uint8(gan.generate(noise, labels, generator=generator))}

  noise_spec = tf.TensorSpec([None, gan.latent_dim], tf.float32, name="noise")
  # The signature is the export's public interface: a labels input only where the model uses labels.
  if gan.conditional:
    def images_of_classes(noise, labels):
      # A label outside [0, K) would become an all-zero one-hot: images of no class, silently. Refuse it instead.
      message = f"labels must be class ids in [0, {gan.num_classes})"
      checks = [tf.debugging.assert_greater_equal(labels, 0, message=message),
                tf.debugging.assert_less(labels, gan.num_classes, message=message),
                # A generator that multiplies by a function of the label (conditional BatchNorm) would broadcast a
                # batch of one against the other input's batch: one label for every row, silently.
                tf.debugging.assert_equal(tf.shape(labels)[0], tf.shape(noise)[0],
                                          message="labels must hold one class id per row of noise")]
      with tf.control_dependencies(checks):
        return images(noise, tf.identity(labels))
    return images_of_classes, [noise_spec, tf.TensorSpec([None], tf.int32, name="labels")]

  def images_of_noise(noise):
    return images(noise, tf.zeros(tf.shape(noise)[:1], tf.int32))
  return images_of_noise, [noise_spec]


def write_saved_model(generator: keras.Model, gan: models.Gan, facts: dict, out: str) -> None:
  """Writes the SavedModel of `generator` with its `serving_default` signature to directory `out`, and then `facts`
  (JSON-serialisable) to `FACTS_PATH` inside it."""
  # Keras' ExportArchive, not a tf.Module holding the model: it lists every variable in the SavedModel's own object
  # graph, without which TensorFlow 1-style loaders (saved_model_cli run, TF Serving) find the variables
  # uninitialised ("Could not find variable dense/kernel"); tf.saved_model.load works either way.
  archive = keras.export.ExportArchive()
  archive.track(generator)
  function, signature = serving_function(generator, gan)
  archive.add_endpoint("serving_default", function, input_signature=signature)
  facts_path = f"{out.rstrip('/')}/{FACTS_PATH}"
  # The facts of an earlier export go first: if this one is interrupted, the directory is no export (the demo and
  # read_facts refuse it) rather than a new model described by the old facts.
  if tf.io.gfile.exists(facts_path):
    tf.io.gfile.remove(facts_path)
  # TensorFlow's SavedModel writer (trackable/autotrackable.py) puts absl's verbosity back as the logger's effective
  # level: an unset absl logger came out pinned at WARNING, and a program that went on after its export (a notebook
  # that trains on) logged no INFO line again. Its own level is restored here.
  absl_level = logging.get_absl_logger().level
  try:
    archive.write_out(out, verbose=False)
  finally:
    logging.get_absl_logger().setLevel(absl_level)
  files.write_atomic(facts_path, json.dumps(facts, indent=2, sort_keys=True) + "\n")


def write_keras(generator: keras.Model, out: str) -> None:
  """Writes `generator` as a Keras file to `out` (a name ending in .keras, on any TensorFlow filesystem)."""
  # Keras writes local files only: save to a temporary folder, then copy the bytes to `out`.
  with tempfile.TemporaryDirectory() as tmp:
    local = os.path.join(tmp, "generator.keras")
    generator.save(local)
    files.write_atomic(out, files.read_bytes(local))


def read_facts(export_dir: str) -> dict:
  """The facts `write_saved_model` stored with a SavedModel export.

  Raises:
    FileNotFoundError: `export_dir` holds no facts (not a gan_dist export).
  """
  path = f"{export_dir.rstrip('/')}/{FACTS_PATH}"
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"{path} not found: is {export_dir} a SavedModel written by `python -m gan_dist.export`? "
                            "Export the workdir again")
  return json.loads(files.read_text(path))


def export(workdir: str, out: str, step: Optional[int] = None, fmt: str = "saved_model", best: bool = False) -> str:
  """Exports the generator of `workdir`'s latest checkpoint (or that of `step`, or the best) to `out` in `fmt`.

  Args:
    workdir: a trained run directory.
    out: the SavedModel directory, or the .keras file, to write.
    step: the checkpoint's step; None: the latest.
    fmt: one of FORMATS.
    best: the run's best checkpoint (kept by training with --eval_every) instead.

  Returns:
    `out`.

  Raises:
    errors.UserError: a bad `fmt` or `out` (checked before the workdir is read), or a workdir that cannot be loaded.
  """
  check_out(fmt, out)
  run = inference.load(workdir, step, best)
  generator = inference.float32_copy(run.generator)
  if fmt == "keras":
    needs = inference.keras_file_needs(generator)
    if needs:  # A custom architecture's own layer classes: the file is right, but Keras alone cannot load it.
      logging.warning("Loading %s needs, besides Keras: %s. Pass a class to keras.saving.load_model(path, "
                      "custom_objects={name: class}); the SavedModel export (--format=saved_model) needs none of "
                      "them", out, "; ".join(needs))
    write_keras(generator, out)
  else:
    write_saved_model(generator, run.gan, inference.facts(run), out)
  return out
