r"""Can the evaluation features be trusted on a folder? Broken sample sets against real ones, on every metric.

Trains (or loads from --eval_cache_dir) the feature network that `gan_dist.evaluate` and `--eval_every` use for
the folder (`gan_dist.eval.features`: contrastive on colour images), then scores, against --num real training
images as the reference, each of these sets of --num images:
  real held-out   the folder's held-out test images: the floor, what a perfect generator would score;
  noise           uniform noise;
  flat            one flat colour per image (the folder's mean colours);
  checkerboards   3 coloured checkerboard textures of different periods (a collapsed GAN seen in practice);
  repeated        4 real training images, repeated (a memorising, collapsed generator);
  --workdir       optionally a trained generator's samples (its EMA generator when it has one).
Prints a table (FCD, KID, precision, recall, classifier score; label accuracy where the folder has classes) and a
JSON line, with the feature network's key, test and view-match accuracy, training time and the CPU.

  python3 benchmarks/feature_check.py --data_dir=FOLDER --image_shape=64,64,3 [--workdir=RUN] [--num=1000]
"""

import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
for _path in (REPO, HERE):  # HERE too: tests/eval/test_contrastive.py loads this file as a module, not a script.
  if _path not in sys.path:
    sys.path.insert(0, _path)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np
import tensorflow as tf

from gan_dist import cli
from gan_dist import config as config_lib
from gan_dist import data
from gan_dist import inference
from gan_dist import sampling
from gan_dist.eval import features as features_lib
from gan_dist.eval import metrics as metrics_lib
import throughput  # pylint: disable=g-import-not-at-top  (benchmarks/throughput.py, beside this script)

FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues) -> None:
  """The script's flags, on `fv`: FLAGS when run as a script (tests/benchmarks/test_smoke.py calls main in the test
  process, with a FlagValues of its own)."""
  flags.DEFINE_string("data_dir", None, "An image folder (class subfolders or not).", flag_values=fv)
  flags.DEFINE_string("image_shape", "64,64,3", "H,W,C of the feature network (the generator's image shape).",
                      flag_values=fv)
  flags.DEFINE_integer("num", 1000, "Images per set (and in the reference).", flag_values=fv)
  flags.DEFINE_string("eval_cache_dir", "~/.cache/gan_dist", "Where the feature network is cached.", flag_values=fv)
  flags.DEFINE_string("workdir", "", "Optionally a trained run whose samples are scored too.", flag_values=fv)
  flags.DEFINE_integer("steps", 0, "Contrastive steps (0: the procedure's; another value changes the network).",
                       flag_values=fv)


def broken_sets(real: np.ndarray, num: int, shape) -> dict:
  """{name: images float32 [num, H, W, C] in [-1, 1]} of the broken sets (see the module docstring)."""
  rng = np.random.RandomState(0)
  height, width, channels = shape
  noise = rng.uniform(-1, 1, (num, *shape)).astype(np.float32)
  colours = real.reshape(len(real), -1, channels).mean(axis=1)
  flat = np.broadcast_to(colours[rng.randint(len(real), size=num), None, None, :], (num, *shape)).copy()
  boards = []
  for period, a, b in ((2, -0.8, 0.8), (4, -0.2, 0.9), (8, -1.0, 0.3)):
    yy, xx = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    mask = ((yy // period + xx // period) % 2)[..., None].astype(np.float32)
    tint = rng.uniform(-1, 1, channels).astype(np.float32)
    boards.append(np.clip(mask * a + (1 - mask) * b + 0.3 * tint, -1, 1))
  checkerboards = np.stack([boards[i % 3] for i in range(num)]).astype(np.float32)
  repeated = np.stack([real[i % 4] for i in range(num)]).astype(np.float32)
  return {"noise": noise, "flat": flat, "checkerboards": checkerboards, "repeated": repeated}


def main(argv):
  del argv
  shape = tuple(int(d) for d in FLAGS.image_shape.split(","))
  cfg = config_lib.make_config(dataset="folder", data_dir=FLAGS.data_dir, eval_cache_dir=FLAGS.eval_cache_dir)
  start = time.time()
  net = features_lib.load_or_train(cfg, shape, steps=FLAGS.steps or None)
  net_seconds = time.time() - start
  train, test = features_lib.splits(cfg)
  reference_source = features_lib.spread_subset(train, FLAGS.num, salt=1)
  floor_source = features_lib.spread_subset(test, FLAGS.num, salt=2)
  ref_features, _, _ = features_lib.predict(net.model, reference_source, shape)
  reference = metrics_lib.Reference(ref_features)
  real_images = np.concatenate([b["images"].numpy() for b in data.eval_dataset(reference_source, shape, 500)])
  sets = {}
  floor_features, floor_logits, floor_labels = features_lib.predict(net.model, floor_source, shape)
  sets["real held-out"] = (floor_features, floor_logits, floor_labels)
  predict = tf.function(lambda x: net.model(x, training=False))  # One function for every set: traced once a shape.
  for name, images in broken_sets(real_images, len(floor_features), shape).items():
    feats, logits = features_lib.predict_images(predict, images)
    sets[name] = (feats, logits, None)
  if FLAGS.workdir:
    run = inference.load(FLAGS.workdir)
    # Untruncated noise: the generator's own distribution, whatever the run's --truncation.
    noise, labels = sampling.inputs(len(floor_features), run.gan.latent_dim, run.gan.num_classes, seed=0,
                                    truncation=0.0)
    images = sampling.generate(run.generate_fn(), noise, labels)
    feats, logits = features_lib.predict_images(predict, images)
    sets[f"generator ({run.describe()})"] = (feats, logits, labels if run.gan.conditional else None)
  rows = {}
  for name, (feats, logits, labels) in sets.items():
    found = reference.compare(feats, logits)
    if labels is not None and net.num_classes >= 2:
      found["label_accuracy"] = metrics_lib.label_accuracy(logits, labels, net.num_classes)[0]
    rows[name] = {k: float(v) for k, v in found.items()}
  keys = ["fcd", "kid", "precision", "recall", "classifier_score", "label_accuracy"]
  print(f"Feature network {net.key}: test accuracy {features_lib.format_accuracy(net.test_accuracy)}, view-match "
        f"accuracy {net.info.get('view_match_accuracy', float('nan')):.4f}, {net_seconds:.0f} s to train or load; "
        f"{len(floor_features)} images per set; CPU: {throughput.cpu()}")
  print("| set | " + " | ".join(keys) + " |")
  print("|---" * (len(keys) + 1) + "|")
  for name, found in rows.items():
    print(f"| {name} | " + " | ".join(f"{found[k]:.4g}" if k in found else "" for k in keys) + " |")
  print(json.dumps(dict(key=net.key, test_accuracy=net.info.get("test_accuracy"),
                        view_match_accuracy=net.info.get("view_match_accuracy"), net_seconds=net_seconds,
                        num=len(floor_features), cpu=throughput.cpu(), sets=rows)))


if __name__ == "__main__":
  define_flags(FLAGS)
  flags.mark_flag_as_required("data_dir")
  app.run(main, flags_parser=cli.parse_flags)  # One-line flag errors (exit 2); --help exits 0.
