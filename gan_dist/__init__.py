"""gan_dist: distributed GAN training on tf.distribute (one device, many GPUs, many machines)."""

import os

# TensorFlow's C++ log level, once for every entry point and tool: before any module of the package imports
# TensorFlow (a package's __init__ runs first). INFO lines of every op placement and oneDNN note are noise; a user's
# own TF_CPP_MIN_LOG_LEVEL wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

__version__ = "0.1.0"
