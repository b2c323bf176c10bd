"""How often a conditional generator draws the class it is asked for, judged by the dataset's feature network.

  python -m gan_dist.eval.class_accuracy --workdir=W [--step=N | --best] [--num_per_class=100] [--seed=0]
      [--data_dir=DIR] [--eval_cache_dir=DIR] [--truncation=T]

Samples --num_per_class images of every class from W's latest checkpoint or --step (the EMA generator if the run
kept one; noise of --seed as `gan_dist.sample` draws it), classifies them with the dataset's feature network
(`gan_dist.eval.features`: trained once per dataset and image shape, cached), and prints the fraction classified
as the requested class, per class and overall. --data_dir, --eval_cache_dir and --truncation (BigGAN's truncation
trick, `sampling.truncate`) given here override the run's.
`python -m gan_dist.evaluate` reports the same figure (label_accuracy) among the other metrics.
"""

from typing import Optional

from absl import flags
import numpy as np

from gan_dist import cli
from gan_dist import errors
from gan_dist import inference
from gan_dist import sampling
from gan_dist.eval import features as features_lib
from gan_dist.eval import metrics as metrics_lib


def define_flags(fv: flags.FlagValues) -> None:
  """Flags of this CLI, on top of the Config's (it reads --workdir, --seed, --data_dir, --eval_cache_dir and
  --truncation)."""
  flags.DEFINE_integer("num_per_class", 100, "Images sampled per class.", lower_bound=1, flag_values=fv)
  cli.define_checkpoint_flags(fv, "Evaluate")
  cli.show_in_help(fv, ("workdir", "seed", "data_dir", "eval_cache_dir", "truncation"))


def per_class_accuracy(model, generate_fn, gan, num_per_class: int, seed: int, truncation: float) -> np.ndarray:
  """float [num_classes]: for each class k, the fraction of `num_per_class` samples of k that `model` calls k (an
  image with a NaN or inf pixel is called no class).

  Args:
    model: a feature network (images in [-1, 1] -> (features, logits)).
    generate_fn: `sampling.make_generate_fn` of the generator.
    gan: its Gan (latent_dim, num_classes).
    num_per_class: samples of each class.
    seed: noise seed (`sampling.noise`).
    truncation: the noise's truncation (`sampling.truncate`; 0: none).
  """
  noise, labels, _ = sampling.class_rows(num_per_class * gan.num_classes, gan.latent_dim, gan.num_classes, seed,
                                         truncation)
  images = sampling.generate(generate_fn, noise, labels)
  _, logits = features_lib.predict_images(model, images)
  # An image with a NaN or inf pixel is assigned no class (NaN logits count as wrong): the CPU's fused kernels of the
  # network give every all-NaN image the same finite logits, one class's.
  logits[~np.isfinite(images.reshape(len(images), -1)).all(axis=1)] = np.nan
  return metrics_lib.label_accuracy(logits, labels, gan.num_classes)[1]


def main(argv, fv: Optional[flags.FlagValues] = None) -> int:
  """Loads the run, samples, prints the accuracies. `fv`: parsed flag values (default: absl's FLAGS)."""
  del argv  # cli.parse_flags refused positional arguments.
  fv = cli.FLAGS if fv is None else fv
  restored = inference.load(fv.workdir, fv.step, fv.best,
                            **cli.given(fv, ("data_dir", "eval_cache_dir", "truncation")))
  gan = restored.gan
  if not gan.conditional:
    raise errors.UserError(f"--arch={restored.cfg.arch} is not conditional: there is no requested class to check")
  net = features_lib.load_or_train(restored.cfg, gan.image_shape)
  print(f"Feature network {net.key}: test accuracy {features_lib.format_accuracy(net.test_accuracy)}, "
        f"checksum {net.checksum}")
  accuracy = per_class_accuracy(net.model, restored.generate_fn(), gan, fv.num_per_class, fv.seed,
                                restored.cfg.truncation)
  truncated = f", noise truncated to +-{restored.cfg.truncation:g}" if restored.cfg.truncation else ""
  print(f"Class accuracy of {restored.cfg.arch}, {restored.describe()} ({fv.num_per_class} samples per class"
        f"{truncated}):")
  names = restored.class_names
  for k, value in enumerate(accuracy):
    print(f"  class {sampling.class_label(k, names)}: {value:.3f}")
  print(f"  mean: {accuracy.mean():.4f}")
  return errors.EXIT_OK


def run() -> None:
  cli.run(main, define_flags)


if __name__ == "__main__":
  run()
