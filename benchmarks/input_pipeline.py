r"""Input pipeline at scale: memory and throughput of --dataset=folder (and of its pack) on 10,000 and 100,000 JPEGs.

In one run:
  1. writes 100,000 64x64 JPEGs (smooth random blobs, about 2 KB each, like small photos) into a temporary folder,
     as ten subfolders of 10,000: the first subfolder alone is the 10,000-image dataset (a prefix of the other),
     the whole tree the 100,000-image one (ten class folders);
  2. for each size, in its own subprocess (a fresh process, so peak RSS is that size's alone): opens the folder with
     `data.open_source`, builds the trainer's pipeline (`data.make_dataset_fn`, batch --batch_size, 64x64x3,
     --random_flip, shuffled) and drains it for --seconds after a warm-up; reports images/s and the process's peak
     RSS (and its RSS before the pipeline existed, so the pipeline's own share is visible);
  3. with --pack, packs each size's folder (`python -m gan_dist.pack`'s `data.write_pack`, timed) and measures the
     pack the same way (--dataset=packed): start-up (listing and opening), images/s and peak RSS, folder vs pack;
  4. in another subprocess, times the dcgan64 train step (`train_step.make_train_step`, one device, float32) at the
     same batch on a constant batch: the images/s training consumes on this machine.
Prints one JSON object, then a short summary. Targets: peak RSS(100k) <= 1.2 x peak RSS(10k), and pipeline images/s
>= 3 x step images/s at each size.

  python3 benchmarks/input_pipeline.py                     # about 5-10 minutes on 2 cores, ~300 MB of disk
  python3 benchmarks/input_pipeline.py --sizes=2000,20000 --seconds=10   # quicker look
  python3 benchmarks/input_pipeline.py --sizes=100000 --pack               # folder vs pack on 100,000 images
  python3 benchmarks/input_pipeline.py --sizes=8,32 --per_folder=16 --seconds=0.5 --step_calls=1 --batch_size=8
                                                           # smoke run in seconds (figures meaningless)
"""

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # pylint: disable=g-import-not-at-top
from absl import logging
import numpy as np
from PIL import Image
import tensorflow as tf

from gan_dist import cli  # pylint: disable=g-import-not-at-top
from gan_dist import config as config_lib
from gan_dist import data
from gan_dist import state as state_lib
from gan_dist import strategy as strategy_lib
from gan_dist import train_step as train_step_lib
import throughput  # pylint: disable=g-import-not-at-top  (benchmarks/throughput.py, beside this script)

FLAGS = cli.FLAGS


def define_flags(fv: flags.FlagValues) -> None:
  """The benchmark's own flags; of gan_dist's (cli.run defines them all), only --batch_size is read (default 256)."""
  flags.DEFINE_string("sizes", "10000,100000", "Comma-separated dataset sizes; the largest is written, the others "
                      "are prefixes of it (each must be a multiple of --per_folder or smaller than it).",
                      flag_values=fv)
  flags.DEFINE_integer("per_folder", 10000, "Images per subfolder.", lower_bound=1, flag_values=fv)
  flags.DEFINE_string("dir", "", "Where to write the images, kept for a later run with the same --dir (default: a "
                      "temporary folder, deleted at the end).", flag_values=fv)
  flags.DEFINE_float("seconds", 20.0, "Length of each timed drain of the pipeline.", flag_values=fv)
  flags.DEFINE_integer("step_calls", 3, "Timed calls of the train step (one step each) after a warm-up call.",
                       lower_bound=1, flag_values=fv)
  flags.DEFINE_string("child", "", "Internal: 'pipeline' or 'step', run in a subprocess.", flag_values=fv)
  flags.DEFINE_string("child_data_dir", "", "Internal: the folder a 'pipeline' child reads.", flag_values=fv)
  flags.DEFINE_string("child_dataset", "folder", "Internal: --dataset of a 'pipeline' child.", flag_values=fv)
  flags.DEFINE_boolean("pack", False, "Also pack each size's folder and measure the pack beside it.", flag_values=fv)


IMAGE_SIZE = 64


def _rss_mb() -> float:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB.


def write_images(root: str, total: int, per_folder: int) -> float:
  """Writes `total` 64x64 JPEGs as root/part00/..., skipping files that exist; returns seconds spent."""
  start = time.perf_counter()
  rng = np.random.RandomState(0)
  for i in range(total):
    folder = os.path.join(root, f"part{i // per_folder:02d}")
    path = os.path.join(folder, f"img{i:06d}.jpg")
    if i % per_folder == 0:
      os.makedirs(folder, exist_ok=True)
    blobs = rng.randint(0, 256, size=(6, 6, 3)).astype(np.uint8)
    if os.path.exists(path):
      continue
    image = Image.fromarray(blobs).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
    image.save(path, quality=90)
  return time.perf_counter() - start


def child_pipeline() -> dict:
  """Drains the folder pipeline (--batch_size is gan_dist's flag, default 256); returns images/s and memory figures."""
  tf.constant(0)  # Initialise the runtime before the baseline.
  baseline = _rss_mb()
  cfg = config_lib.make_config(dataset=FLAGS.child_dataset, data_dir=FLAGS.child_data_dir, batch_size=FLAGS.batch_size,
                               random_flip=True, image_size=IMAGE_SIZE, channels=3)
  start = time.perf_counter()
  source = data.open_source(cfg)
  open_s = time.perf_counter() - start
  after_open = _rss_mb()
  dataset = data.make_dataset_fn(cfg, source, (IMAGE_SIZE, IMAGE_SIZE, 3))(tf.distribute.InputContext())
  iterator = iter(dataset)
  for _ in range(10):  # Warm-up: tracing, thread pools, autotuning.
    checksum = float(tf.reduce_sum(next(iterator)["images"][:, 0, 0, 0]))
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < FLAGS.seconds:
    batch = next(iterator)
    count += int(batch["images"].shape[0])
  elapsed = time.perf_counter() - start
  del checksum
  return {"num_examples": source.num_examples, "images_per_s": round(count / elapsed, 1), "images": count,
          "seconds": round(elapsed, 1), "open_s": round(open_s, 2), "rss_baseline_mb": round(baseline, 1),
          "rss_after_open_mb": round(after_open, 1), "rss_end_mb": round(_rss_mb(), 1),
          "peak_rss_mb": round(_peak_rss_mb(), 1), "bad_files": len(source.bad_files)}


def child_step() -> dict:
  """Times the dcgan64 train step on one device at --batch_size; returns images/s."""
  cfg = config_lib.make_config(arch="dcgan64", strategy="one_device", batch_size=FLAGS.batch_size, g_lr=2e-4,
                               d_lr=2e-4, beta1=0.5, steps_per_loop=1)
  strategy = strategy_lib.make(cfg)
  state = state_lib.create_state(cfg, strategy, 0)
  images = tf.random.stateless_uniform([FLAGS.batch_size, IMAGE_SIZE, IMAGE_SIZE, 3], seed=[1, 2],
                                       minval=-1.0, maxval=1.0)
  batch = {"images": images, "labels": tf.zeros([FLAGS.batch_size], tf.int32)}
  dataset = strategy.distribute_datasets_from_function(
      lambda ctx: tf.data.Dataset.from_tensors(batch).repeat())
  iterator = iter(dataset)
  train = train_step_lib.make_train_step(cfg, strategy, state)
  train(iterator, 1)  # Trace and warm up.
  start = time.perf_counter()
  for _ in range(FLAGS.step_calls):
    train(iterator, 1)  # Each call ends with the trainer's host sync.
  elapsed = time.perf_counter() - start
  return {"arch": "dcgan64", "batch_size": FLAGS.batch_size, "steps": FLAGS.step_calls,
          "seconds_per_step": round(elapsed / FLAGS.step_calls, 3),
          "images_per_s": round(FLAGS.step_calls * FLAGS.batch_size / elapsed, 1)}


def _view(base: str, images: str, size: int, largest: int) -> str:
  """A folder holding the first `size` images, as symbolic links into `images` (no second copy of any file)."""
  if size == largest:
    return images
  view = os.path.join(base, "views", str(size))
  os.makedirs(view, exist_ok=True)
  if size % FLAGS.per_folder == 0:
    targets = [f"part{k:02d}" for k in range(size // FLAGS.per_folder)]
    links = [(os.path.join(images, t), os.path.join(view, t)) for t in targets]
  elif size < FLAGS.per_folder:
    names = [f"img{i:06d}.jpg" for i in range(size)]
    links = [(os.path.join(images, "part00", n), os.path.join(view, n)) for n in names]
  else:
    raise ValueError(f"--sizes: {size} is neither below nor a multiple of --per_folder={FLAGS.per_folder}")
  for target, link in links:
    if not os.path.lexists(link):
      os.symlink(target, link)
  return view


def _run_child(*args) -> dict:
  command = [sys.executable, os.path.abspath(__file__), *args, f"--batch_size={FLAGS.batch_size}",
             f"--seconds={FLAGS.seconds}", f"--step_calls={FLAGS.step_calls}"]
  result = subprocess.run(command, capture_output=True, text=True, check=False)
  lines = [l for l in result.stdout.splitlines() if l.startswith("{")]
  if result.returncode or not lines:
    raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
  return json.loads(lines[-1])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  if FLAGS.child == "pipeline":
    print(json.dumps(child_pipeline()))
    return
  if FLAGS.child == "step":
    print(json.dumps(child_step()))
    return
  sizes = sorted(int(s) for s in FLAGS.sizes.split(","))
  base = FLAGS.dir or tempfile.mkdtemp(prefix="gan_dist_input_pipeline_")
  images = os.path.join(base, "images")
  load_before = os.getloadavg()
  try:
    write_s = write_images(images, sizes[-1], FLAGS.per_folder)
    results, packed = {}, {}
    for size in sizes:
      view = _view(base, images, size, sizes[-1])
      results[size] = _run_child("--child=pipeline", f"--child_data_dir={view}")
      if FLAGS.pack:
        pack_dir = os.path.join(base, "packs", str(size))
        start = time.perf_counter()
        data.write_pack(view, pack_dir, progress=lambda message: None)
        pack_s = time.perf_counter() - start
        packed[size] = _run_child("--child=pipeline", f"--child_data_dir={pack_dir}", "--child_dataset=packed")
        packed[size]["pack_s"] = round(pack_s, 1)
        packed[size]["pack_mb"] = round(sum(os.path.getsize(os.path.join(pack_dir, f))
                                            for f in os.listdir(pack_dir)) / 2**20, 1)
    step = _run_child("--child=step")
  finally:
    if not FLAGS.dir:
      shutil.rmtree(base, ignore_errors=True)
  small, large = results[sizes[0]], results[sizes[-1]]
  report = {
      "sizes": {str(k): v for k, v in results.items()},
      "peak_rss_ratio_largest_to_smallest": round(large["peak_rss_mb"] / small["peak_rss_mb"], 3),
      "step": step,
      "pipeline_to_step_ratio": {str(k): round(v["images_per_s"] / step["images_per_s"], 2)
                                 for k, v in results.items()},
      "targets": {"peak_rss_ratio_at_most_1.2": large["peak_rss_mb"] <= 1.2 * small["peak_rss_mb"],
                  "pipeline_at_least_3x_step": all(v["images_per_s"] >= 3 * step["images_per_s"]
                                                   for v in results.values())},
      "machine": {"cpus": os.cpu_count(), "cpu": throughput.cpu(),
                  "load_average_before": [round(x, 2) for x in load_before],
                  "load_average_after": [round(x, 2) for x in os.getloadavg()]},
      "write_images_s": round(write_s, 1),
  }
  if packed:
    report["packed"] = {str(k): v for k, v in packed.items()}
    report["pack_to_folder"] = {str(k): {"open_s": f"{v['open_s']} vs {results[k]['open_s']}",
                                         "images_per_s_ratio": round(v["images_per_s"] / results[k]["images_per_s"], 2),
                                         "peak_rss_ratio": round(v["peak_rss_mb"] / results[k]["peak_rss_mb"], 2)}
                                for k, v in packed.items()}
  print(json.dumps(report))
  print(f"\nPeak RSS: {small['peak_rss_mb']:.0f} MB for {sizes[0]:,} images, {large['peak_rss_mb']:.0f} MB for "
        f"{sizes[-1]:,} ({report['peak_rss_ratio_largest_to_smallest']:.2f}x; target <= 1.2x). Pipeline's own "
        f"growth over the process baseline: {small['peak_rss_mb'] - small['rss_baseline_mb']:.0f} MB and "
        f"{large['peak_rss_mb'] - large['rss_baseline_mb']:.0f} MB.")
  print(f"Throughput: {small['images_per_s']:.0f} and {large['images_per_s']:.0f} images/s delivered (64x64x3, "
        f"batch {FLAGS.batch_size}) vs {step['images_per_s']:.0f} images/s consumed by the dcgan64 step "
        f"({step['seconds_per_step']:.2f} s per step): "
        + ", ".join(f"{r:.1f}x" for r in report["pipeline_to_step_ratio"].values()) + " (target >= 3x).")
  for size, v in packed.items():
    f = results[size]
    print(f"Folder vs pack, {size:,} images: start-up (listing and opening) {f['open_s']:.2f} s vs "
          f"{v['open_s']:.2f} s; "
          f"{f['images_per_s']:.0f} vs {v['images_per_s']:.0f} images/s; peak RSS {f['peak_rss_mb']:.0f} vs "
          f"{v['peak_rss_mb']:.0f} MB (packing took {v['pack_s']:.0f} s, {v['pack_mb']:.0f} MB of shards).")
  print(f"Machine: {throughput.cpu()}, load average {load_before[0]:.1f} before and "
        f"{os.getloadavg()[0]:.1f} after (other jobs share it).")


if __name__ == "__main__":
  cli.run(main, define_flags)
