"""A user's own package of GAN architectures (an example: gan_dist imports it by its dotted path)."""
