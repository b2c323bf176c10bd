"""Test setup: every test process sees 2 logical CPUs, so MirroredStrategy tests run 2 replicas without a GPU.

The CPU must be split before TensorFlow initialises its devices, hence here, before collection (pytest_configure).
TensorFlow is imported inside the hooks and fixtures, not at the top: pytest-xdist's controlling process loads this
file too, and runs no test.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Two or three test processes (pytest -n 2 or -n 3, README) on two cores: one intra-op thread each, inherited by the
# processes they start, rather than pools of one thread per core contending (the fast tier took 3:11 with them,
# 2:58 without, 2-core AVX2 AMD EPYC, 2026-12-03). Inter-op threads stay: 2 replicas' collectives must run at the
# same time.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
# NumPy's OpenBLAS likewise (set before numpy loads): once TensorFlow's thread pools run in a process, its 2 threads
# cost 3-6x the CPU of one for the same products (the KID of 5 sample sets: 5.1 s of CPU against 0.77 s; the
# contrastive test 28.3 s against 23.9 s, AMD EPYC 25/17 AVX-512, 2026-12-05).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# Nothing in the suite may reach the network: a TFDS dataset that is not prepared is an error at once (without this, a
# test of that error tried a download: ~3.5 minutes of TFDS's retries offline, a real download online). Inherited by
# the processes the tests start.
os.environ["GAN_DIST_OFFLINE"] = "1"
# On a GPU host the tests (and the processes they start, which inherit this) run on the CPU: a test that means to use
# a GPU says so (GAN_DIST_TEST_GPU=1 keeps the host's setting).
if os.environ.get("GAN_DIST_TEST_GPU") != "1":
  os.environ["CUDA_VISIBLE_DEVICES"] = ""

import pytest  # pylint: disable=g-import-not-at-top

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST_DIR = os.path.join(REPO, "..", "shared", "data", "mnist")


def _is_xdist_controller(config) -> bool:
  """pytest-xdist's controlling process (-n N): it only hands tests out to its workers, which import and run them."""
  return bool(getattr(config.option, "numprocesses", None)) and not hasattr(config, "workerinput")


def pytest_configure(config):
  """Splits the CPU in each process that runs tests (not in xdist's controller: TensorFlow's ~7 s import there bought
  nothing), before any test module is imported and TensorFlow initialises its devices."""
  if _is_xdist_controller(config):
    return
  # gan_dist first: its process set-up precedes TensorFlow's loading.
  from gan_dist import strategy as strategy_lib  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  strategy_lib.split_cpu(2)
  tf.get_logger().setLevel("ERROR")



def _cpu_description() -> str:
  """`lscpu`'s model name, family/model and vector flags of this machine, from /proc/cpuinfo (Linux; else "")."""
  try:
    with open("/proc/cpuinfo") as f:
      fields = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines() if ":" in line)
  except OSError:
    return ""
  fields = {k.strip(): v.strip() for k, v in fields.items()}
  flags = fields.get("flags", "").split()
  vector = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags] or ["no avx2"]
  return (f"{fields.get('model name', '?')}, family {fields.get('cpu family', '?')} model {fields.get('model', '?')}, "
          f"{os.cpu_count()} CPUs, {' '.join(vector)}")


def pytest_terminal_summary(terminalreporter):
  """Names the CPU under the suite's time: the same suite takes 1.25-1.46x longer on an AVX2-only machine than on an
  AVX-512 one, so a time means nothing without it."""
  cpu = _cpu_description()
  if cpu:
    terminalreporter.write_line(f"CPU: {cpu}")

@pytest.fixture(scope="session")
def mnist_dir():
  """The real MNIST IDX files beside the repo (../shared/data/mnist); skips if absent."""
  if not os.path.exists(os.path.join(MNIST_DIR, "train-images-idx3-ubyte.gz")):
    pytest.skip(f"MNIST not found at {MNIST_DIR}")
  return MNIST_DIR


_MIRRORED2 = []


@pytest.fixture(scope="session")
def mirrored2():
  """MirroredStrategy over the 2 logical CPUs, one per test process.

  Two MirroredStrategy objects over the same devices in one process hand out the same collective instance keys, and
  TensorFlow then aborts every later collective ("shape mismatch in the collective instance"). Share one.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (see the module docstring)
  if not _MIRRORED2:
    _MIRRORED2.append(tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")][:2]))
  return _MIRRORED2[0]


@pytest.fixture(scope="session")
def one_device():
  """OneDeviceStrategy on the first logical CPU: for tests whose point is not the number of replicas (tracing one
  replica takes half the time of two)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (see the module docstring)
  return tf.distribute.OneDeviceStrategy(tf.config.list_logical_devices("CPU")[0].name)


# The longest files first (seconds of one test process in a full run on a 2-core AVX2 AMD EPYC, 2026-12-04: 152,
# 152, 110, 81, 64, 63, 63, ...): with two or three test processes (pytest-xdist, --dist=loadfile) a long file
# started last would run alone at the end while the others idle. pyproject.toml passes --no-loadscope-reorder, without
# which xdist would hand out the files by their number of tests instead. Paths relative to tests/.
_LONGEST_FIRST = ("test_configs.py", "benchmarks/test_smoke.py", "models/test_resnet.py", "test_multiworker.py",
                  "test_train_step.py", "test_augment.py", "test_peer_failure.py", "test_data_train.py",
                  "test_crash_safety.py", "test_main.py", "eval/test_evaluator.py", "eval/test_contrastive.py",
                  "test_jit_compile.py", "test_checkpoint.py", "test_train.py", "test_evaluate.py",
                  "test_preemption.py", "test_exporter.py", "launch/test_local_sh.py", "test_data_folder.py",
                  "test_sample.py", "serve/test_app.py", "models/test_custom_arch.py", "eval/test_classifier.py")
_TESTS = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def op_determinism():
  """Turns op determinism (which --deterministic turns on for the process, with no public way back) off again
  after the test, so that the rest of the test process runs as it would have."""
  from tensorflow.python.framework import config as tf_config  # pylint: disable=g-import-not-at-top
  was = tf_config.is_op_determinism_enabled()
  yield
  if not was:
    tf_config.disable_op_determinism()


def pytest_collection_modifyitems(items):
  def rank(item):
    name = os.path.relpath(str(item.fspath), _TESTS)
    return _LONGEST_FIRST.index(name) if name in _LONGEST_FIRST else len(_LONGEST_FIRST)
  items.sort(key=rank)  # Stable: the order within a file and among the other files is kept.


_CLUSTER_ENV = ("TF_CONFIG", "SLURM_STEP_ID", "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "SLURM_PROCID")


@pytest.fixture(autouse=True)
def no_leaked_cluster_environment():
  """Fails the test that leaves a cluster description in os.environ: every later in-process run in that test process
  would then see itself as one of several workers and refuse to start (a failure far from its cause)."""
  before = {k: os.environ.get(k) for k in _CLUSTER_ENV}
  yield
  after = {k: os.environ.get(k) for k in _CLUSTER_ENV}
  assert after == before, f"the test changed the cluster environment: {before} -> {after}"


@pytest.fixture(autouse=True)
def no_leaked_absl_log_level():
  """Fails the test that leaves the absl logger at another level (TensorFlow's SavedModel writer pinned it at WARNING):
  a later test of that process that captures absl's INFO lines would then capture nothing, and fail only in some
  orders of the tests."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  before = logging.get_absl_logger().level
  yield
  after = logging.get_absl_logger().level
  assert after == before, f"the test changed the absl logger's level: {before} -> {after}"
