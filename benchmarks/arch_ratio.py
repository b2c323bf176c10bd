r"""Images per second of two training configurations, on one device and on 2 logical CPU replicas, in one process.

Each configuration (a flagfile) is built twice in the same process: on one device (/cpu:0) and under
MirroredStrategy over 2 logical CPU devices at the same global batch (the CPU split is made first, and a one-device
strategy on one of the logical devices runs as an unsplit process does: the devices share one thread pool). The
four train steps (`train_step.make_train_step`, fed by the trainer's own distributed dataset, --steps_per_loop steps
per call, as `train.run` calls them) alternate for --repeats rounds of --seconds each and the medians are reported,
so that a noisy machine slows all alike. Ratios are what to compare: B / A on each strategy, and 2 replicas / one
device for each configuration.

  python3 benchmarks/arch_ratio.py --configs=configs/folder64.cfg,configs/faces64.cfg --data_dir=FOLDER
  # The cost of augmentation (README "Small folders"):
  python3 benchmarks/arch_ratio.py --configs=configs/small64.cfg+--augment=none,configs/small64.cfg --data_dir=FOLDER
"""

import json
import os
import statistics
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import tensorflow as tf

from gan_dist import cli
from gan_dist import config as config_lib
from gan_dist import data
from gan_dist import preflight
from gan_dist import state as state_lib
from gan_dist import train_step as train_step_lib
import throughput  # pylint: disable=g-import-not-at-top  (benchmarks/throughput.py, beside this script)

FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues) -> None:
  """The script's flags, on `fv`: FLAGS when run as a script (tests/benchmarks/test_smoke.py calls main in the test
  process, with a FlagValues of its own)."""
  flags.DEFINE_list("configs", ["configs/folder64.cfg", "configs/faces64.cfg"], "Two flagfiles: A, B (each may "
                    "carry flags of its own after '+' signs: configs/small64.cfg+--augment=none).", flag_values=fv)
  flags.DEFINE_string("data_dir", None, "An image folder.", flag_values=fv)
  flags.DEFINE_integer("batch_size", 0, "Global batch of every configuration (0: each flagfile's own).",
                       flag_values=fv)
  flags.DEFINE_integer("steps_per_loop", 2, "Steps per call.", flag_values=fv)
  flags.DEFINE_float("seconds", 20.0, "Length of one timed round of each step.", flag_values=fv)
  flags.DEFINE_integer("repeats", 3, "Rounds; medians are reported.", flag_values=fv)
  flags.DEFINE_multi_string("config_flag", [], "Extra flags for every configuration (e.g. "
                            "--config_flag=--precision=...)", flag_values=fv)


def _step(path, strategy, name):
  extra = [f"--batch_size={FLAGS.batch_size}"] if FLAGS.batch_size else []
  cfg = config_lib.from_args([*throughput.config_args(path), f"--data_dir={FLAGS.data_dir}",
                              "--workdir=/tmp/arch_ratio", f"--steps_per_loop={FLAGS.steps_per_loop}", *extra,
                              *FLAGS.config_flag])
  source = data.open_source(cfg)
  cfg = preflight.resolve_config(cfg, source)
  state = state_lib.create_state(cfg, strategy, cfg.num_classes)
  iterator = iter(strategy.distribute_datasets_from_function(data.make_dataset_fn(cfg, source, state.gan.image_shape)))
  train = train_step_lib.make_train_step(cfg, strategy, state)
  networks = (state.gan.generator, state.gan.discriminator)
  params = sum(int(tf.size(v)) for network in networks for v in network.trainable_variables)
  return dict(name=name, cfg=cfg, run=lambda: train(iterator, cfg.steps_per_loop),
              images=cfg.batch_size * cfg.d_steps_per_g * cfg.steps_per_loop, params=params)


def main(argv, strategies=None):
  """Measures and prints the report; `strategies` (one device, 2 replicas) are made here unless given.

  A test process passes its own: it split the CPU when it started, and a second MirroredStrategy over the same
  devices in one process would hand out the same collective keys as the first (TensorFlow then aborts).
  """
  del argv
  if strategies is None:
    tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                               [tf.config.LogicalDeviceConfiguration()] * 2)
    strategies = (tf.distribute.OneDeviceStrategy("/cpu:0"), tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
  one, two = strategies
  steps = [_step(path, strategy, f"{os.path.basename(path)} {label}") for path in FLAGS.configs
           for strategy, label in ((one, "one device"), (two, "2 replicas"))]
  for step in steps:  # Trace and warm up.
    for _ in range(2):
      step["run"]()
  rounds = {s["name"]: [] for s in steps}
  for _ in range(FLAGS.repeats):
    for step in steps:
      rounds[step["name"]].append(throughput.timed(step["run"], step["images"], FLAGS.seconds))
  ips = {name: statistics.median(values) for name, values in rounds.items()}
  a, b = (os.path.basename(p) for p in FLAGS.configs)
  result = dict(
      images_per_s={k: round(v, 2) for k, v in ips.items()},
      ratio_b_to_a={label: round(ips[f"{b} {label}"] / ips[f"{a} {label}"], 3)
                    for label in ("one device", "2 replicas")},
      two_replicas_to_one_device={c: round(ips[f"{c} 2 replicas"] / ips[f"{c} one device"], 3) for c in (a, b)},
      batch_size={os.path.basename(p): s["cfg"].batch_size for p, s in zip(FLAGS.configs, steps[::2])},
      trainable_parameters={os.path.basename(p): s["params"] for p, s in zip(FLAGS.configs, steps[::2])},
      rounds={k: [round(v, 2) for v in vs] for k, vs in rounds.items()}, seconds=FLAGS.seconds, cpu=throughput.cpu())
  print(json.dumps(result))


if __name__ == "__main__":
  define_flags(FLAGS)
  flags.mark_flag_as_required("data_dir")
  app.run(main, flags_parser=cli.parse_flags)  # One-line flag errors (exit 2); --help exits 0.
