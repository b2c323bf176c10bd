"""GAN losses and penalties, per example. Nothing here reduces over the batch: only the train step does.

Every loss maps discriminator logits to per-example vectors:
  loss_fn(real_logits [B, 1], fake_logits [B, 1]) -> (d_loss [B], g_loss [B]).
Penalties take the discriminator as a function of images so that labels can be bound by the caller.
The auxiliary classifier's loss maps class logits and labels to a per-example vector too.
"""

from typing import Callable, Tuple

import tensorflow as tf

LossFn = Callable[[tf.Tensor, tf.Tensor], Tuple[tf.Tensor, tf.Tensor]]


def _flat(logits: tf.Tensor) -> tf.Tensor:
  return tf.reshape(tf.cast(logits, tf.float32), [-1])


def non_saturating(real_logits, fake_logits):
  """Goodfellow et al.'s practical loss: D is a logistic classifier, G maximises log D(G(z))."""
  real, fake = _flat(real_logits), _flat(fake_logits)
  d_loss = tf.nn.softplus(-real) + tf.nn.softplus(fake)  # -log sigmoid(real) - log(1 - sigmoid(fake))
  g_loss = tf.nn.softplus(-fake)  # -log sigmoid(fake)
  return d_loss, g_loss


def minimax(real_logits, fake_logits):
  """The original zero-sum game: G minimises log(1 - D(G(z))) (saturates early in training)."""
  real, fake = _flat(real_logits), _flat(fake_logits)
  d_loss = tf.nn.softplus(-real) + tf.nn.softplus(fake)
  g_loss = -tf.nn.softplus(fake)  # log(1 - sigmoid(fake))
  return d_loss, g_loss


def least_squares(real_logits, fake_logits):
  """LSGAN (Mao et al. 2017) with targets a=0 (fake), b=c=1 (real), on D's raw output."""
  real, fake = _flat(real_logits), _flat(fake_logits)
  d_loss = 0.5 * tf.square(real - 1.0) + 0.5 * tf.square(fake)
  g_loss = 0.5 * tf.square(fake - 1.0)
  return d_loss, g_loss


def hinge(real_logits, fake_logits):
  """Hinge loss (Lim & Ye 2017; SAGAN, BigGAN)."""
  real, fake = _flat(real_logits), _flat(fake_logits)
  d_loss = tf.nn.relu(1.0 - real) + tf.nn.relu(1.0 + fake)
  g_loss = -fake
  return d_loss, g_loss


def wasserstein(real_logits, fake_logits):
  """WGAN critic loss (Arjovsky et al. 2017); pair with --gp_weight (WGAN-GP) to keep the critic Lipschitz."""
  real, fake = _flat(real_logits), _flat(fake_logits)
  return fake - real, -fake


LOSSES = {f.__name__: f for f in (non_saturating, minimax, least_squares, hinge, wasserstein)}


# Where D's output splits "real" from "fake" under each loss: 0 for the logit of the logistic losses and the margin
# centre of hinge and wasserstein; LSGAN regresses real to 1 and fake to 0, so its midpoint is 1/2 (at 0 every
# real would count as recognised and ADA's r_t = E[sign(D(real) - threshold)] would push p to 1 for any D).
_DECISION_THRESHOLDS = {"least_squares": 0.5}


def decision_threshold(name: str) -> float:
  """The output of D under --loss=`name` between its real and fake targets (its accuracies and ADA's r_t)."""
  return _DECISION_THRESHOLDS.get(name, 0.0)


def d_output(name: str, logits: tf.Tensor) -> tf.Tensor:
  """D's output as a number between its fake (0) and real (1) target, per example: [B, 1] -> float32 [B].

  The logistic losses' (and hinge's and wasserstein's) sigmoid of the logit; LSGAN's raw output, which it
  regresses to those targets itself (a sigmoid of it would put its fake target at 0.5).
  """
  flat = _flat(logits)
  return flat if name == "least_squares" else tf.sigmoid(flat)


def get(name: str) -> LossFn:
  if name not in LOSSES:
    raise ValueError(f"Unknown --loss={name!r}; known losses: {', '.join(sorted(LOSSES))}")
  return LOSSES[name]


def _squared_grad_norm(discriminator_fn: Callable[[tf.Tensor], tf.Tensor], images: tf.Tensor) -> tf.Tensor:
  with tf.GradientTape() as tape:
    tape.watch(images)
    logits = tf.reduce_sum(tf.cast(discriminator_fn(images), tf.float32))
  grads = tf.cast(tape.gradient(logits, images), tf.float32)
  return tf.reduce_sum(tf.square(tf.reshape(grads, [tf.shape(grads)[0], -1])), axis=1)


def gradient_penalty(discriminator_fn, real: tf.Tensor, fake: tf.Tensor, alpha: tf.Tensor) -> tf.Tensor:
  """WGAN-GP (Gulrajani et al. 2017): (||grad D(x_hat)||_2 - 1)^2 on x_hat = alpha*real + (1-alpha)*fake.

  Args:
    discriminator_fn: images [B, H, W, C] -> logits [B, 1].
    real: [B, H, W, C] float32.
    fake: [B, H, W, C] float32.
    alpha: [B, 1, 1, 1] uniform in [0, 1).

  Returns:
    [B] per-example penalty (multiply by --gp_weight).
  """
  interpolates = alpha * real + (1.0 - alpha) * tf.cast(fake, real.dtype)
  norm = tf.sqrt(_squared_grad_norm(discriminator_fn, interpolates) + 1e-12)
  return tf.square(norm - 1.0)


def r1_penalty(discriminator_fn, real: tf.Tensor) -> tf.Tensor:
  """R1 (Mescheder et al. 2018): ||grad D(real)||_2^2 per example; the step adds (r1_weight / 2) times it.

  Args:
    discriminator_fn: images [B, H, W, C] -> logits [B, 1].
    real: [B, H, W, C] float32.

  Returns:
    [B] per-example squared gradient norm.
  """
  return _squared_grad_norm(discriminator_fn, real)


def class_cross_entropy(labels: tf.Tensor, class_logits: tf.Tensor) -> tf.Tensor:
  """AC-GAN's auxiliary classifier loss: cross-entropy of int labels [B] under class logits [B, K] -> [B].

  A label of -1 (an image at the root of a class folder tree: no class) scores 0: there is nothing to classify.
  """
  labels = tf.cast(labels, tf.int32)
  ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.maximum(labels, 0),
                                                      logits=tf.cast(class_logits, tf.float32))
  return tf.where(labels >= 0, ce, tf.zeros_like(ce))


MODE_SEEKING_EPSILON = 1e-5  # MSGAN's: bounds the term where two images coincide.


def mode_seeking(images: tf.Tensor, noise: tf.Tensor) -> tf.Tensor:
  """MSGAN's mode-seeking term (Mao et al. 2019) for G, per example, on pairs of rows (2k, 2k+1) of one label.

  For pair k: 1 / (mean|x_2k - x_2k+1| / mean|z_2k - z_2k+1| + 1e-5), the inverse of how far apart two noises put
  their images; both examples of the pair carry it, so the batch mean is the mean over pairs. It is large where G
  ignores its noise (collapse within a class) and small where it does not.

  Args:
    images: G's images [B, H, W, C] (B even; rows 2k and 2k+1 made for one label).
    noise: their noise [B, latent_dim].

  Returns:
    float32 [B].
  """
  def pair_distance(x):
    x = tf.reshape(tf.cast(x, tf.float32), [-1, 2, tf.reduce_prod(tf.shape(x)[1:])])
    return tf.reduce_mean(tf.abs(x[:, 0] - x[:, 1]), axis=-1)  # [B / 2]

  term = 1.0 / (pair_distance(images) / pair_distance(noise) + MODE_SEEKING_EPSILON)
  return tf.repeat(term, 2)
