"""Smoke tests of benchmarks/: each script runs end to end in seconds on tiny data and prints sane figures.

The figures themselves mean nothing at these sizes; what is checked is that every code path of each script still
runs on the package's API, and that the printed report has its keys and plausible values. Each script runs as the
user runs it (a subprocess from the repo root) with a hard timeout; its whole process group is killed on expiry,
so a hung child of a script (quality.py and input_pipeline.py start their own subprocesses) is not left behind.
"""

import importlib.util
import json
import math
import os
import shutil
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests import subprocs
from tests import helpers
from tests.helpers import make_idx_dir

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCHMARKS = os.path.join(REPO, "benchmarks")


def _run(script: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
  """Runs benchmarks/<script> with `args` from the repo root; kills its process group after `timeout` seconds."""
  command = [sys.executable, os.path.join("benchmarks", script), *args]
  proc = subprocess.Popen(command, cwd=REPO, env=subprocs.env(PYTHONPATH=REPO), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True)
  try:
    stdout, stderr = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)  # The script and any subprocess it started.
    stdout, stderr = proc.communicate()
    pytest.fail(f"{' '.join(command)} still running after {timeout} s (killed):\n{stderr[-3000:]}")
  assert proc.returncode == 0, f"{' '.join(command)} exited {proc.returncode}:\n{stderr[-3000:]}"
  return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def _json_lines(stdout: str) -> list:
  return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def _idx_dir(tmp_path) -> str:
  """64 MNIST-like IDX images per split, the test split different from the train split (a non-zero FCD floor)."""
  directory = make_idx_dir(str(tmp_path / "idx"), num=64, seed=0)
  other = make_idx_dir(str(tmp_path / "idx_other"), num=64, seed=1)
  for name in os.listdir(other):
    if name.startswith("t10k"):
      shutil.copy(os.path.join(other, name), os.path.join(directory, name))
  return directory


def _positive(value) -> bool:
  return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_throughput(tmp_path):
  out = tmp_path / "lines.jsonl"
  proc = _run("throughput.py", f"--data_dir={_idx_dir(tmp_path)}", "--batch_size=16", "--steps_per_loop=2",
              "--seconds=0.2", "--repeats=2", f"--out={out}", timeout=150)
  lines = _json_lines(proc.stdout)
  assert len(lines) == 1, proc.stdout
  result = lines[0]
  assert list(result) == ["config", "gan_dist_images_per_s", "reference_images_per_s", "ratio",
                          "input_pipeline_images_per_s", "input_to_step_ratio", "rounds", "env"]
  assert result["config"] == dict(arch="dcgan", batch_size=16, precision="float32", strategy="one_device",
                                  num_replicas=1, steps_per_loop=2, jit_compile=False, seconds=0.2, repeats=2)
  for key in ("gan_dist_images_per_s", "reference_images_per_s", "ratio", "input_pipeline_images_per_s",
              "input_to_step_ratio"):
    assert _positive(result[key]), (key, result)
  assert result["ratio"] == pytest.approx(result["gan_dist_images_per_s"] / result["reference_images_per_s"],
                                          rel=0.01)
  assert result["input_to_step_ratio"] == pytest.approx(
      result["input_pipeline_images_per_s"] / result["gan_dist_images_per_s"], rel=0.01)
  assert {k: len(v) for k, v in result["rounds"].items()} == {"gan_dist": 2, "reference": 2}
  assert all(_positive(v) for vs in result["rounds"].values() for v in vs)
  assert result["env"]["TF_NUM_INTRAOP_THREADS"] == "1"
  assert _json_lines(out.read_text()) == lines  # --out appends the same line.


@pytest.mark.slow
def test_input_pipeline(tmp_path):
  images = tmp_path / "images"
  # Two sizes: 8 images (below --per_folder: a view of linked files) and 32 (the whole tree of two folders).
  proc = _run("input_pipeline.py", "--sizes=8,32", "--per_folder=16", f"--dir={images}", "--seconds=0.2",
              "--step_calls=1", "--batch_size=8", "--pack", timeout=180)
  reports = _json_lines(proc.stdout)
  assert len(reports) == 1, proc.stdout
  report = reports[0]
  assert set(report) == {"sizes", "peak_rss_ratio_largest_to_smallest", "step", "pipeline_to_step_ratio", "targets",
                         "machine", "write_images_s", "packed", "pack_to_folder"}
  assert set(report["sizes"]) == set(report["packed"]) == {"8", "32"}
  # The pack holds the folder's examples: the same count, read at some rate.
  assert all(report["packed"][k]["num_examples"] == report["sizes"][k]["num_examples"] == int(k) for k in ("8", "32"))
  assert all(report["packed"][k]["images_per_s"] > 0 for k in ("8", "32"))
  for size, figures in report["sizes"].items():
    assert figures["num_examples"] == int(size)
    assert figures["bad_files"] == 0
    for key in ("images_per_s", "images", "rss_baseline_mb", "peak_rss_mb"):
      assert _positive(figures[key]), (size, key, figures)
    assert figures["peak_rss_mb"] >= figures["rss_baseline_mb"]
  small, large = report["sizes"]["8"], report["sizes"]["32"]
  assert report["peak_rss_ratio_largest_to_smallest"] == pytest.approx(large["peak_rss_mb"] / small["peak_rss_mb"],
                                                                       abs=0.001)
  assert report["step"]["arch"] == "dcgan64" and report["step"]["batch_size"] == 8 and report["step"]["steps"] == 1
  assert _positive(report["step"]["images_per_s"]) and _positive(report["step"]["seconds_per_step"])
  assert set(report["pipeline_to_step_ratio"]) == {"8", "32"}
  assert all(_positive(r) for r in report["pipeline_to_step_ratio"].values())
  assert set(report["targets"]) == {"peak_rss_ratio_at_most_1.2", "pipeline_at_least_3x_step"}
  assert report["machine"]["cpus"] == os.cpu_count()
  summary = proc.stdout[proc.stdout.index("\nPeak RSS: "):]
  assert "Throughput: " in summary and "images/s consumed by the dcgan64 step" in summary and "Machine: " in summary
  # --dir keeps the images: two folders of 16 JPEGs, and the 8-image view links into the first.
  assert sorted(os.listdir(images / "images")) == ["part00", "part01"]
  assert len(os.listdir(images / "images" / "part01")) == 16
  assert len(os.listdir(images / "views" / "8")) == 8


@pytest.mark.slow
def test_quality(tmp_path):
  out_dir = tmp_path / "out"
  proc = _run("quality.py", f"--data_dir={_idx_dir(tmp_path)}", f"--eval_cache_dir={tmp_path / 'cache'}",
              f"--out_dir={out_dir}", "--configs=configs/mlp_gan.cfg+--augment=ada,reference", "--parallel",
              "--minutes=0.001", "--every=0.001", "--num=64", "--config_flag=--batch_size=16",
              "--config_flag=--steps_per_loop=1", timeout=240)
  records = _json_lines(proc.stdout)
  name = "configs/mlp_gan.cfg+--augment=ada"  # A flagfile with a flag of its own, both trained at once.
  assert [(r["config"], bool(r.get("final"))) for r in records] == [
      (name, False), (name, True), ("reference", False), ("reference", True)]
  assert records[0]["augment_p"] == 0.0 and "augment_p" not in records[2]  # The p of ADA's first step.
  for record in records:
    assert record["step"] == 1  # One chunk of one step: past --minutes at once.
    for key in ("train_minutes", "steps_per_sec", "fcd", "fcd_floor", "kid"):
      assert math.isfinite(record[key]), (key, record)
    assert _positive(record["train_minutes"]) and _positive(record["steps_per_sec"]) and _positive(record["fcd"])
    assert record["fcd_floor"] >= 0 and 0 <= record["precision"] <= 1 and 0 <= record["recall"] <= 1
  assert all(_positive(r["wall_minutes_with_evals"]) for r in records if r.get("final"))
  results = (out_dir / "results.md").read_text()
  assert results in proc.stdout
  assert "| config | steps | training wall time | steps/s | FCD (floor) |" in results
  assert f"| `{name}` | 1 | " in results
  assert "| TF-tutorial loop (dcgan.cfg hyper-parameters) | 1 | " in results
  assert _json_lines((out_dir / "quality.jsonl").read_text()) == records
  png = (out_dir / "fcd_vs_time.png").read_bytes()
  assert png.startswith(b"\x89PNG") and len(png) > 1000
  # Each config's final samples as a grid (mlp_gan: 28x28x1, 8x8 images), and all of them side by side.
  finals = [r for r in records if r.get("final")]
  assert [os.path.basename(r["samples"]) for r in finals] == ["samples_mlp_gan_augment_ada.png",
                                                               "samples_reference.png"]
  grid = tf.io.decode_png(tf.io.read_file(finals[0]["samples"])).numpy()
  assert grid.shape == (8 * 28, 8 * 28, 1) and grid.std() > 0
  assert (out_dir / "samples.png").read_bytes().startswith(b"\x89PNG")
  assert f"Wrote {out_dir}/results.md, quality.jsonl, fcd_vs_time.png and samples.png" in proc.stdout


@pytest.mark.slow
def test_tutorial_step_trains_both_networks():
  """benchmarks/tutorial.py (no command line of its own; throughput.py and quality.py run it on dcgan)."""
  spec = importlib.util.spec_from_file_location("benchmark_tutorial", os.path.join(BENCHMARKS, "tutorial.py"))
  tutorial = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(tutorial)
  keras.utils.set_random_seed(0)
  generator = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8 * 8), keras.layers.Reshape((8, 8, 1)),
                                keras.layers.Activation("tanh")])
  discriminator = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(1)])
  before = [w.copy() for w in generator.get_weights() + discriminator.get_weights()]
  step = tutorial.make_step(generator, discriminator, batch_size=6, latent_dim=4)
  images = tf.random.uniform([6, 8, 8, 1], -1.0, 1.0, seed=1)
  gen_loss, disc_loss = step(images)
  assert np.isfinite(float(gen_loss)) and np.isfinite(float(disc_loss)) and float(disc_loss) > 0
  after = generator.get_weights() + discriminator.get_weights()
  assert all(not np.array_equal(b, a) for b, a in zip(before, after))  # Both Adam updates applied.


@pytest.mark.slow
def test_feature_check(tmp_path):
  folder = helpers.make_image_folder(str(tmp_path / "images"), num=60, bad=())  # 3 classes; 6 held out.
  proc = _run("feature_check.py", f"--data_dir={folder['root']}", "--image_shape=16,16,3", "--num=6", "--steps=2",
              f"--eval_cache_dir={tmp_path / 'cache'}", timeout=150)
  reports = _json_lines(proc.stdout)
  assert len(reports) == 1, proc.stdout
  report = reports[0]
  assert report["key"].endswith("-contrastive-v1-steps2") and report["num"] == 6 and report["cpu"]
  assert list(report["sets"]) == ["real held-out", "noise", "flat", "checkerboards", "repeated"]
  for name, found in report["sets"].items():
    assert {"fcd", "kid", "precision", "recall", "classifier_score"} <= set(found), name
    assert all(math.isfinite(v) for v in found.values()), (name, found)
  assert "label_accuracy" in report["sets"]["real held-out"]  # The folder has classes.
  assert "| set | fcd | kid | precision | recall | classifier_score | label_accuracy |" in proc.stdout


@pytest.mark.slow
def test_arch_ratio(tmp_path):
  folder = helpers.make_image_folder(str(tmp_path / "images"), num=24, bad=())
  proc = _run("arch_ratio.py", "--configs=configs/folder64.cfg,configs/faces64.cfg", f"--data_dir={folder['root']}",
              "--batch_size=4", "--steps_per_loop=1", "--seconds=0.1", "--repeats=1",
              # The script's code paths, not these architectures (tests/models/ has them): the MLP traces fastest.
              "--config_flag=--arch=mlp", "--config_flag=--image_size=28", "--config_flag=--channels=1",
              "--config_flag=--latent_dim=8", timeout=240)
  reports = _json_lines(proc.stdout)
  assert len(reports) == 1, proc.stdout
  report = reports[0]
  names = {f"{c} {s}" for c in ("folder64.cfg", "faces64.cfg") for s in ("one device", "2 replicas")}
  assert set(report["images_per_s"]) == names and all(_positive(v) for v in report["images_per_s"].values())
  ips = report["images_per_s"]
  assert report["ratio_b_to_a"]["one device"] == pytest.approx(
      ips["faces64.cfg one device"] / ips["folder64.cfg one device"], rel=0.02)
  assert report["two_replicas_to_one_device"]["faces64.cfg"] == pytest.approx(
      ips["faces64.cfg 2 replicas"] / ips["faces64.cfg one device"], rel=0.02)
  assert report["batch_size"] == {"folder64.cfg": 4, "faces64.cfg": 4} and report["cpu"]
  assert all(_positive(n) for n in report["trainable_parameters"].values())


def test_trace_ops_sums_compute_thread_events_by_op_type(tmp_path):
  spec = importlib.util.spec_from_file_location("benchmark_trace_ops", os.path.join(BENCHMARKS, "trace_ops.py"))
  trace_ops = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(trace_ops)
  space = trace_ops.xplane_pb2.XSpace()
  plane = space.planes.add(name="/host:CPU")
  plane.event_metadata[1].name = "d/conv/Conv2D:_MklNativeConv2D"
  plane.event_metadata[2].name = "g/mul:Mul"
  compute = plane.lines.add(name="tf_Compute/1", timestamp_ns=1000)
  compute.events.add(metadata_id=1, offset_ps=0, duration_ps=3 * 10**9)  # 3 ms.
  compute.events.add(metadata_id=1, offset_ps=4 * 10**9, duration_ps=10**9)
  compute.events.add(metadata_id=2, offset_ps=5 * 10**9, duration_ps=2 * 10**9)  # Ends at 7 ms.
  other = plane.lines.add(name="tf_data_iterator_get_next/1", timestamp_ns=1000)
  other.events.add(metadata_id=2, offset_ps=0, duration_ps=50 * 10**9)  # Not a compute thread: not counted.
  ms, count, span = trace_ops.op_times(space)
  assert ms == pytest.approx({"_MklNativeConv2D": 4.0, "Mul": 2.0}) and count == {"_MklNativeConv2D": 2, "Mul": 1}
  assert span == pytest.approx(7.0)
  path = tmp_path / "run" / "tensorboard" / "plugins" / "profile" / "2026_01_01"
  path.mkdir(parents=True)
  (path / "vm.xplane.pb").write_bytes(space.SerializeToString())
  report = trace_ops.table(trace_ops.op_times(trace_ops.read(str(tmp_path / "run"))),
                           (dict(ms, Mul=5.0), dict(count, Mul=2), 14.0))
  assert "7 ms -> 14 ms (2.00x)" in report and "| Mul | 2 (1) | 5 (2) | +3 |" in report
  assert report.index("| Mul |") < report.index("| _MklNativeConv2D |")  # Largest change first.
  with pytest.raises(SystemExit) as missing:  # A workdir without a trace: one line, exit 2.
    trace_ops.read(str(tmp_path / "no_trace"))
  assert missing.value.code == 2


@pytest.mark.slow
def test_malloc_pad(tmp_path):
  proc = _run("malloc_pad.py", "--config=configs/mlp_gan.cfg", f"--data_dir={_idx_dir(tmp_path)}", "--steps=4",
              "--summary_every=2", "--repeats=1", "--config_flag=--batch_size=16", timeout=150)
  reports = _json_lines(proc.stdout)
  assert len(reports) == 1, proc.stdout
  report = reports[0]
  keys = {"images_per_s", "page_faults", "system_s", "user_s", "peak_rss_mb"}
  assert set(report["median"]) == {"pad", "no_pad"} and all(set(m) == keys for m in report["median"].values())
  assert all(_positive(report["median"][s][k]) for s in ("pad", "no_pad")
             for k in ("images_per_s", "page_faults", "peak_rss_mb"))
  assert report["ratio_pad_to_no_pad"]["images_per_s"] == pytest.approx(
      report["median"]["pad"]["images_per_s"] / report["median"]["no_pad"]["images_per_s"], rel=0.02)
  assert {s: len(r) for s, r in report["runs"].items()} == {"pad": 1, "no_pad": 1}
  assert report["steps"] == 4 and report["cpu"]
