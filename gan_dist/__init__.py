"""gan_dist: distributed GAN training on tf.distribute (one device, many GPUs, many machines)."""

import ctypes
import os

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
