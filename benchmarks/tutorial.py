"""The TF DCGAN tutorial's train step (tensorflow.org/tutorials/generative/dcgan), the reference of the benchmarks.

`throughput.py` times it against gan_dist's step on a constant batch; `quality.py` trains it on the tutorial's
input pipeline and measures its samples. Written once here so that both measure the same step.
"""

import keras
import tensorflow as tf


def make_step(generator: keras.Model, discriminator: keras.Model, batch_size: int, latent_dim: int,
              g_lr: float = 1e-4, d_lr: float = 1e-4):
  """The tutorial's step: a plain @tf.function on one device, two tapes, BCE from logits, two Adam updates.

  Args:
    generator: noise [batch_size, latent_dim] -> images [batch_size, H, W, C] in [-1, 1].
    discriminator: images -> logits [batch_size, 1].
    batch_size, latent_dim: the noise drawn each step.
    g_lr, d_lr: the two Adam learning rates (the tutorial's 1e-4).

  Returns:
    tf.function (real images float32 [batch_size, H, W, C] in [-1, 1]) -> (gen_loss, disc_loss), scalars.
  """
  cross_entropy = keras.losses.BinaryCrossentropy(from_logits=True)  # reduce_mean over the batch.
  generator_optimizer = keras.optimizers.Adam(g_lr)
  discriminator_optimizer = keras.optimizers.Adam(d_lr)

  @tf.function
  def train_step(images):
    noise = tf.random.normal([batch_size, latent_dim])
    with tf.GradientTape() as gen_tape, tf.GradientTape() as disc_tape:
      generated_images = generator(noise, training=True)
      real_output = discriminator(images, training=True)
      fake_output = discriminator(generated_images, training=True)
      gen_loss = cross_entropy(tf.ones_like(fake_output), fake_output)
      disc_loss = (cross_entropy(tf.ones_like(real_output), real_output)
                   + cross_entropy(tf.zeros_like(fake_output), fake_output))
    gradients_of_generator = gen_tape.gradient(gen_loss, generator.trainable_variables)
    gradients_of_discriminator = disc_tape.gradient(disc_loss, discriminator.trainable_variables)
    generator_optimizer.apply_gradients(zip(gradients_of_generator, generator.trainable_variables))
    discriminator_optimizer.apply_gradients(zip(gradients_of_discriminator, discriminator.trainable_variables))
    return gen_loss, disc_loss

  return train_step
