"""gan_dist: distributed GAN training on tf.distribute (one device, many GPUs, many machines)."""

__version__ = "0.1.0"
