"""gan_dist/__init__.py: the process set-up that importing the package does (malloc's pad; TensorFlow's log level
and oneDNN kernels)."""

import ctypes
import json
import os
import subprocess
import sys

import pytest

import gan_dist

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Run in a fresh process: imports gan_dist (which imports no TensorFlow), then takes 40 blocks of 120 KB from the
# main arena (under glibc's 128 KiB mmap threshold) and reports how far the arena grew. glibc grows the arena by the
# request plus M_TOP_PAD: 64 MiB with gan_dist's pad, 128 KiB with glibc's default.
_ARENA_GROWTH = r"""
import ctypes, json
import gan_dist

class Mallinfo2(ctypes.Structure):
  _fields_ = [(name, ctypes.c_size_t) for name in
              ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
               "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Mallinfo2
libc.malloc.restype = ctypes.c_void_p
before = libc.mallinfo2().arena
blocks = [libc.malloc(120 << 10) for _ in range(40)]
print(json.dumps({"pad": gan_dist.MALLOC_TOP_PAD, "growth": libc.mallinfo2().arena - before}))
"""


def _glibc_with_mallinfo2() -> bool:
  try:
    return hasattr(ctypes.CDLL(None), "mallinfo2")
  except OSError:
    return False


def _arena_growth(**env) -> dict:
  full_env = {k: v for k, v in os.environ.items()
              if k not in ("GAN_DIST_MALLOC_TOP_PAD", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")}
  full_env.update(env, PYTHONPATH=REPO)
  out = subprocess.run([sys.executable, "-c", _ARENA_GROWTH], env=full_env, capture_output=True, text=True,
                       timeout=60, check=True).stdout
  return json.loads(out.splitlines()[-1])


@pytest.mark.skipif(not _glibc_with_mallinfo2(), reason="glibc >= 2.33 (mallinfo2) only")
def test_importing_the_package_makes_malloc_keep_64_mib_at_the_top_of_an_arena():
  padded = _arena_growth()
  plain = _arena_growth(GAN_DIST_MALLOC_TOP_PAD="0")
  assert padded["pad"] == 64 << 20 and plain["pad"] == 0
  # 40 x 120 KB = 4.7 MiB requested: the padded arena grew by at least the pad, the plain one by far less.
  assert padded["growth"] >= 64 << 20, padded
  assert plain["growth"] < 16 << 20, plain


@pytest.mark.skipif(not _glibc_with_mallinfo2(), reason="glibc's mallopt only")
def test_keep_freed_memory_takes_the_pad_from_the_environment_and_yields_to_glibc_own_settings():
  try:
    assert gan_dist.keep_freed_memory({}) == 64 << 20
    assert gan_dist.keep_freed_memory({"GAN_DIST_MALLOC_TOP_PAD": str(8 << 20)}) == 8 << 20
    assert gan_dist.keep_freed_memory({"GAN_DIST_MALLOC_TOP_PAD": "0"}) == 0
    assert gan_dist.keep_freed_memory({"GAN_DIST_MALLOC_TOP_PAD": "lots"}) == 0
    assert gan_dist.keep_freed_memory({"MALLOC_TOP_PAD_": "1048576"}) == 0
    assert gan_dist.keep_freed_memory({"GLIBC_TUNABLES": "glibc.malloc.top_pad=1048576"}) == 0
  finally:
    gan_dist.keep_freed_memory({})  # This process's own setting again.


@pytest.mark.parametrize("name,value", [("TF_CPP_MIN_LOG_LEVEL", "1"), ("TF_ENABLE_ONEDNN_OPTS", "1")])
def test_tensorflow_settings_are_made_before_it_loads_unless_the_user_made_them(name, value):
  script = f"import os, sys, gan_dist; print(os.environ['{name}'], 'tensorflow' in sys.modules)"
  env = {k: v for k, v in os.environ.items() if k != name}
  out = subprocess.run([sys.executable, "-c", script], env={**env, "PYTHONPATH": REPO}, capture_output=True,
                       text=True, timeout=60, check=True).stdout.split()
  assert out == [value, "False"]  # Set, and TensorFlow not loaded yet (it reads both when it loads).
  out = subprocess.run([sys.executable, "-c", script], env={**env, "PYTHONPATH": REPO, name: "0"},
                       capture_output=True, text=True, timeout=60, check=True).stdout.split()
  assert out == ["0", "False"]


@pytest.mark.parametrize("orig_argv, argv0, expected", [
    (["python3", "-m", "gan_dist.main", "--flagfile=configs/dcgan.cfg"], "-m", True),  # Locating the command.
    (["python3", "-u", "-m", "gan_dist.serve", "--workdir=W"], "-m", True),
    (["python3", "-m", "gan_dist.main"], "/repo/gan_dist/main.py", False),  # The command runs: cli.run's turn.
    (["python3", "-m", "pytest", "tests"], "-m", False),  # Another command, which may import gan_dist later.
    (["python3", "-m", "pytest", "tests"], "/usr/lib/python3/site-packages/pytest/__main__.py", False),
    (["python3", "train.py", "-m", "gan_dist.x"], "train.py", False),  # A program's own arguments.
    (["python3", "-c", "import gan_dist"], "-c", False),
    ([], "", False),
])
def test_only_a_gan_dist_command_that_python_is_locating_counts_as_starting(orig_argv, argv0, expected):
  """The SIGINT handler of a starting command (one line instead of a traceback from TensorFlow's import) must not
  replace the handler of a program or notebook that imports gan_dist."""
  assert gan_dist.is_starting_command(orig_argv, argv0) is expected
