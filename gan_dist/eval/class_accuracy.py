"""How often a conditional generator draws the class it is asked for, judged by an MNIST classifier.

  python -m gan_dist.eval.class_accuracy --workdir=W --data_dir=../shared/data/mnist --num_per_class=100

Samples --num_per_class images of every class from W's latest checkpoint or --step (the EMA generator if the run
kept one), classifies them with `classifier.py` (trained here for --classifier_epochs, or loaded from
--classifier_path), and prints the fraction classified as the requested class, per class and averaged over classes.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from absl import flags
import numpy as np

from gan_dist import flags as gan_flags
from gan_dist import sample as sample_lib
from gan_dist import summaries
from gan_dist.eval import classifier as classifier_lib


def define_flags(fv: flags.FlagValues) -> None:
  """Flags of this CLI, on top of gan_dist's --workdir, --data_dir (default: the run's) and --seed (noise seed)."""
  flags.DEFINE_integer("num_per_class", 100, "Images sampled per class.", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("classifier_epochs", 1, "Epochs to train the classifier for.", lower_bound=1, flag_values=fv)
  flags.DEFINE_string("classifier_path", "", "A .keras file: loaded if it exists, else the trained classifier is "
                      "saved there. Empty: train one every time.", flag_values=fv)
  flags.DEFINE_integer("step", None, "Evaluate the checkpoint of this step (default: the latest).", flag_values=fv)


def per_class_accuracy(model, generate_fn, gan, num_per_class: int, seed: int) -> np.ndarray:
  """float [num_classes]: for each class k, the fraction of `num_per_class` samples of k that `model` calls k."""
  noise, _ = sample_lib.sample_inputs(gan, num_per_class * gan.num_classes, seed)
  labels = np.repeat(np.arange(gan.num_classes, dtype=np.int32), num_per_class)
  images = summaries.to_uint8(sample_lib.generate(generate_fn, gan, noise, labels))
  predicted = classifier_lib.classify(model, images)
  return np.array([np.mean(predicted[labels == k] == k) for k in range(gan.num_classes)])


def main(argv):
  del argv
  fv = gan_flags.FLAGS
  # Built before the run's state: loading it sets the run's global dtype policy.
  cfg = gan_flags.config_from_flagfile(os.path.join(fv.workdir, "flags.txt"))
  model, test_accuracy = classifier_lib.load_or_train(fv.data_dir or cfg.data_dir, fv.classifier_path,
                                                      fv.classifier_epochs)
  if test_accuracy is not None:
    print(f"Classifier test accuracy: {test_accuracy:.4f}")
  cfg, state = sample_lib.load_workdir(fv.workdir, fv.step)
  gan = state.gan
  if not gan.conditional:
    raise ValueError(f"--arch={cfg.arch} is not conditional: there is no requested class to check")
  generate_fn = sample_lib.make_generate_fn(state.sampling_generator, gan)
  accuracy = per_class_accuracy(model, generate_fn, gan, fv.num_per_class, fv.seed)
  print(f"Class accuracy of {cfg.arch} at step {int(state.step.numpy())} ({fv.num_per_class} samples per class):")
  for k, value in enumerate(accuracy):
    print(f"  class {k}: {value:.3f}")
  print(f"  mean: {accuracy.mean():.4f}")


def run():
  gan_flags.run_tool(main, define_flags)


if __name__ == "__main__":
  run()
