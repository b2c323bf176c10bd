r"""Throughput of gan_dist's train step against the TensorFlow DCGAN tutorial's step, and of the input pipeline.

For one configuration, in one process:
  * gan_dist: the function the trainer runs, `train_step.make_train_step(cfg, strategy, state)`, fed by the
    trainer's own distributed dataset (`data.make_dataset_fn` on real MNIST) and called with --steps_per_loop steps
    per call, exactly as `train.run` calls it;
  * reference: the tutorial's step (tensorflow.org/tutorials/generative/dcgan): a plain @tf.function on one
    device in float32, on the same architecture and batch, fed a constant batch of real MNIST images;
  * the input pipeline alone: images/s of draining the same distributed dataset inside a tf.function loop (the
    way the train step consumes it), with no model work.
The two steps alternate for --repeats rounds of --seconds each, and the medians are reported, so that a noisy
machine slows both alike: compare `ratio` (gan_dist / reference), not absolute figures, between processes.

Prints one JSON line per configuration:
  {"config": {...}, "gan_dist_images_per_s": .., "reference_images_per_s": .., "ratio": ..,
   "input_pipeline_images_per_s": .., "input_to_step_ratio": .., "rounds": {...}, "env": {...}}

--sweep runs the acceptance configurations (docs/benchmarks.md), each in its own subprocess (the Keras dtype
policy and the logical CPU split are process-global), prints their lines, then one "acceptance" line.

  python3 benchmarks/throughput.py --precision=mixed_bfloat16
  python3 benchmarks/throughput.py --sweep --seconds=5 --repeats=3
  # A smoke run in seconds (figures meaningless): tiny data, a small batch, short rounds.
  python3 benchmarks/throughput.py --data_dir=TINY_IDX_DIR --batch_size=16 --steps_per_loop=2 --seconds=0.2 --repeats=1
"""

import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # pylint: disable=g-import-not-at-top
from absl import logging
import tensorflow as tf

from gan_dist import cli  # pylint: disable=g-import-not-at-top
from gan_dist import data
from gan_dist import models
from gan_dist import precision
from gan_dist import preflight
from gan_dist import state as state_lib
from gan_dist import strategy as strategy_lib
from gan_dist import train_step as train_step_lib
import tutorial  # pylint: disable=g-import-not-at-top  (benchmarks/tutorial.py, beside this script)

FLAGS = cli.FLAGS
DEFAULT_DATA_DIR = os.path.join(REPO, "..", "shared", "data", "mnist")


def define_flags(fv: flags.FlagValues) -> None:
  """The benchmark's own flags, beside every gan_dist flag (cli.run defines those first).

  Every gan_dist flag is accepted (--arch, --batch_size, --precision, --strategy, --num_cpu_replicas,
  --steps_per_loop, --jit_compile, --data_dir, --loss, ...). Two defaults differ for the benchmark: one device (the
  reference's placement), and the MNIST files beside the repo.
  """
  fv.set_default("strategy", "one_device")
  fv.set_default("data_dir", DEFAULT_DATA_DIR)
  fv.set_default("workdir", "/tmp/gan_dist_benchmark")  # Nothing is written there.
  flags.DEFINE_float("seconds", 5.0, "Length of one timed round of each step (the input pipeline's rounds are "
                     "half as long). A fraction of a second makes a smoke run.", flag_values=fv)
  flags.DEFINE_integer("repeats", 3, "Rounds (gan_dist, reference, gan_dist, ...); medians are reported.",
                       lower_bound=1, flag_values=fv)
  flags.DEFINE_boolean("input_pipeline", True, "Also measure the input pipeline alone.", flag_values=fv)
  flags.DEFINE_boolean("sweep", False, "Run the acceptance configurations (one subprocess each) and check targets.",
                       flag_values=fv)
  flags.DEFINE_string("out", "", "Also append the JSON lines to this file.", flag_values=fv)


# The acceptance configurations of --sweep (batch 256, dcgan), and the targets checked on their lines.
SWEEP = (
    dict(name="float32", precision="float32", strategy="one_device"),
    dict(name="mixed_bfloat16", precision="mixed_bfloat16", strategy="one_device"),
    dict(name="mirrored1_float32", precision="float32", strategy="mirrored", num_cpu_replicas=1),
)


def make_reference_step(cfg, source):
  """The tutorial's train step on `cfg.arch` in float32 on one device.

  Args:
    cfg: the Config (arch, latent_dim, batch_size); built with the float32 policy and plain BatchNormalization.
    source: the MNIST split in memory; its first `batch_size` images, preprocessed as gan_dist does (float32
      [batch_size, H, W, C] in [-1, 1]), are the real batch of every step.

  Returns:
    A no-argument tf.function running one step and returning (gen_loss, disc_loss).
  """
  with precision.policy_scope("float32"):
    gan = models.build(cfg.replace(precision="float32", sync_batchnorm=False), cfg.num_classes)
  if gan.conditional:
    raise ValueError(f"The reference step is the unconditional tutorial step; --arch={cfg.arch} is conditional")
  images = next(iter(data.eval_dataset(source, gan.image_shape, cfg.batch_size)))["images"]
  step = tutorial.make_step(gan.generator, gan.discriminator, int(images.shape[0]), gan.latent_dim)
  return tf.function(lambda: step(images))


def cpu() -> str:
  """The CPU every figure was measured on: model, family/model numbers, AVX-512 or AVX2, cores (Linux)."""
  try:
    with open("/proc/cpuinfo") as f:
      text = f.read()
  except OSError:
    return f"unknown CPU, {os.cpu_count()} cores"
  fields = {}
  for line in text.splitlines():
    key, _, value = line.partition(":")
    fields.setdefault(key.strip(), value.strip())
  kind = "AVX-512" if " avx512f" in text else "AVX2" if " avx2" in text else "no AVX2"
  return (f"{fields.get('model name', 'unknown CPU')} (family {fields.get('cpu family', '?')} model "
          f"{fields.get('model', '?')}, {kind}), {os.cpu_count()} cores")


def config_args(entry: str) -> list:
  """The flags of a benchmark's config entry: a flagfile, optionally followed by flags of its own after '+' signs
  (`configs/small64.cfg+--augment=none` -> ["--flagfile=configs/small64.cfg", "--augment=none"]); a relative
  flagfile found only from the repository's root is named from there."""
  path, *own = entry.split("+")
  if not os.path.isabs(path) and not os.path.exists(path) and os.path.exists(os.path.join(REPO, path)):
    path = os.path.join(REPO, path)  # The documented commands name configs/ as seen from the repository's root.
  return [f"--flagfile={path}", *own]


def timed(run_once, images_per_call, seconds):
  """Calls `run_once` (which blocks until its work is done) for about `seconds`; returns images/s."""
  calls = 0
  start = time.perf_counter()
  while True:
    run_once()
    calls += 1
    elapsed = time.perf_counter() - start
    if elapsed >= seconds:
      return calls * images_per_call / elapsed


def measure(cfg) -> dict:
  """Measures one configuration in this process (the strategy must not have been created yet)."""
  strategy = strategy_lib.make(cfg)  # First: it may split the CPU into logical devices.
  preflight.check_replicas(cfg, strategy)
  source = data.open_source(cfg)
  cfg = preflight.resolve_config(cfg, source)

  # Reference first: its models are built under the float32 policy; create_state then seeds and builds the run's
  # under cfg.precision.
  reference_step = make_reference_step(cfg, source)

  state = state_lib.create_state(cfg, strategy, cfg.num_classes)
  dataset_fn = data.make_dataset_fn(cfg, source, state.gan.image_shape)
  iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))
  train = train_step_lib.make_train_step(cfg, strategy, state)
  images_per_call = cfg.batch_size * cfg.d_steps_per_g * cfg.steps_per_loop

  def gan_dist_once():
    train(iterator, cfg.steps_per_loop)  # Ends with the trainer's own host sync (the chunk's one all-reduced vector).

  def reference_once():
    float(reference_step()[1])

  for _ in range(2):  # Trace, compile and warm up both (oneDNN primitive caches, allocator).
    gan_dist_once()
    for _ in range(cfg.steps_per_loop):
      reference_once()

  rounds = {"gan_dist": [], "reference": []}
  for _ in range(FLAGS.repeats):
    rounds["gan_dist"].append(timed(gan_dist_once, images_per_call, FLAGS.seconds))
    rounds["reference"].append(timed(reference_once, cfg.batch_size, FLAGS.seconds))
  gan_dist_ips = statistics.median(rounds["gan_dist"])
  reference_ips = statistics.median(rounds["reference"])
  result = {
      "config": dict(arch=cfg.arch, batch_size=cfg.batch_size, precision=cfg.precision, strategy=cfg.strategy,
                     num_replicas=strategy.num_replicas_in_sync, steps_per_loop=cfg.steps_per_loop,
                     jit_compile=cfg.jit_compile, seconds=FLAGS.seconds, repeats=FLAGS.repeats),
      "gan_dist_images_per_s": round(gan_dist_ips, 1),
      "reference_images_per_s": round(reference_ips, 1),
      "ratio": round(gan_dist_ips / reference_ips, 3),
  }
  if FLAGS.input_pipeline:
    pipeline_ips = measure_input_pipeline(cfg, strategy, dataset_fn)
    result["input_pipeline_images_per_s"] = round(pipeline_ips, 1)
    result["input_to_step_ratio"] = round(pipeline_ips / gan_dist_ips, 2)
  result["rounds"] = {k: [round(v, 1) for v in vs] for k, vs in rounds.items()}
  result["env"] = {k: v for k, v in os.environ.items()
                   if k.startswith(("TF_ENABLE", "TF_ONEDNN", "TF_XLA", "TF_NUM", "OMP_", "KMP_", "ONEDNN_"))}
  return result


def measure_input_pipeline(cfg, strategy, dataset_fn) -> float:
  """Images/s of draining the distributed dataset in a tf.function loop, as the train step consumes it."""
  iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))

  @tf.function
  def drain(iterator, num_steps):
    total = tf.constant(0.0)
    for _ in tf.range(num_steps):
      # One cheap op per replica keeps every element alive (nothing is pruned) without model work.
      per_replica = strategy.run(lambda batch: tf.reduce_sum(batch["images"][:, 0, 0, 0]), args=(next(iterator),))
      total += strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
    return total

  num_steps = tf.constant(cfg.steps_per_loop, tf.int32)
  for _ in range(3):
    drain(iterator, num_steps).numpy()
  images_per_call = cfg.batch_size * cfg.steps_per_loop
  return statistics.median(timed(lambda: drain(iterator, num_steps).numpy(), images_per_call, FLAGS.seconds / 2)
                           for _ in range(FLAGS.repeats))


def _emit(result: dict) -> None:
  line = json.dumps(result, sort_keys=False)
  print(line, flush=True)
  if FLAGS.out:
    with open(FLAGS.out, "a") as f:
      f.write(line + "\n")


def sweep() -> None:
  """Runs SWEEP, one subprocess per configuration, and prints an acceptance line."""
  passthrough = [f"--batch_size={FLAGS.batch_size}", f"--arch={FLAGS.arch}", f"--seconds={FLAGS.seconds}",
                 f"--repeats={FLAGS.repeats}", f"--steps_per_loop={FLAGS.steps_per_loop}",
                 f"--data_dir={FLAGS.data_dir}", f"--{'' if FLAGS.jit_compile else 'no'}jit_compile"]
  results = {}
  for config in SWEEP:
    args = [f"--{k}={v}" for k, v in config.items() if k != "name"]
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), *passthrough, *args],
                          stdout=subprocess.PIPE, text=True, check=True)
    line = [l for l in proc.stdout.splitlines() if l.startswith("{")][-1]
    results[config["name"]] = json.loads(line)
    results[config["name"]]["config"]["name"] = config["name"]
    _emit(results[config["name"]])
  f32, bf16, mirrored = results["float32"], results["mixed_bfloat16"], results["mirrored1_float32"]
  # Each figure is normalised by the reference measured in its own process, which cancels machine load.
  mirrored_vs_one_device = mirrored["ratio"] / f32["ratio"]
  input_ratio = min(r["input_to_step_ratio"] for r in results.values())
  checks = {
      "float32_vs_reference": (f32["ratio"], 1.0),
      "bfloat16_vs_float32_reference": (bf16["ratio"], 1.8),
      "mirrored1_vs_one_device": (round(mirrored_vs_one_device, 3), 0.95),
      "input_pipeline_vs_step_min": (input_ratio, 10.0),
  }
  _emit({"acceptance": {name: {"measured": value, "target": target, "met": value >= target}
                        for name, (value, target) in checks.items()}})


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  if FLAGS.sweep:
    sweep()
    return
  _emit(measure(cli.config_from_flags()))


if __name__ == "__main__":
  cli.run(main, define_flags)
