"""Exports a trained generator as a TensorFlow SavedModel for serving or other programs.

  python -m gan_dist.export --workdir=W [--export_dir=W/export] [--step=N]

The SavedModel has one signature, `serving_default`:
  inputs:  noise float32 [B, latent_dim]  (+ labels int32 [B] for conditional models)
  outputs: images uint8 [B, H, W, C]
It holds the EMA generator when the run kept one, in inference mode (BatchNorm moving statistics), and needs
nothing of gan_dist to load: `tf.saved_model.load(path).signatures["serving_default"](noise=...)`.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import tensorflow as tf

from gan_dist import flags as gan_flags
from gan_dist import sample as sample_lib


class _Exported(tf.Module):
  """The generator and its serving function, tracked so that tf.saved_model.save keeps its variables."""

  def __init__(self, generator, gan):
    super().__init__()
    self.generator = generator
    latent = tf.TensorSpec([None, gan.latent_dim], tf.float32, name="noise")
    if gan.conditional:
      def serve(noise, labels):
        return {"images": self._to_uint8(self.generator([noise, tf.one_hot(labels, gan.num_classes)],
                                                        training=False))}
      self.serve = tf.function(serve, input_signature=[latent, tf.TensorSpec([None], tf.int32, name="labels")])
    else:
      def serve(noise):
        return {"images": self._to_uint8(self.generator(noise, training=False))}
      self.serve = tf.function(serve, input_signature=[latent])

  @staticmethod
  def _to_uint8(images):
    return tf.cast(tf.clip_by_value(tf.round((tf.cast(images, tf.float32) + 1.0) * 127.5), 0, 255), tf.uint8)


def export(workdir: str, export_dir: str, step=None) -> str:
  """Writes the SavedModel of `workdir`'s latest (or step-`step`) checkpoint to `export_dir`; returns the path."""
  _, state = sample_lib.load_workdir(workdir, step)
  module = _Exported(state.sampling_generator, state.gan)
  tf.saved_model.save(module, export_dir, signatures={"serving_default": module.serve})
  return export_dir


def main(argv):
  del argv
  fv = gan_flags.FLAGS
  out = export(fv.workdir, fv.export_dir or os.path.join(fv.workdir, "export"), fv.step)
  print(f"Exported the generator of {fv.workdir} to {out}")


def run():
  gan_flags.run_tool(main, gan_flags.define_export_flags)


if __name__ == "__main__":
  run()
