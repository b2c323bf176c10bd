"""Exports a trained generator for programs that do not have gan_dist: a TensorFlow SavedModel or a Keras file.

  python -m gan_dist.export --workdir=W [--format=saved_model] [--out=W/export] [--step=N]
  python -m gan_dist.export --workdir=W --format=keras --out=G.keras [--step=N]

Both hold the EMA generator when the run kept one, in inference mode (BatchNorm moving statistics), as a float32
copy built from Keras' own layer classes only (a mixed-precision run's generator is exported in float32 too), so
loading needs TensorFlow/Keras and nothing of gan_dist.

SavedModel: one signature, `serving_default`:
  inputs:  noise float32 [B, latent_dim]  (+ labels int32 [B] for conditional models)
  outputs: images uint8 [B, H, W, C]
`tf.saved_model.load(path).signatures["serving_default"](noise=...)`, TF Serving, or `saved_model_cli run`. The
model's facts (architecture, dataset, step, EMA, image shape, classes, latent size) are written beside it to
`<path>/assets.extra/gan_dist.json` (TF Serving's place for extra files; loaders ignore it), where
`python -m gan_dist.serve --saved_model=<path>` reads them.

Keras file: the generator itself, `keras.saving.load_model("G.keras").predict(noise)` (conditional models:
`.predict([noise, one_hot_labels])`), float32 images [B, H, W, C] in [-1, 1].
"""

import json
import os
import tempfile
from typing import Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import keras  # pylint: disable=g-import-not-at-top
import tensorflow as tf

from gan_dist import errors
from gan_dist import flags as gan_flags
from gan_dist import sample as sample_lib

FORMATS = gan_flags.EXPORT_FORMATS
# Where a SavedModel export keeps the model's facts, relative to the export directory.
FACTS_PATH = "assets.extra/gan_dist.json"


def inference_generator(generator: keras.Model) -> keras.Model:
  """A float32 copy of `generator` (same weights) made of Keras' own layer classes.

  gan_dist's layer subclasses (e.g. the replica-aware Dropout) become their Keras base class, which behaves the same
  in inference, so a saved copy loads where gan_dist is not installed. Mixed-precision layers compute in float32
  (the variables already are float32), and BatchNorm is not synchronised (that matters only in training).
  """
  def clone(layer):
    keras_class = next(c for c in type(layer).__mro__ if c.__module__.split(".")[0] == "keras")
    config = layer.get_config()
    config["dtype"] = "float32"
    if "synchronized" in config:
      config["synchronized"] = False
    return keras_class.from_config(config)

  copy = keras.models.clone_model(generator, clone_function=clone)
  copy.set_weights(generator.get_weights())
  return copy


def model_facts(cfg, state) -> dict:
  """What a person or a program wants to know about an exported or served generator (JSON-serialisable)."""
  gan = state.gan
  facts = dict(arch=cfg.arch, dataset=cfg.dataset, step=int(state.step.numpy()), ema=state.ema_generator is not None,
               ema_decay=cfg.ema_decay, image_shape=[int(d) for d in gan.image_shape], conditional=gan.conditional,
               num_classes=int(gan.num_classes) if gan.conditional else 0, latent_dim=int(gan.latent_dim),
               train_precision=cfg.precision)  # The export itself is always float32.
  if cfg.class_filter >= 0:
    facts["class_filter"] = cfg.class_filter
  return facts


def to_uint8(images: tf.Tensor) -> tf.Tensor:
  """Images in [-1, 1] -> uint8 [0, 255] (rounded, as `summaries.to_uint8`)."""
  return tf.cast(tf.clip_by_value(tf.round((tf.cast(images, tf.float32) + 1.0) * 127.5), 0, 255), tf.uint8)


def serving_function(generator: keras.Model, gan):
  """The `serving_default` function and its input signature: noise float32 [B, latent_dim] (+ labels int32 [B])
  -> {"images": uint8 [B, H, W, C]}."""
  latent = tf.TensorSpec([None, gan.latent_dim], tf.float32, name="noise")
  if gan.conditional:
    def serve(noise, labels):
      return {"images": to_uint8(gan.generate(noise, labels, generator=generator))}
    return serve, [latent, tf.TensorSpec([None], tf.int32, name="labels")]

  def serve_unconditional(noise):
    return {"images": to_uint8(gan.generate(noise, generator=generator))}
  return serve_unconditional, [latent]


def check_out(fmt: str, out: str) -> None:
  """Refuses an output path that the format cannot be written to (before anything is loaded or written)."""
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


def export(workdir: str, out: str, step: Optional[int] = None, fmt: str = "saved_model") -> str:
  """Exports `workdir`'s latest (or step-`step`) generator to `out` in format `fmt`; returns `out`."""
  check_out(fmt, out)
  cfg, state = sample_lib.load_workdir(workdir, step)
  generator = inference_generator(state.sampling_generator)
  facts = model_facts(cfg, state)
  if fmt == "keras":
    save_keras(generator, out)
  else:
    save_saved_model(generator, state.gan, facts, out)
  return out


def save_saved_model(generator: keras.Model, gan, facts: dict, export_dir: str) -> None:
  """Writes the SavedModel with its `serving_default` signature, and the facts to `FACTS_PATH` inside it."""
  # Keras' ExportArchive, not a tf.Module holding the model: it lists every variable in the SavedModel's own object
  # graph, without which TensorFlow 1-style loaders (saved_model_cli run, TF Serving) find the variables
  # uninitialised ("Could not find variable dense/kernel"); tf.saved_model.load works either way.
  archive = keras.export.ExportArchive()
  archive.track(generator)
  serve, signature = serving_function(generator, gan)
  archive.add_endpoint("serving_default", serve, input_signature=signature)
  archive.write_out(export_dir, verbose=False)
  path = f"{export_dir.rstrip('/')}/{FACTS_PATH}"
  tf.io.gfile.makedirs(path.rsplit("/", 1)[0])
  with tf.io.gfile.GFile(path, "w") as f:
    f.write(json.dumps(facts, indent=2, sort_keys=True) + "\n")


def save_keras(generator: keras.Model, out: str) -> None:
  """Writes the Keras file, through a local temporary file so that `out` may be on any TensorFlow filesystem."""
  with tempfile.TemporaryDirectory() as tmp:
    local = os.path.join(tmp, "generator.keras")
    generator.save(local)
    if "/" in out.rstrip("/"):
      tf.io.gfile.makedirs(out.rsplit("/", 1)[0])
    tf.io.gfile.copy(local, out, overwrite=True)


def read_facts(export_dir: str) -> dict:
  """The facts `save_saved_model` stored with a SavedModel export."""
  path = f"{export_dir.rstrip('/')}/{FACTS_PATH}"
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"{path} not found: is {export_dir} a SavedModel written by `python -m gan_dist.export`? "
                            "Export the workdir again")
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def define_flags(fv) -> None:
  """Flags of `python -m gan_dist.export` (all defined, with their defaults, in flags.py)."""
  gan_flags.define_export_flags(fv)


def output_path(fv) -> str:
  """--out, else the older --export_dir (SavedModel only), else the format's default inside the workdir."""
  if fv.out and fv.export_dir:
    raise errors.UserError("--out and --export_dir both given; --export_dir is the older name of --out: pass one")
  if fv.export_dir and fv.format != "saved_model":
    raise errors.UserError(f"--export_dir is for --format=saved_model; use --out=G.keras for --format={fv.format}")
  default = "export" if fv.format == "saved_model" else "generator.keras"
  return fv.out or fv.export_dir or f"{fv.workdir.rstrip('/')}/{default}"


def main(argv):
  del argv
  fv = gan_flags.FLAGS
  out = output_path(fv)
  check_out(fv.format, out)
  export(fv.workdir, out, fv.step, fv.format)
  print(f"Exported the generator of {fv.workdir} ({fv.format}) to {out}")


def run():
  gan_flags.run_tool(main, define_flags)


if __name__ == "__main__":
  run()
