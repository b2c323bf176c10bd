"""Smoke tests of benchmarks/: each script runs end to end in seconds on tiny data and prints sane figures.

The figures themselves mean nothing at these sizes; what is checked is that every code path of each script still
runs on the package's API, and that the printed report has its keys and plausible values.

Each script's main(argv) runs in this test process, on its command line's flags (parsed as the script parses them,
into a FlagValues of its own): a TensorFlow start costs ~7 s of CPU, more than most of these runs. What a script
measures in processes of its own still runs in real subprocesses, which the script starts as it does for users:
quality.py's configs (one process each), input_pipeline.py's fresh process per size (its peak RSS) and its step,
malloc_pad.py's training runs (their page faults and RSS). They get the suite's subprocess environment
(tests/subprocs.py) and a watchdog that kills them, failing the test, if they hang. The process-wide state of this
test process is left as it was: arch_ratio.py is given this process's strategies (the CPU is already split, and a
second MirroredStrategy would clash with tests' `mirrored2`), absl's verbosity is restored, and none of these runs
turns op determinism on.
"""

import contextlib
import importlib
import importlib.util
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading

from absl import flags
from absl import logging
import keras
import numpy as np
import pytest
import tensorflow as tf

from gan_dist import cli
from tests import subprocs
from tests import helpers
from tests.helpers import make_idx_dir

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCHMARKS = os.path.join(REPO, "benchmarks")


def _descendants(pid: int) -> list:
  """Pids of every live process below `pid` (children, their children, ...)."""
  children = {}
  for entry in os.listdir("/proc"):
    if entry.isdigit():
      try:
        with open(f"/proc/{entry}/stat") as f:
          state, parent = f.read().rsplit(")", 1)[1].split()[:2]
      except (OSError, IndexError, ValueError):
        continue
      if state != "Z":
        children.setdefault(int(parent), []).append(int(entry))
  found, todo = [], [pid]
  while todo:
    for child in children.get(todo.pop(), ()):
      found.append(child)
      todo.append(child)
  return found


@contextlib.contextmanager
def _watchdog(what: str, timeout: float):
  """Kills every process started under this block (and all below them) after `timeout` s, and fails the test.

  The scripts wait for their subprocesses without a timeout; killed, a subprocess makes its script raise.
  """
  before = set(_descendants(os.getpid()))
  fired = threading.Event()

  def expire():
    fired.set()
    for pid in _descendants(os.getpid()):
      if pid not in before:
        try:
          os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
          pass

  timer = threading.Timer(timeout, expire)
  timer.daemon = True
  timer.start()
  try:
    yield
  except BaseException:  # pylint: disable=broad-except  (SystemExit too: malloc_pad.py exits on a failed run)
    if fired.is_set():
      pytest.fail(f"{what}: its subprocesses still running after {timeout} s (killed)")
    raise
  finally:
    timer.cancel()
  if fired.is_set():
    pytest.fail(f"{what}: its subprocesses still running after {timeout} s (killed)")


def _main(monkeypatch, capsys, script: str, *args: str, timeout: float, gan_dist_flags: bool = False,
          **kwargs) -> str:
  """Runs `python3 benchmarks/<script>.py ARGS`'s main(argv) in this process; returns what it printed.

  Args:
    monkeypatch, capsys: the test's fixtures.
    script: the module's name.
    *args: its command line.
    timeout: seconds its subprocesses may take (see `_watchdog`).
    gan_dist_flags: the script runs through cli.run (every gan_dist flag beside its own, parsed by cli.parse_flags)
      rather than absl's app.run.
    **kwargs: passed to main.
  """
  # TensorFlow reads TF_NUM_*_THREADS when it initialises: it has, before they are set below for the subprocesses.
  tf.config.list_logical_devices("CPU")
  # The environment of the subprocesses the script starts: the suite's (tests/subprocs.py), with the repo importable.
  for key, value in {**subprocs.BASE_ENV, "PYTHONPATH": REPO}.items():
    monkeypatch.setenv(key, value)
  monkeypatch.delenv("TF_CONFIG", raising=False)
  monkeypatch.syspath_prepend(BENCHMARKS)  # The scripts import throughput.py and tutorial.py from beside them.
  module = importlib.import_module(script)
  fv = flags.FlagValues()
  if gan_dist_flags:
    cli.define_config_flags(fv)
  module.define_flags(fv)
  argv = [os.path.join(BENCHMARKS, f"{script}.py"), *args]
  if gan_dist_flags:
    cli.parse_flags(argv, fv)
    monkeypatch.setattr(cli, "FLAGS", fv)
  else:
    fv(argv)
  monkeypatch.setattr(module, "FLAGS", fv)
  # The absl logger's own level, not get_verbosity() (its effective level): restoring that would pin the logger at
  # WARNING where it was unset, and caplog.at_level(INFO) in later tests of this process would capture nothing.
  absl_logger = logging.get_absl_logger()
  level = absl_logger.level
  try:
    with _watchdog(f"benchmarks/{script}.py", timeout):
      assert module.main(argv, **kwargs) in (None, 0)
  finally:
    absl_logger.setLevel(level)
  return capsys.readouterr().out


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
def test_throughput(tmp_path, monkeypatch, capsys):
  out = tmp_path / "lines.jsonl"
  # The script's code paths, not its default dcgan: both steps (gan_dist's and the tutorial's) trace fastest on the MLP.
  # Rounds of 0.05 s still call each step several times (timed() calls at least once); longer ones only cost CPU.
  stdout = _main(monkeypatch, capsys, "throughput", f"--data_dir={_idx_dir(tmp_path)}", "--arch=mlp", "--batch_size=16",
                 "--steps_per_loop=2", "--seconds=0.05", "--repeats=2", f"--out={out}", timeout=150,
                 gan_dist_flags=True)
  lines = _json_lines(stdout)
  assert len(lines) == 1, stdout
  result = lines[0]
  assert list(result) == ["config", "gan_dist_images_per_s", "reference_images_per_s", "ratio",
                          "input_pipeline_images_per_s", "input_to_step_ratio", "rounds", "env"]
  assert result["config"] == dict(arch="mlp", batch_size=16, precision="float32", strategy="one_device",
                                  num_replicas=1, steps_per_loop=2, jit_compile=False, seconds=0.05, repeats=2)
  for key in ("gan_dist_images_per_s", "reference_images_per_s", "ratio", "input_pipeline_images_per_s",
              "input_to_step_ratio"):
    assert _positive(result[key]), (key, result)
  assert result["ratio"] == pytest.approx(result["gan_dist_images_per_s"] / result["reference_images_per_s"],
                                          rel=0.01)
  assert result["input_to_step_ratio"] == pytest.approx(
      result["input_pipeline_images_per_s"] / result["gan_dist_images_per_s"], rel=0.01)
  assert {k: len(v) for k, v in result["rounds"].items()} == {"gan_dist": 2, "reference": 2}
  assert all(_positive(v) for vs in result["rounds"].values() for v in vs)
  assert result["env"]["TF_NUM_INTRAOP_THREADS"] == "1"  # The thread settings of its environment (subprocs.env).
  assert _json_lines(out.read_text()) == lines  # --out appends the same line.


@pytest.mark.slow
def test_input_pipeline(tmp_path, monkeypatch, capsys):
  images = tmp_path / "images"
  # Two sizes: 8 images (below --per_folder: a view of linked files) and 32 (the whole tree of two folders). Each
  # size's folder and pack are drained in fresh subprocesses (their peak RSS), the step in another: 5 in all.
  stdout = _main(monkeypatch, capsys, "input_pipeline", "--sizes=8,32", "--per_folder=16", f"--dir={images}",
                 "--seconds=0.05", "--step_calls=1", "--batch_size=8", "--pack", timeout=180, gan_dist_flags=True)
  reports = _json_lines(stdout)
  assert len(reports) == 1, stdout
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
  assert report["machine"]["cpus"] == os.cpu_count() and " cores" in report["machine"]["cpu"]
  summary = stdout[stdout.index("\nPeak RSS: "):]
  assert "Throughput: " in summary and "images/s consumed by the dcgan64 step" in summary and "Machine: " in summary
  # --dir keeps the images: two folders of 16 JPEGs, and the 8-image view links into the first.
  assert sorted(os.listdir(images / "images")) == ["part00", "part01"]
  assert len(os.listdir(images / "images" / "part01")) == 16
  assert len(os.listdir(images / "views" / "8")) == 8


@pytest.mark.slow
def test_quality(tmp_path, monkeypatch, capsys):
  out_dir = tmp_path / "out"
  # Each config trains in a subprocess of its own, as for users (here both at once). 16 samples per evaluation:
  # KID's 100 subsets of 64 cost more CPU than the step.
  stdout = _main(monkeypatch, capsys, "quality", f"--data_dir={_idx_dir(tmp_path)}",
                 f"--eval_cache_dir={tmp_path / 'cache'}", f"--out_dir={out_dir}",
                 "--configs=configs/mlp_gan.cfg+--augment=ada,reference", "--parallel", "--minutes=0.001",
                 "--every=0.001", "--num=16", "--config_flag=--batch_size=16", "--config_flag=--steps_per_loop=1",
                 "--truncations=0.5", timeout=240, gan_dist_flags=True)
  records = _json_lines(stdout)
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
    # Also scored on noise truncated to [-0.5, 0.5]: other samples, other figures.
    truncated = record["truncated"]["0.5"]
    assert set(truncated) == {"fcd", "precision", "recall"} and _positive(truncated["fcd"])
    assert truncated["fcd"] != record["fcd"]
  assert all(_positive(r["wall_minutes_with_evals"]) for r in records if r.get("final"))
  results = (out_dir / "results.md").read_text()
  assert results in stdout and "Measured on " in results and " cores." in results
  assert "| config | steps | training wall time | steps/s | FCD (floor) |" in results
  assert f"| `{name}` | 1 | " in results
  assert "| TF-tutorial loop (dcgan.cfg hyper-parameters) | 1 | " in results
  assert results.count(" [T=0.5: ") == 2  # One evaluation of each config in the time table.
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
  assert f"Wrote {out_dir}/results.md, quality.jsonl, fcd_vs_time.png and samples.png" in stdout


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
def test_feature_check(tmp_path, monkeypatch, capsys):
  folder = helpers.make_image_folder(str(tmp_path / "images"), num=60, bad=())  # 3 classes; 6 held out.
  stdout = _main(monkeypatch, capsys, "feature_check", f"--data_dir={folder['root']}", "--image_shape=16,16,3",
                 "--num=6", "--steps=2", f"--eval_cache_dir={tmp_path / 'cache'}", timeout=150)
  reports = _json_lines(stdout)
  assert len(reports) == 1, stdout
  report = reports[0]
  assert report["key"].endswith("-contrastive-v1-steps2") and report["num"] == 6 and report["cpu"]
  assert list(report["sets"]) == ["real held-out", "noise", "flat", "checkerboards", "repeated"]
  for name, found in report["sets"].items():
    assert {"fcd", "kid", "precision", "recall", "classifier_score"} <= set(found), name
    assert all(math.isfinite(v) for v in found.values()), (name, found)
  assert "label_accuracy" in report["sets"]["real held-out"]  # The folder has classes.
  assert "| set | fcd | kid | precision | recall | classifier_score | label_accuracy |" in stdout


@pytest.mark.slow
def test_arch_ratio(tmp_path, monkeypatch, capsys, one_device, mirrored2):
  folder = helpers.make_image_folder(str(tmp_path / "images"), num=24, bad=())
  # This process's strategies: /cpu:0 and the 2 logical CPUs that conftest.py split, as the script makes them.
  stdout = _main(monkeypatch, capsys, "arch_ratio", "--configs=configs/folder64.cfg,configs/faces64.cfg",
                 f"--data_dir={folder['root']}", "--batch_size=4", "--steps_per_loop=1", "--seconds=0.02",
                 "--repeats=1",
                 # The script's code paths, not these architectures (tests/models/ has them): the MLP traces fastest,
                 # and fastest without synchronised BatchNorm (its all-reduces cost a quarter of the tracing).
                 "--config_flag=--arch=mlp", "--config_flag=--image_size=28", "--config_flag=--channels=1",
                 "--config_flag=--latent_dim=8", "--config_flag=--nosync_batchnorm", timeout=240,
                 strategies=(one_device, mirrored2))
  reports = _json_lines(stdout)
  assert len(reports) == 1, stdout
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


def test_trace_ops_and_gpu_check_print_their_usage_on_help(capsys):
  spec = importlib.util.spec_from_file_location("benchmark_trace_ops", os.path.join(BENCHMARKS, "trace_ops.py"))
  trace_ops = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(trace_ops)
  assert trace_ops.main(["--help"]) is None
  assert "benchmarks/trace_ops.py /tmp/prof1 /tmp/prof2" in capsys.readouterr().out
  script = os.path.join(BENCHMARKS, "gpu_check.sh")
  shown = subprocess.run(["bash", script, "--help"], capture_output=True, text=True, timeout=30, check=False)
  assert shown.returncode == 0 and "bash benchmarks/gpu_check.sh MNIST_DIR FOLDER128 OUT_DIR [PARTS]" in shown.stdout
  missing = subprocess.run(["bash", script, "only_one"], capture_output=True, text=True, timeout=30, check=False)
  assert missing.returncode == 2 and "MNIST_DIR FOLDER128 OUT_DIR" in missing.stdout  # Not bash's unbound $2.


@pytest.mark.slow
def test_malloc_pad(tmp_path, monkeypatch, capsys):
  # Its two training runs (with and without the pad) are fresh `python -m gan_dist.main` processes, as for users.
  stdout = _main(monkeypatch, capsys, "malloc_pad", "--config=configs/mlp_gan.cfg", f"--data_dir={_idx_dir(tmp_path)}",
                 "--steps=4", "--summary_every=2", "--repeats=1", "--config_flag=--batch_size=16", timeout=150)
  reports = _json_lines(stdout)
  assert len(reports) == 1, stdout
  report = reports[0]
  keys = {"images_per_s", "page_faults", "system_s", "user_s", "peak_rss_mb"}
  assert set(report["median"]) == {"pad", "no_pad"} and all(set(m) == keys for m in report["median"].values())
  assert all(_positive(report["median"][s][k]) for s in ("pad", "no_pad")
             for k in ("images_per_s", "page_faults", "peak_rss_mb"))
  assert report["ratio_pad_to_no_pad"]["images_per_s"] == pytest.approx(
      report["median"]["pad"]["images_per_s"] / report["median"]["no_pad"]["images_per_s"], rel=0.02)
  assert {s: len(r) for s, r in report["runs"].items()} == {"pad": 1, "no_pad": 1}
  assert report["steps"] == 4 and report["cpu"]


@pytest.mark.slow
def test_gpu_check_trains_the_main_job_and_reports_its_images_per_s(tmp_path):
  # The dcgan part of the GPU script, as a user runs it (bash, gan_dist.main in a fresh process), on a CPU: the
  # script's plumbing (EXTRA's flags win over the config's, the log parsed into one JSON line, no GPU memory without
  # a GPU) is what can break here.
  data, out = _idx_dir(tmp_path), tmp_path / "out"
  environ = subprocs.env(tmp_path, STEPS=2, EVERY=1, EXTRA="--batch_size=16", PYTHONPATH=REPO,
                         PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
  result = subprocess.run(["bash", os.path.join(BENCHMARKS, "gpu_check.sh"), data, data, str(out), "dcgan"],
                          cwd=REPO, env=environ, capture_output=True, text=True, timeout=150, check=False)
  assert result.returncode == 0, result.stdout + result.stderr
  lines = _json_lines((out / "gpu_check.jsonl").read_text())
  assert len(lines) == 1, result.stdout
  line = lines[0]
  assert (line["part"], line["rc"], line["peak_gpu_gib"]) == ("dcgan", 0, None), line
  assert len(line["images_per_s_windows"]) == 2 and all(_positive(v) for v in line["images_per_s_windows"])
  assert line["images_per_s_median_after_first"] == line["images_per_s_windows"][1]
  workdir = out / "work_dcgan"
  assert {"checkpoints", "samples", "tensorboard", "flags.txt"} <= set(os.listdir(workdir))
  resolved = (workdir / "flags.txt").read_text().splitlines()
  assert "--arch=dcgan" in resolved and "--batch_size=16" in resolved and "--train_steps=2" in resolved


def test_config_entries_name_the_repository_s_configs_from_any_directory(tmp_path, monkeypatch):
  """`python3 benchmarks/arch_ratio.py --configs=configs/...` run outside the repository's root read its configs
  (it failed with "Unable to open flagfile"); a relative flagfile that exists where the command runs stays it."""
  monkeypatch.syspath_prepend(BENCHMARKS)
  throughput = importlib.import_module("throughput")
  monkeypatch.chdir(tmp_path)
  assert throughput.config_args("configs/small64.cfg+--augment=none") == [
      f"--flagfile={os.path.join(REPO, 'configs', 'small64.cfg')}", "--augment=none"]
  (tmp_path / "configs").mkdir()
  (tmp_path / "configs" / "small64.cfg").write_text("--arch=mlp\n")
  assert throughput.config_args("configs/small64.cfg") == ["--flagfile=configs/small64.cfg"]
