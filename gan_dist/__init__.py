"""gan_dist: distributed GAN training on tf.distribute (one device, many GPUs, many machines)."""

import ctypes
import os
import signal
import sys

# TensorFlow's C++ log level and kernels, once for every entry point and tool: before any module of the package imports
# TensorFlow (a package's __init__ runs first). INFO lines of every op placement and oneDNN note are noise; a user's
# own TF_CPP_MIN_LOG_LEVEL wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
# TensorFlow turns its oneDNN kernels on by default only on some x86 CPUs (on the AVX-512 Xeons seen here, not on a
# 2-core AMD EPYC with AVX2 only). On that EPYC they gave 1.3-1.4x the images/s of configs/cdcgan_quick.cfg (300 steps,
# two pairs of fresh runs alternating: 347 and 360 against 276 and 219 images/s after tracing). Float results differ
# from the Eigen kernels' in the last bits, as they differ between CPUs anyway; a user's own value wins.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"

# glibc's M_TOP_PAD (malloc.h): how many bytes an arena keeps at its top when it shrinks.
_M_TOP_PAD = -2
MALLOC_TOP_PAD_DEFAULT = 64 << 20


def keep_freed_memory(env=os.environ) -> int:
  """Makes glibc's malloc keep 64 MiB of freed memory per arena instead of handing it back to the kernel.

  TensorFlow frees a step's tensors and allocates them again the next step. With glibc's defaults each arena of its
  threads gives the freed top back to the kernel (trimming it, or unmapping a whole emptied heap), so the next step
  takes every page again through a page fault. Measured on a 2-core AMD EPYC VM (AVX2): 81 million page faults and
  283 s of system time in the 5-minute quick start; benchmarks/malloc_pad.py (configs/cdcgan_quick.cfg, medians of
  alternating runs): 1.88x the images/s and 0.009x the page faults with the 64 MiB pad, 1.09x the peak RSS
  (faces64_cond.cfg, one run each: 1.27x the images/s). It changes no result: only where freed memory waits.

  Runs once, when the package is imported (before TensorFlow allocates). GAN_DIST_MALLOC_TOP_PAD=BYTES chooses the
  pad, 0 leaves malloc as it was; glibc's own MALLOC_TOP_PAD_ or a GLIBC_TUNABLES top_pad wins. A C library without
  mallopt (macOS, musl's stub) is left alone.

  Returns:
    The pad set, in bytes; 0 when malloc was left as it was.
  """
  if "MALLOC_TOP_PAD_" in env or "glibc.malloc.top_pad" in env.get("GLIBC_TUNABLES", ""):
    return 0
  try:
    pad = int(env.get("GAN_DIST_MALLOC_TOP_PAD", MALLOC_TOP_PAD_DEFAULT))
  except ValueError:
    return 0
  if pad <= 0:
    return 0
  try:
    mallopt = ctypes.CDLL(None).mallopt
  except (OSError, AttributeError):
    return 0
  mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
  return pad if mallopt(_M_TOP_PAD, min(pad, 2**31 - 1)) == 1 else 0


MALLOC_TOP_PAD = keep_freed_memory()


def stop_while_starting(signum, frame) -> None:
  """SIGINT before a command's `cli.run`: one line, then death by SIGINT (130 in a shell), as `cli.run` ends a run
  stopped at once."""
  del signum, frame
  sys.stderr.write("error: interrupted while starting (importing TensorFlow): stopped, nothing written\n")
  sys.stderr.flush()
  signal.signal(signal.SIGINT, signal.SIG_DFL)
  os.kill(os.getpid(), signal.SIGINT)


def is_starting_command(orig_argv=None, argv0=None) -> bool:
  """Whether this import is Python locating a `python -m gan_dist.<tool>` command (sys.argv[0] is "-m" until runpy
  found the module; a program that imports gan_dist sees its own argv[0])."""
  orig_argv = getattr(sys, "orig_argv", []) if orig_argv is None else orig_argv
  argv0 = (sys.argv[:1] or [""])[0] if argv0 is None else argv0
  if argv0 != "-m" or "-m" not in orig_argv[:-1]:
    return False
  return orig_argv[orig_argv.index("-m") + 1].split(".")[0] == "gan_dist"


# A Ctrl-C while a command imports TensorFlow (5-10 s) was Python's KeyboardInterrupt: a traceback from deep inside
# TensorFlow's import. `cli.run` puts Python's own handler back once the command runs. Programs that import gan_dist
# (a notebook, a test) keep theirs.
if is_starting_command() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
  signal.signal(signal.SIGINT, stop_while_starting)
