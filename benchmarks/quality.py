r"""Sample quality against training wall time: the table of README "Results".

For each config (and `reference`, the plain TF-tutorial loop), in its own subprocess:
  * build what `train.run` builds (data, state, the trainer's own train step on its distributed dataset) and the
    Evaluator (`gan_dist.eval.evaluator`: feature network and real-data statistics, cached under --eval_cache_dir);
  * train for --minutes of TRAINING wall time, calling the train step --steps_per_loop steps at a time; every
    --every minutes of training time, stop the clock and evaluate the (EMA) generator on --num samples: FCD and its
    real-data floor, label accuracy (overall and the weakest class) for conditional configs;
  * `reference` is the TF DCGAN tutorial's loop (tensorflow.org/tutorials/generative/dcgan; the step timed in
    benchmarks/throughput.py) with configs/dcgan.cfg's hyper-parameters (batch 256, Adam 1e-4, non-saturating loss)
    fed the tutorial's input pipeline (shuffled MNIST training images, batches of 256): a plain @tf.function step on
    one device, no distribution, no EMA.
No checkpoints or summaries are written, only the final samples (the clock measures training only). Each config
prints JSON lines; at the end the parent prints and writes (into --out_dir) the README table (results.md), every
evaluation (quality.jsonl), FCD against training minutes for all configs (fcd_vs_time.png), and every config's
final samples side by side (samples.png; each config's grid alone in samples_<config>.png).

  python3 benchmarks/quality.py                       # README "Results": 4 configs x 30 minutes (about 2.5 hours)
  python3 benchmarks/quality.py --minutes=1 --every=0.5 --num=2000 --configs=configs/mlp_gan.cfg,reference
  # A smoke run in seconds: tiny data, a few steps at a small batch (figures meaningless, every code path taken):
  python3 benchmarks/quality.py --data_dir=TINY_IDX_DIR --minutes=0.001 --every=0.001 --num=64 \
      --configs=configs/mlp_gan.cfg,reference --config_flag=--batch_size=16 --config_flag=--steps_per_loop=1 \
      --eval_cache_dir=/tmp/cache --out_dir=/tmp/quality
"""

import json
import os
import re
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # pylint: disable=g-import-not-at-top
from absl import logging
import keras
import numpy as np
import tensorflow as tf

from gan_dist import cli  # pylint: disable=g-import-not-at-top
from gan_dist import config as config_lib
from gan_dist import data
from gan_dist import figures
from gan_dist import files
from gan_dist import models
from gan_dist import precision
from gan_dist import preflight
from gan_dist import sampling
from gan_dist import state as state_lib
from gan_dist import strategy as strategy_lib
from gan_dist import summaries
from gan_dist import train_step as train_step_lib
from gan_dist.eval import evaluator as evaluator_lib
import throughput  # pylint: disable=g-import-not-at-top  (benchmarks/throughput.py, beside this script)
import tutorial  # pylint: disable=g-import-not-at-top  (benchmarks/tutorial.py, beside this script)

FLAGS = cli.FLAGS
REFERENCE = "reference"
SAMPLES_PER_GRID = 64  # 8x8 unconditional; conditional: 64 // classes per class, one row each.
DEFAULT_CONFIGS = ("configs/dcgan_cpu_quick.cfg", "configs/mlp_gan.cfg", "configs/cdcgan_fast.cfg", REFERENCE)


def define_flags(fv: flags.FlagValues) -> None:
  """The benchmark's own flags, beside every gan_dist flag (cli.run defines those first).

  Of the gan_dist flags, --data_dir, --strategy and --eval_cache_dir are passed on to every config (the configs' own
  flags decide the rest); two defaults differ here: one device, and the MNIST files beside the repo.
  """
  fv.set_default("strategy", "one_device")
  fv.set_default("data_dir", os.path.join(REPO, "..", "shared", "data", "mnist"))
  flags.DEFINE_list("configs", list(DEFAULT_CONFIGS), "Flagfiles to train, and/or `reference` (the TF-tutorial loop "
                    "with configs/dcgan.cfg's hyper-parameters). A flagfile may carry flags of its own after '+' "
                    "signs: configs/small64.cfg+--augment=none.", flag_values=fv)
  flags.DEFINE_float("minutes", 30.0, "Training wall time per config (evaluations not counted).", flag_values=fv)
  flags.DEFINE_float("every", 2.0, "Evaluate every this many minutes of training wall time (and at the end).",
                     flag_values=fv)
  flags.DEFINE_integer("num", 10000, "Generated images per evaluation (and real images for the statistics).",
                       lower_bound=4, flag_values=fv)
  flags.DEFINE_multi_string("config_flag", [], "A gan_dist flag applied to every config after its flagfile (and to "
                            "the reference after configs/dcgan.cfg), e.g. --config_flag=--batch_size=16; repeat it "
                            "for several. For quick looks and smoke runs (with tiny --minutes, --num and data): the "
                            "figures then no longer reproduce README Results, which use none", flag_values=fv)
  flags.DEFINE_boolean("parallel", False, "Train every config at the same time (each its own process, sharing the "
                       "machine): the configs are compared under the same load, in a third of the time for three. "
                       "Steps per minute then are those of a shared machine.", flag_values=fv)
  flags.DEFINE_list("truncations", [], "Also evaluate at every point with the noise truncated to [-T, T] for each T "
                    "here (BigGAN's truncation trick, gan_dist.sampling.truncate), e.g. 0.5,1.0: each record then "
                    "has `truncated` {T: fcd, precision, recall, label accuracy overall, weakest and per class}; "
                    "the main figures keep the config's own --truncation (0: none).", flag_values=fv)
  flags.DEFINE_string("out_dir", os.path.join(REPO, "runs", "quality"), "Where results.md, quality.jsonl and "
                      "fcd_vs_time.png are written.", flag_values=fv)
  flags.DEFINE_string("one", "", "Internal: run this config only, in this process, printing JSON lines.",
                      flag_values=fv)


def _config_for(path: str, extra=()) -> config_lib.Config:
  """The Config of flagfile `path` (with its own '+' flags) with the benchmark's data, strategy and cache (parsed
  like main.py does)."""
  return config_lib.from_args([
      *throughput.config_args(path), f"--data_dir={FLAGS.data_dir}", f"--strategy={FLAGS.strategy}",
      f"--eval_cache_dir={FLAGS.eval_cache_dir}", f"--eval_num={FLAGS.num}", "--workdir=/tmp/gan_dist_quality",
      *extra, *FLAGS.config_flag])


def _emit(record: dict) -> None:
  print(json.dumps(record), flush=True)


class _Clock:
  """Training wall time only: `run(fn)` adds fn's duration."""

  def __init__(self):
    self.seconds = 0.0

  def run(self, fn):
    start = time.perf_counter()
    out = fn()
    self.seconds += time.perf_counter() - start
    return out


def _write_samples(name: str, cfg: config_lib.Config, gan: models.Gan, generator) -> str:
  """Writes the final samples of `generator` (one row per class if conditional, else 8x8; noise of the config's
  --truncation) to --out_dir; returns the PNG's path."""
  z, y, rows = sampling.class_rows(SAMPLES_PER_GRID, gan.latent_dim, gan.num_classes, cfg.seed, cfg.truncation)
  images = sampling.generate(sampling.make_generate_fn(generator, gan), z, y)
  slug = re.sub(r"[^A-Za-z0-9]+", "_", os.path.basename(name).replace(".cfg", "")).strip("_")
  path = os.path.join(FLAGS.out_dir, f"samples_{slug}.png")
  summaries.write_png(path, sampling.image_grid(images, rows=rows))
  return path


def _label_fields(metrics: dict, num_classes: int) -> dict:
  """{label_accuracy, weakest_class, weakest_class_accuracy, per_class} of a conditional model's metrics, else {}."""
  if "label_accuracy" not in metrics:
    return {}
  per_class = [metrics[f"label_accuracy/{k}"] for k in range(num_classes)]
  return dict(label_accuracy=metrics["label_accuracy"], weakest_class=int(np.argmin(per_class)),
              weakest_class_accuracy=min(per_class), per_class=per_class)


def _evaluate_loop(name, cfg, train_chunk, evaluator, gan, generator_fn, prepare=lambda: None):
  """Trains with `train_chunk() -> (steps done, their metric means)` until --minutes of training time; evaluates
  every --every minutes.

  Returns the final record; the final samples go to --out_dir (`_write_samples`).
  """
  clock, step, budget, every = _Clock(), 0, FLAGS.minutes * 60, FLAGS.every * 60
  next_eval = every
  floor = evaluator.floors
  record = {}
  start_wall = time.perf_counter()
  last_metrics = {}
  while True:
    done_steps, last_metrics = clock.run(train_chunk)
    step += done_steps
    done = clock.seconds >= budget
    if clock.seconds >= next_eval or done:
      prepare()
      metrics = evaluator(generator_fn(), step)
      record = {"config": name, "step": step, "train_minutes": round(clock.seconds / 60, 3),
                "steps_per_sec": round(step / clock.seconds, 3), "fcd": metrics["fcd"], "fcd_floor": floor["fcd"],
                "kid": metrics["kid"], "precision": metrics["precision"], "recall": metrics["recall"]}
      if "memorization" in metrics:
        record.update(memorization=metrics["memorization"], memorization_floor=floor["memorization"])
      if "augment_p" in last_metrics:
        record["augment_p"] = last_metrics["augment_p"]
      record.update(_label_fields(metrics, cfg.num_classes))
      if "label_accuracy" in metrics:
        record["label_accuracy_floor"] = floor["label_accuracy"]
      if FLAGS.truncations:
        record["truncated"] = {}
        for t in FLAGS.truncations:
          found = evaluator(generator_fn(), truncation=float(t))
          record["truncated"][t] = dict(fcd=found["fcd"], precision=found["precision"], recall=found["recall"],
                                        **_label_fields(found, cfg.num_classes))
      _emit(record)
      logging.info("%s: %s", name, evaluator_lib.format_metrics(metrics))
      while next_eval <= clock.seconds:
        next_eval += every
    if done:
      break
  record["final"] = True
  record["samples"] = _write_samples(name, cfg, gan, generator_fn())
  record["wall_minutes_with_evals"] = round((time.perf_counter() - start_wall) / 60, 2)
  _emit(record)
  return record


def run_config(path: str) -> None:
  """One gan_dist config: the trainer's own step and dataset, the EMA generator if the config keeps one."""
  cfg = _config_for(path)
  strategy = strategy_lib.make(cfg)
  preflight.check_replicas(cfg, strategy)
  source = data.open_source(cfg)
  cfg = preflight.resolve_config(cfg, source)
  state = state_lib.create_state(cfg, strategy, cfg.num_classes)
  evaluator = evaluator_lib.Evaluator(cfg, strategy, state.gan)
  iterator = iter(strategy.distribute_datasets_from_function(data.make_dataset_fn(cfg, source, state.gan.image_shape)))
  train = train_step_lib.make_train_step(cfg, strategy, state)

  def chunk():
    return cfg.steps_per_loop, train(iterator, cfg.steps_per_loop).means()

  _evaluate_loop(os.path.relpath(path, REPO) if os.path.isabs(path) else path, cfg, chunk, evaluator, state.gan,
                 lambda: state.sampling_generator, prepare=state.prepare_ema)


def run_reference() -> None:
  """The TF DCGAN tutorial's loop with configs/dcgan.cfg's hyper-parameters (see the module docstring)."""
  cfg = _config_for(os.path.join(REPO, "configs", "dcgan.cfg"), ["--strategy=one_device"])
  keras.utils.set_random_seed(cfg.seed)
  with precision.policy_scope("float32"):
    gan = models.build(cfg.replace(precision="float32", sync_batchnorm=False), 0)
  evaluator = evaluator_lib.Evaluator(cfg, tf.distribute.get_strategy(), gan)
  source = data.open_source(cfg)
  train_images = np.asarray(source.images)  # The tutorial's in-memory uint8 training images.
  # The tutorial's pipeline: normalise to [-1, 1], shuffle the whole set, batch, repeat over epochs.
  dataset = (tf.data.Dataset.from_tensor_slices(train_images).shuffle(len(train_images), seed=cfg.seed)
             .batch(cfg.batch_size).map(lambda x: (tf.cast(x, tf.float32) - 127.5) / 127.5).repeat().prefetch(2))
  iterator = iter(dataset)

  generator = gan.generator
  step = tutorial.make_step(generator, gan.discriminator, cfg.batch_size, gan.latent_dim, cfg.g_lr, cfg.d_lr)

  def train_step(images):
    return step(images)[1]

  steps_per_chunk = cfg.steps_per_loop

  def chunk():
    for _ in range(steps_per_chunk):
      loss = train_step(next(iterator))
    float(loss)  # Waits for the last step, as the tutorial's loop effectively does between epochs.
    return steps_per_chunk, {}

  _evaluate_loop(REFERENCE, cfg, chunk, evaluator, gan, lambda: generator)


def table(finals: list) -> str:
  """Markdown: the README "Results" table."""
  lines = ["| config | steps | training wall time | steps/s | FCD (floor) | label accuracy (floor; weakest class) | "
           "memorization (held-out real) |", "| --- | --- | --- | --- | --- | --- | --- |"]
  for r in finals:
    label = "-"
    if "label_accuracy" in r:
      label = (f"{100 * r['label_accuracy']:.1f}% ({100 * r['label_accuracy_floor']:.1f}%; class "
               f"{r['weakest_class']} {100 * r['weakest_class_accuracy']:.1f}%)")
    name = "TF-tutorial loop (dcgan.cfg hyper-parameters)" if r["config"] == REFERENCE else f"`{r['config']}`"
    memorized = (f"{100 * r['memorization']:.1f}% ({100 * r['memorization_floor']:.1f}%)"
                 if "memorization" in r else "-")
    lines.append(f"| {name} | {r['step']:,} | {r['train_minutes']:.1f} min | {r['steps_per_sec']:.2f} | "
                 f"{r['fcd']:.2f} ({r['fcd_floor']:.2f}) | {label} | {memorized} |")
  return "\n".join(lines)


def time_table(records: list) -> str:
  """Markdown: FCD (and label accuracy) of every config at every evaluation, by training minutes."""
  configs = list(dict.fromkeys(r["config"] for r in records))
  lines = ["| config | FCD at training minutes (steps) |", "| --- | --- |"]
  for name in configs:
    points = [r for r in records if r["config"] == name and not r.get("final")]
    cells = ", ".join(f"{r['train_minutes']:.1f}: {r['fcd']:.2f}"
                      + (f" / {100 * r['label_accuracy']:.0f}%" if "label_accuracy" in r else "")
                      + "".join(f" [T={t}: {t_r['fcd']:.2f}" + (f" / {100 * t_r['label_accuracy']:.0f}%, weakest "
                                f"{100 * t_r['weakest_class_accuracy']:.0f}%" if "label_accuracy" in t_r else "")
                                + "]" for t, t_r in r.get("truncated", {}).items())
                      + f" ({r['step']})" for r in points)
    lines.append(f"| {name} | {cells} |")
  return "\n".join(lines)


def fcd_figure(records: list) -> bytes:
  """PNG: FCD against training minutes, one line per config, the real-data floor dashed."""
  plt = figures.pyplot()
  fig, ax = plt.subplots(figsize=(7, 4.2))
  for name in dict.fromkeys(r["config"] for r in records):
    points = [(r["train_minutes"], r["fcd"]) for r in records if r["config"] == name and not r.get("final")]
    ax.plot(*zip(*points), marker="o", label=name)
  floor = records[0]["fcd_floor"]
  # With --eval_data_dir the floor is the training images scored against the held-out ones.
  what = "training images vs held-out" if "memorization" in records[0] else "real test images"
  ax.axhline(floor, linestyle="--", color="gray", label=f"{what} ({floor:.2f})")
  ax.set_yscale("log")
  ax.set_xlabel("training wall time (minutes, this CPU)")
  ax.set_ylabel("FCD (log scale, lower is better)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  return figures.to_png(fig)


def samples_figure(finals: list) -> bytes:
  """PNG: the final sample grid of every config side by side, titled with its config, steps and FCD."""
  panels = []
  for r in finals:
    grid = tf.io.decode_png(tf.io.read_file(r["samples"])).numpy()
    panels.append((f"{r['config']}\n{r['step']:,} steps, {r['train_minutes']:.0f} min, FCD {r['fcd']:.1f}", grid))
  return figures.grids_figure(panels)


def _collect(config: str, proc: subprocess.Popen, records: list) -> None:
  """Reads a config's JSON lines until its process ends (an error of it stops the benchmark)."""
  out, _ = proc.communicate()
  for line in out.splitlines():
    if line.startswith("{"):
      record = json.loads(line)
      record["config"] = config
      records.append(record)
      print(line, flush=True)
  if proc.returncode:
    raise subprocess.CalledProcessError(proc.returncode, proc.args)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  if FLAGS.one:
    logging.set_verbosity(logging.INFO)
    run_reference() if FLAGS.one == REFERENCE else run_config(FLAGS.one)
    return
  passthrough = [f"--minutes={FLAGS.minutes}", f"--parallel={FLAGS.parallel}", f"--every={FLAGS.every}",
                 f"--num={FLAGS.num}", f"--truncations={','.join(FLAGS.truncations)}",
                 f"--data_dir={FLAGS.data_dir}", f"--eval_cache_dir={FLAGS.eval_cache_dir}",
                 f"--strategy={FLAGS.strategy}", f"--out_dir={FLAGS.out_dir}",
                 *[f"--config_flag={f}" for f in FLAGS.config_flag]]
  records, procs = [], []
  for config in FLAGS.configs:
    path = config if config == REFERENCE else os.path.join(REPO, config) if not os.path.isabs(config) else config
    if config != REFERENCE and not os.path.exists(path.split("+")[0]):
      raise FileNotFoundError(f"--configs: {config} does not exist")
    procs.append(subprocess.Popen([sys.executable, os.path.abspath(__file__), f"--one={path}", *passthrough],
                                  cwd=REPO, stdout=subprocess.PIPE, text=True))
    if not FLAGS.parallel:
      _collect(config, procs[-1], records)
  if FLAGS.parallel:
    for config, proc in zip(FLAGS.configs, procs):
      _collect(config, proc, records)
  finals = [r for r in records if r.get("final")]
  report = (f"Training wall time per config: {FLAGS.minutes:g} min; evaluation every {FLAGS.every:g} min on "
            f"{FLAGS.num} samples (not counted). Measured on {throughput.cpu()}.\n\n{table(finals)}\n\n"
            f"{time_table(records)}\n")
  files.write_atomic(os.path.join(FLAGS.out_dir, "results.md"), report)
  files.write_atomic(os.path.join(FLAGS.out_dir, "quality.jsonl"), "".join(json.dumps(r) + "\n" for r in records))
  files.write_atomic(os.path.join(FLAGS.out_dir, "fcd_vs_time.png"), fcd_figure(records))
  files.write_atomic(os.path.join(FLAGS.out_dir, "samples.png"), samples_figure(finals))
  print(report)
  print(f"Wrote {FLAGS.out_dir}/results.md, quality.jsonl, fcd_vs_time.png and samples.png")


if __name__ == "__main__":
  cli.run(main, define_flags)
