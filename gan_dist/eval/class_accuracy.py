"""How often a conditional generator draws the class it is asked for, judged by the dataset's feature network.

  python -m gan_dist.eval.class_accuracy --workdir=W [--data_dir=../shared/data/mnist] [--num_per_class=100]

Samples --num_per_class images of every class from W's latest checkpoint or --step (the EMA generator if the run
kept one), classifies them with the cached feature network of `classifier.py` (trained once per dataset and image
shape), and prints the fraction classified as the requested class, per class and overall. `python -m
gan_dist.evaluate` reports the same figure (label_accuracy) among the other metrics.
"""

import dataclasses
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import numpy as np

from gan_dist import errors
from gan_dist import flags as gan_flags
from gan_dist import sample as sample_lib
from gan_dist.eval import classifier as classifier_lib


def define_flags(fv) -> None:
  """Flags of this CLI, on top of gan_dist's --workdir, --data_dir (default: the run's) and --seed (noise seed)."""
  gan_flags.define_class_accuracy_flags(fv)


def per_class_accuracy(model, generate_fn, gan, num_per_class: int, seed: int) -> np.ndarray:
  """float [num_classes]: for each class k, the fraction of `num_per_class` samples of k that `model` calls k.

  `model` is a feature network (images in [-1, 1] -> (features, logits)).
  """
  noise, _ = sample_lib.sample_inputs(gan, num_per_class * gan.num_classes, seed)
  labels = np.repeat(np.arange(gan.num_classes, dtype=np.int32), num_per_class)
  images = sample_lib.generate(generate_fn, gan, noise, labels)
  predicted = np.concatenate([np.argmax(model(images[i:i + 500], training=False)[1], axis=-1)
                              for i in range(0, len(images), 500)])
  return np.array([np.mean(predicted[labels == k] == k) for k in range(gan.num_classes)])


def main(argv):
  del argv
  fv = gan_flags.FLAGS
  cfg, state = sample_lib.load_workdir(fv.workdir, fv.step)
  if fv["data_dir"].present:
    cfg = dataclasses.replace(cfg, data_dir=fv.data_dir)
  gan = state.gan
  if not gan.conditional:
    raise errors.UserError(f"--arch={cfg.arch} is not conditional: there is no requested class to check")
  net = classifier_lib.load_or_train(cfg, gan.image_shape)
  print(f"Feature network {net.key}: test accuracy {net.test_accuracy:.4f}, checksum {net.checksum}")
  state.prepare_ema()
  generate_fn = sample_lib.make_generate_fn(state.sampling_generator, gan)
  accuracy = per_class_accuracy(net.model, generate_fn, gan, fv.num_per_class, fv.seed)
  print(f"Class accuracy of {cfg.arch} at step {int(state.step.numpy())} ({fv.num_per_class} samples per class):")
  for k, value in enumerate(accuracy):
    print(f"  class {k}: {value:.3f}")
  print(f"  mean: {accuracy.mean():.4f}")


def run():
  gan_flags.run_tool(main, define_flags)


if __name__ == "__main__":
  run()
