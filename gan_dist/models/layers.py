"""Layers shared by the architectures, where Keras' own do the wrong thing under tf.distribute, and the layers of the
SNGAN/SAGAN/BigGAN recipe (spectral normalisation, self-attention, conditional BatchNorm).

The recipe's layers have an `export_call(inputs)` that builds their inference-mode computation from Keras' own
layer classes in float32 (what `inference.float32_copy` puts in an export, which then loads without gan_dist).
"""

import keras
import numpy as np
import tensorflow as tf


def replica_seed(seed: tf.Tensor) -> tf.Tensor:
  """Folds the global replica id into a stateless seed so that every replica draws different numbers.

  Args:
    seed: int tensor of shape [2], identical on every replica (e.g. from a mirrored SeedGenerator).

  Returns:
    int64 tensor of shape [2], different on every replica of a multi-replica step.
  """
  seed = tf.cast(seed, tf.int64)
  ctx = tf.distribute.get_replica_context()
  if ctx is None or ctx.num_replicas_in_sync == 1:
    return seed
  replica_id = tf.cast(ctx.replica_id_in_sync_group, tf.int64)
  return tf.random.experimental.stateless_fold_in(seed, replica_id)


class Dropout(keras.layers.Dropout):
  """Dropout whose mask differs between replicas.

  Keras 3 draws the mask from a SeedGenerator whose state is a mirrored variable, so under MirroredStrategy every
  replica would drop the same units for its slice of the batch. Folding the replica id into the seed restores
  independent masks, as on one device. The state still advances identically on every replica, so it stays
  mirrored and checkpointable (see `seed_states`).
  """

  def call(self, inputs, training=False):
    if not training or self.rate <= 0:
      return inputs
    seed = replica_seed(self.seed_generator.next())
    return tf.nn.experimental.stateless_dropout(inputs, rate=self.rate, seed=seed, noise_shape=self.noise_shape)


class UpSampling2D(keras.layers.UpSampling2D):
  """Keras' UpSampling2D; nearest-neighbour upsampling (channels last) as one ResizeNearestNeighbor op.

  The same values bit for bit (an integer factor with half-pixel centres repeats each pixel) and the same gradients
  up to the order of summing a pixel's copies, where Keras repeats rows and columns with about 45 ops per layer,
  forward and backward: 6% of the ResNet recipe's train step graph, traced and optimised at every start. An
  export's float32 copy holds Keras' own class.
  """

  def call(self, inputs):
    height, width = inputs.shape[1], inputs.shape[2]
    if self.interpolation != "nearest" or self.data_format != "channels_last" or height is None or width is None:
      return super().call(inputs)  # Keras' own: what gan_dist's architectures (static sizes) never need.
    return _nearest_upsampling(inputs, height, width, *self.size)


def _nearest_upsampling(inputs: tf.Tensor, height: int, width: int, fh: int, fw: int) -> tf.Tensor:
  """[B, H, W, C] -> [B, H*fh, W*fw, C], each pixel repeated fh x fw times, by one ResizeNearestNeighbor op.

  Its gradient is written out: TensorFlow's, ResizeNearestNeighborGrad, has no XLA kernel, so --jit_compile failed
  to compile every architecture that upsamples (resnet, cresnet, dcgan_upsample). An integer factor with half-pixel
  centres maps output pixel (i, j) to input pixel (i // fh, j // fw), so the gradient of an input pixel is the sum of
  its fh x fw copies' gradients: a reshape and a sum, which XLA compiles.
  """
  @tf.custom_gradient
  def upsample(x):
    def gradient(upstream):  # [B, H*fh, W*fw, C] -> [B, H, W, C]
      blocks = tf.reshape(upstream, [tf.shape(upstream)[0], height, fh, width, fw, tf.shape(upstream)[3]])
      return tf.reduce_sum(blocks, axis=[2, 4])
    return tf.image.resize(x, [height * fh, width * fw], method="nearest"), gradient
  return upsample(inputs)


def batch_norm(cfg, **kwargs) -> keras.layers.BatchNormalization:
  """BatchNormalization following --sync_batchnorm (global-batch statistics, identical on every replica)."""
  return keras.layers.BatchNormalization(synchronized=cfg.sync_batchnorm, **kwargs)


def seed_states(*models: keras.Model) -> list:
  """The SeedGenerator state variables of `models`' layers (e.g. Dropout).

  tf.train.Checkpoint does not track Keras SeedGenerators, so without these a resumed run would draw other dropout
  masks than an uninterrupted one.
  """
  states = []
  for model in models:
    for layer in model._flatten_layers(include_self=False):  # pylint: disable=protected-access
      gen = getattr(layer, "seed_generator", None)
      if gen is not None:
        states.append(gen.state)
  return states


def strided_conv_features(images, kernel_size: int, leaky_slope: float, dropout: float = 0.0,
                          filters=(64, 128)):
  """The DCGAN-style discriminator body: per filter count, Conv2D (stride 2, same) -> LeakyReLU [-> Dropout].

  Args:
    images: a Keras tensor [B, H, W, C].
    kernel_size: convolution kernel size.
    leaky_slope: LeakyReLU negative slope.
    dropout: Dropout rate after each block (0: none).
    filters: filters of each strided convolution.

  Returns:
    Flattened features [B, H / 2^len(filters) * W / 2^len(filters) * filters[-1]].
  """
  x = images
  for f in filters:
    x = keras.layers.Conv2D(f, kernel_size, strides=2, padding="same")(x)
    x = keras.layers.LeakyReLU(leaky_slope)(x)
    if dropout > 0:
      x = Dropout(dropout)(x)
  return keras.layers.Flatten()(x)


@keras.saving.register_keras_serializable(package="gan_dist")
class GlobalSumPooling2D(keras.layers.Layer):
  """[B, H, W, C] -> [B, C], the sum over positions: how SNGAN and BigGAN pool D's features (Keras has the mean)."""

  def call(self, inputs):
    return tf.reduce_sum(inputs, axis=[1, 2])

  def compute_output_shape(self, input_shape):
    return (input_shape[0], input_shape[-1])


# The layers SpectralNormalization can wrap, and the attribute holding each one's matrix.
_KERNEL_ATTRIBUTE = ((keras.layers.Conv2DTranspose, "kernel"), (keras.layers.Conv2D, "kernel"),
                     (keras.layers.Dense, "kernel"), (keras.layers.Embedding, "embeddings"))


def _uncast_value(variable: keras.Variable) -> tf.Tensor:
  """The value of `variable` in its own dtype (float32), also inside the call of a mixed-precision layer.

  Keras casts every variable it reads in a mixed_float16 layer's call to float16; the power iteration and sigma
  need the float32 kernel. Keras has no public way to read a variable uncast: AutocastScope(None) is what
  Layer.__call__ itself enters for a layer with autocast=False.
  """
  with keras.src.backend.AutocastScope(None):
    return tf.convert_to_tensor(variable.value)


@keras.saving.register_keras_serializable(package="gan_dist")
class SpectralNormalization(keras.layers.Wrapper):
  """Spectral normalisation (Miyato et al. 2018) of a Dense, Conv2D, Conv2DTranspose or Embedding layer.

  The wrapped layer keeps its raw kernel W as its trainable variable; the forward pass uses W / sigma(W), with sigma
  the largest singular value of W as a matrix [in, out] (a conv kernel [kh, kw, cin, cout] as [kh*kw*cin, cout], a
  transposed conv's [kh, kw, cout, cin] as [kh*kw*cin, cout], an embedding table [K, dim] as it is). sigma is
  estimated by power iteration with a non-trainable float32 vector u [1, out] (stop-gradient'ed):

    training:  `power_iterations` times v = l2(u W^T), u = l2(v W); u is stored; sigma = v W u^T
    inference: v = l2(u W^T) from the stored u, sigma = v W u^T = |u W^T| (u is not updated)

  so the gradient reaches W through W / sigma as in the paper (u and v are constants: d sigma / dW = v^T u). Keras'
  own SpectralNormalization instead overwrites the kernel with the normalised one, which changes what the optimizer
  updates and what a checkpoint holds.

  Precision: u, the power iteration and sigma are float32 under every dtype policy; the normalised kernel is cast to
  the layer's compute dtype (float16 under mixed_float16) for the layer's own operation.

  Distribution: u is created with aggregation "mean", so the assignment of a replica-context call (the train step)
  writes the mean of the replicas' new vectors to every replica: the copies stay identical, and so does the
  checkpoint's one copy (they compute the same vector from the same weights, so the mean is that vector: exactly
  for 2, 4, 8... replicas). Not "only_first_replica", which also keeps them identical: tf.distribute broadcasts
  replica 0's value with a merge_call, which an XLA-compiled step (--jit_compile) cannot hold even on GPUs, where
  a mean is an all-reduce that compiles. u is a weight of the wrapper, hence of the model: in `model.weights`, in
  `non_trainable_weights` and in a tf.train.Checkpoint of the model.

  Args:
    layer: the Keras layer to normalise (Dense, Conv2D, Conv2DTranspose or Embedding).
    power_iterations: power-iteration updates of u per call in training mode (0: u is never updated).
    **kwargs: Layer arguments; the dtype policy defaults to the wrapped layer's.

  Raises:
    ValueError: another kind of layer, or a negative `power_iterations`.
  """

  def __init__(self, layer, power_iterations: int = 1, **kwargs):
    if not any(isinstance(layer, kind) for kind, _ in _KERNEL_ATTRIBUTE):
      raise ValueError(f"SpectralNormalization wraps Dense, Conv2D, Conv2DTranspose or Embedding layers, not "
                       f"{type(layer).__name__}")
    if isinstance(power_iterations, bool) or not isinstance(power_iterations, int) or power_iterations < 0:
      raise ValueError(f"power_iterations must be an integer >= 0, got {power_iterations!r}")
    kwargs.setdefault("dtype", layer.dtype_policy)
    super().__init__(layer, **kwargs)
    self.power_iterations = power_iterations
    self._attribute = next(name for kind, name in _KERNEL_ATTRIBUTE if isinstance(layer, kind))
    self._transposed = isinstance(layer, keras.layers.Conv2DTranspose)

  def build(self, input_shape=None):
    super().build(input_shape)
    kernel = self.kernel_variable
    out = kernel.shape[-2] if self._transposed else kernel.shape[-1]
    # Seeded by Keras' global seed (keras.utils.set_random_seed) like every initial weight.
    self.u = self.add_weight(shape=(1, out), initializer=keras.initializers.RandomNormal(), trainable=False,
                             dtype="float32", autocast=False, aggregation="mean", name="u")
    self.built = True

  @property
  def kernel_variable(self) -> keras.Variable:
    """The wrapped layer's raw (trainable) kernel variable."""
    return getattr(self.layer, self._attribute)

  def _matrix(self, kernel: tf.Tensor) -> tf.Tensor:
    """The kernel as the matrix [in, out] whose largest singular value is normalised."""
    if self._transposed:
      kernel = tf.transpose(kernel, [0, 1, 3, 2])
    return tf.reshape(kernel, [-1, kernel.shape[-1]])

  def normalized_kernel(self, training: bool = False) -> tf.Tensor:
    """W / sigma(W), float32, of the kernel's shape; in training also updates u (see the class docstring).

    Args:
      training: run `power_iterations` updates of u first (and store it); otherwise use the stored u.

    Returns:
      float32 tensor of the wrapped layer's kernel shape.
    """
    kernel = _uncast_value(self.kernel_variable)
    matrix = self._matrix(kernel)
    u = tf.convert_to_tensor(self.u.value)
    if training and self.power_iterations > 0:
      for _ in range(self.power_iterations):
        v = tf.stop_gradient(tf.math.l2_normalize(tf.matmul(u, matrix, transpose_b=True), epsilon=1e-12))
        vw = tf.matmul(v, matrix)
        u = tf.stop_gradient(tf.math.l2_normalize(vw, epsilon=1e-12))
      self.u.assign(u)
    else:
      u = tf.stop_gradient(tf.math.l2_normalize(u, epsilon=1e-12))
      v = tf.stop_gradient(tf.math.l2_normalize(tf.matmul(u, matrix, transpose_b=True), epsilon=1e-12))
      vw = tf.matmul(v, matrix)
    # sigma = v W u^T with u and v constants: its gradient with respect to W is v^T u (the paper's).
    sigma = tf.reduce_sum(vw * u)
    return kernel / sigma

  def call(self, inputs, training=None):
    """The wrapped layer's output with W / sigma: e.g. Dense [B, ..., in] -> [B, ..., out], Conv2D [B, H, W, cin]
    -> [B, H', W', cout], Embedding int [B, ...] -> [B, ..., dim]; `training` also updates u."""
    kernel = tf.cast(self.normalized_kernel(training=bool(training)), self.compute_dtype)
    layer = self.layer
    if isinstance(layer, keras.layers.Embedding):
      return tf.gather(kernel, tf.cast(inputs, tf.int32))
    if isinstance(layer, keras.layers.Conv2DTranspose):
      outputs = keras.ops.conv_transpose(inputs, kernel, strides=list(layer.strides), padding=layer.padding,
                                         output_padding=layer.output_padding, data_format=layer.data_format,
                                         dilation_rate=layer.dilation_rate)
    elif isinstance(layer, keras.layers.Conv2D):
      outputs = layer.convolution_op(inputs, kernel)
    else:
      outputs = keras.ops.matmul(inputs, kernel)
    if layer.use_bias:
      channels_first = getattr(layer, "data_format", "channels_last") == "channels_first"
      outputs = tf.nn.bias_add(outputs, layer.bias.value, data_format="NCHW" if channels_first else None)
    return layer.activation(outputs) if layer.activation is not None else outputs

  def compute_output_shape(self, input_shape):
    return self.layer.compute_output_shape(input_shape)

  def get_config(self):
    return {**super().get_config(), "power_iterations": self.power_iterations}

  def export_call(self, inputs, **kwargs):
    """Calls, on the Keras tensor `inputs`, a float32 layer of the wrapped layer's own Keras class whose kernel is
    W / sigma (from the stored u, not updated): what `inference.float32_copy` builds instead of this wrapper."""
    del kwargs  # Exports run in inference mode.
    copy = type(self.layer).from_config({**self.layer.get_config(), "dtype": "float32"})
    outputs = copy(inputs)
    kernel = self.kernel_variable
    normalized = self.normalized_kernel(training=False).numpy()
    copy.set_weights([normalized if v is kernel else np.asarray(v.numpy(), np.float32) for v in self.layer.weights])
    return outputs


def spectral_normalization_layers(model: keras.Model) -> list:
  """Every SpectralNormalization layer of `model` (nested ones included), in Keras' layer-traversal order: a clone of
  the model (keras.models.clone_model) lists its own in the same order."""
  return [layer for layer in model._flatten_layers(include_self=False)  # pylint: disable=protected-access
          if isinstance(layer, SpectralNormalization)]


def power_iteration_vectors(model: keras.Model) -> list:
  """The u vectors (float32 [1, out]) of every SpectralNormalization layer of `model`, in the order of
  `spectral_normalization_layers`."""
  return [layer.u for layer in spectral_normalization_layers(model)]


def sn_conv(filters: int, kernel_size: int, use_bias: bool = True, **kwargs) -> SpectralNormalization:
  """A spectrally normalised Conv2D ("same" padding, orthogonal initial kernel as in BigGAN)."""
  return SpectralNormalization(keras.layers.Conv2D(filters, kernel_size, padding="same", use_bias=use_bias,
                                                   kernel_initializer="orthogonal", **kwargs))


def sn_dense(units: int, use_bias: bool = True, **kwargs) -> SpectralNormalization:
  """A spectrally normalised Dense layer (orthogonal initial kernel as in BigGAN)."""
  return SpectralNormalization(keras.layers.Dense(units, use_bias=use_bias, kernel_initializer="orthogonal",
                                                  **kwargs))


@keras.saving.register_keras_serializable(package="gan_dist")
class FanOut(keras.layers.Layer):
  """`copies` copies of its input [B, D], made by one op, for a tensor that many layers read (e.g. the class
  embedding every conditional BatchNorm of cresnet's G reads).

  Why: a tensor read by k layers gets the sum of k gradients, which TensorFlow's tape adds in the order it happens
  to reach the readers; with readers all over the network that order changes from one trace to the next, and since
  float addition is not associative (k > 2), a resumed run would drift from an uninterrupted one in the last bits
  (and --deterministic would not hold). With one copy per reader, the gradients meet in the tile's gradient: one
  reduction in a fixed order.

  Args:
    copies: the number of outputs.
  """

  def __init__(self, copies: int, **kwargs):
    super().__init__(**kwargs)
    self.copies = int(copies)

  def call(self, inputs):
    """[B, D] -> `copies` tensors [B, D]."""
    return tf.split(tf.tile(inputs, [1, self.copies]), self.copies, axis=-1)

  def compute_output_shape(self, input_shape):
    return [tuple(input_shape)] * self.copies

  def get_config(self):
    return {**super().get_config(), "copies": self.copies}

  def export_call(self, inputs, **kwargs):
    """The input itself for every copy (an export is not differentiated)."""
    del kwargs
    return [inputs] * self.copies


def _flat_positions(x: tf.Tensor) -> tf.Tensor:
  """[B, H, W, C] -> [B, H*W, C]."""
  return tf.reshape(x, [-1, x.shape[1] * x.shape[2], x.shape[3]])


@keras.saving.register_keras_serializable(package="gan_dist")
class SelfAttention(keras.layers.Layer):
  """SAGAN self-attention (Zhang et al. 2019) over the positions of an NHWC map, as BigGAN implements it.

  With x [B, H, W, C] and N = H*W: f = conv_f(x) [B, N, C/8], g = conv_g(x) and h = conv_h(x) [B, M, C/8] and
  [B, M, C/2] (all 1x1 spectrally normalised convolutions without bias); g and h are max-pooled by 2 first (M = N/4)
  when the map is at least 8x8, as in BigGAN, which divides the attention's cost by 4; smaller maps attend to every
  position (M = N). attention = softmax over the M positions of f g^T [B, N, M], computed in float32 (under mixed
  precision float16 logits of large maps overflow); o = conv_o(attention h) [B, H, W, C] (1x1, spectrally
  normalised, no bias); output = x + gamma * o, with the scalar gamma initialised to 0, so that a new attention
  block starts as the identity and the network learns how much to use it.

  Args:
    channels: C, the channels of the input (and output) map.
    **kwargs: Layer arguments (name, dtype).
  """

  def __init__(self, channels: int, **kwargs):
    super().__init__(**kwargs)
    self.channels = int(channels)
    inner, value = max(1, self.channels // 8), max(1, self.channels // 2)
    policy = self.dtype_policy
    self.conv_f = sn_conv(inner, 1, use_bias=False, dtype=policy)
    self.conv_g = sn_conv(inner, 1, use_bias=False, dtype=policy)
    self.conv_h = sn_conv(value, 1, use_bias=False, dtype=policy)
    self.conv_o = sn_conv(self.channels, 1, use_bias=False, dtype=policy)
    self.pool = False

  def build(self, input_shape):
    height, width, channels = input_shape[1:]
    if channels != self.channels:
      raise ValueError(f"SelfAttention({self.channels}) called on a map of {channels} channels")
    self.pool = height >= 8 and width >= 8 and height % 2 == 0 and width % 2 == 0
    for conv in (self.conv_f, self.conv_g, self.conv_h):
      conv.build(input_shape)
    self.conv_o.build((*input_shape[:3], self.conv_h.layer.filters))
    self.gamma = self.add_weight(shape=(), initializer="zeros", name="gamma")
    self.built = True

  def call(self, inputs, training=None):
    """[B, H, W, C] -> [B, H, W, C]; `training` updates the convolutions' u."""
    height, width = inputs.shape[1], inputs.shape[2]
    f = _flat_positions(self.conv_f(inputs, training=training))
    g = self.conv_g(inputs, training=training)
    h = self.conv_h(inputs, training=training)
    if self.pool:
      g = tf.nn.max_pool2d(g, 2, 2, "VALID")
      h = tf.nn.max_pool2d(h, 2, 2, "VALID")
    logits = tf.matmul(f, _flat_positions(g), transpose_b=True)
    attention = tf.cast(tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1), h.dtype)
    attended = tf.reshape(tf.matmul(attention, _flat_positions(h)), [-1, height, width, h.shape[-1]])
    return inputs + self.gamma * self.conv_o(attended, training=training)

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    return {**super().get_config(), "channels": self.channels}

  def export_call(self, inputs, **kwargs):
    """The same computation from Keras' own layers in float32 (Conv2D, MaxPooling2D, Reshape, Dot, Softmax,
    Rescaling, Add), called on the Keras tensor `inputs` [B, H, W, C]."""
    del kwargs  # Exports run in inference mode.
    height, width = inputs.shape[1], inputs.shape[2]
    layers = keras.layers

    def flat(x):
      return layers.Reshape((x.shape[1] * x.shape[2], x.shape[3]), dtype="float32")(x)

    f = self.conv_f.export_call(inputs)
    g = self.conv_g.export_call(inputs)
    h = self.conv_h.export_call(inputs)
    if self.pool:
      g = layers.MaxPooling2D(2, dtype="float32")(g)
      h = layers.MaxPooling2D(2, dtype="float32")(h)
    attention = layers.Softmax(axis=-1, dtype="float32")(layers.Dot(axes=(2, 2), dtype="float32")([flat(f), flat(g)]))
    attended = layers.Dot(axes=(2, 1), dtype="float32")([attention, flat(h)])
    attended = layers.Reshape((height, width, h.shape[-1]), dtype="float32")(attended)
    o = layers.Rescaling(float(self.gamma.numpy()), dtype="float32")(self.conv_o.export_call(attended))
    return layers.Add(dtype="float32")([inputs, o])


@keras.saving.register_keras_serializable(package="gan_dist")
class ConditionalBatchNorm(keras.layers.Layer):
  """BatchNorm whose scale and offset are functions of a conditioning vector (class-conditional BatchNorm).

  Called on [x, c] with x [B, H, W, C] (or [B, C]) and c [B, D]: BatchNormalization of x without its own scale and
  offset, then x_hat * (1 + gain(c)) + bias(c), with gain and bias spectrally normalised Dense layers without bias
  from D to C. In cresnet (BigGAN with a shared embedding), c is one class embedding shared by every conditional
  BatchNorm of G: each layer learns its own projections of it instead of a table of scales and offsets per class.
  The "1 +" makes a layer start close to plain BatchNorm (gain(c) is small for a small embedding).

  Synchronisation: `synchronized` is passed to the inner BatchNormalization (use `conditional_batch_norm(cfg)`,
  which takes it from --sync_batchnorm as `batch_norm(cfg)` does); its moving statistics are re-estimated for the
  EMA generator like any BatchNorm's (TrainState.prepare_ema finds the inner layer).

  Args:
    synchronized: global-batch statistics under tf.distribute (Keras' BatchNormalization `synchronized`).
    momentum, epsilon: of the inner BatchNormalization.
    **kwargs: Layer arguments (name, dtype).
  """

  def __init__(self, synchronized: bool = False, momentum: float = 0.99, epsilon: float = 1e-3, **kwargs):
    super().__init__(**kwargs)
    self.synchronized, self.momentum, self.epsilon = bool(synchronized), float(momentum), float(epsilon)
    self.norm = keras.layers.BatchNormalization(center=False, scale=False, synchronized=self.synchronized,
                                                momentum=self.momentum, epsilon=self.epsilon, dtype=self.dtype_policy)
    self.gain = self.bias = None

  def build(self, input_shape):
    x_shape, c_shape = input_shape
    channels = x_shape[-1]
    self.norm.build(x_shape)
    self.gain = sn_dense(channels, use_bias=False, dtype=self.dtype_policy)
    self.bias = sn_dense(channels, use_bias=False, dtype=self.dtype_policy)
    self.gain.build(c_shape)
    self.bias.build(c_shape)
    self.built = True

  def _broadcast(self, y, rank: int):
    """[B, C] -> [B, 1, ..., 1, C] of rank `rank`."""
    return tf.reshape(y, [-1] + [1] * (rank - 2) + [y.shape[-1]])

  def call(self, inputs, training=None):
    """[x [B, H, W, C] (or [B, C]), c [B, D]] -> [B, H, W, C]; `training`: batch statistics, and u updates."""
    x, c = inputs
    rank = x.shape.rank
    gain = self._broadcast(self.gain(c, training=training), rank)
    bias = self._broadcast(self.bias(c, training=training), rank)
    return self.norm(x, training=training) * (1.0 + gain) + bias

  def compute_output_shape(self, input_shape):
    return input_shape[0]

  def get_config(self):
    return {**super().get_config(), "synchronized": self.synchronized, "momentum": self.momentum,
            "epsilon": self.epsilon}

  def export_call(self, inputs, **kwargs):
    """The inference-mode computation from Keras' own layers in float32 (BatchNormalization, Dense, Rescaling,
    Reshape, Multiply, Add), called on the Keras tensors [x, c]."""
    del kwargs  # Exports run in inference mode.
    x, c = inputs
    layers = keras.layers
    norm = layers.BatchNormalization.from_config({**self.norm.get_config(), "synchronized": False,
                                                   "dtype": "float32"})
    normalized = norm(x)
    norm.set_weights([np.asarray(w, np.float32) for w in self.norm.get_weights()])
    shape = (1,) * (len(x.shape) - 2) + (x.shape[-1],)
    gain = layers.Rescaling(1.0, offset=1.0, dtype="float32")(self.gain.export_call(c))
    gain = layers.Reshape(shape, dtype="float32")(gain)
    bias = layers.Reshape(shape, dtype="float32")(self.bias.export_call(c))
    return layers.Add(dtype="float32")([layers.Multiply(dtype="float32")([normalized, gain]), bias])


def conditional_batch_norm(cfg, **kwargs) -> ConditionalBatchNorm:
  """ConditionalBatchNorm following --sync_batchnorm, as `batch_norm(cfg)`."""
  return ConditionalBatchNorm(synchronized=cfg.sync_batchnorm, **kwargs)
