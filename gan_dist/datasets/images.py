"""In-graph image operations shared by every source: decode, channels, centre crop, resize, scale, flip.

Everything here is TensorFlow ops, so it runs inside tf.data's parallel map functions, never in Python.
"""

from typing import Tuple

import tensorflow as tf

# Luma weights of tf.image.rgb_to_grayscale (ITU-R BT.601).
_LUMA = (0.2989, 0.5870, 0.1140)


def _le_uint(contents: tf.Tensor, offset: int, size: int) -> tf.Tensor:
  """The little-endian unsigned integer of `size` (2 or 4) bytes at `offset` of a string scalar, as int32."""
  dtype = tf.uint16 if size == 2 else tf.int32  # decode_raw has no uint32; BMP header fields stay below 2**31.
  value = tf.io.decode_raw(tf.strings.substr(contents, offset, size), dtype, little_endian=True)[0]
  return tf.cast(value, tf.int32)


def _decode_palette_bmp(contents: tf.Tensor) -> tf.Tensor:
  """An 8-bit BMP: TensorFlow's decoder returns the palette indices as gray values; look the colours up instead."""
  indices = tf.io.decode_bmp(contents, channels=0)[..., 0]  # uint8 [h, w].
  header_size = _le_uint(contents, 14, 4)
  colours = _le_uint(contents, 46, 4)
  colours = tf.where(colours == 0, 256, tf.minimum(colours, 256))
  table = tf.io.decode_raw(tf.strings.substr(contents, 14 + header_size, 4 * colours), tf.uint8)
  bgr = tf.reshape(table, [-1, 4])[:, :3]
  rgb = tf.reverse(bgr, axis=[1])
  rgb = tf.pad(rgb, [[0, 256 - tf.shape(rgb)[0]], [0, 0]])  # Indices past a short palette read black.
  return tf.gather(rgb, tf.cast(indices, tf.int32))


def _flag_webp_animation_alpha(contents: tf.Tensor) -> tf.Tensor:
  """An animated WebP whose header (VP8X) does not flag alpha, with the flag set; any other file unchanged.

  TensorFlow's decoder (2.21) sizes its output by that flag, RGB without it, but composes animation frames as RGBA
  into it: it wrote past its buffer (the process aborted on a corrupted heap, or a larger image came out garbled).
  Flagged, the first frame decodes exactly, as RGBA with opaque alpha, which `to_channels` drops as any alpha.
  """
  length = tf.strings.length(contents)

  def animated_without_alpha():
    flags = tf.cast(tf.io.decode_raw(tf.strings.substr(contents, 20, 1), tf.uint8)[0], tf.int32)
    webp = tf.logical_and(tf.strings.substr(contents, 0, 4) == "RIFF", tf.strings.substr(contents, 8, 8) == "WEBPVP8X")
    animated = tf.logical_and(tf.bitwise.bitwise_and(flags, 0x02) != 0, tf.bitwise.bitwise_and(flags, 0x10) == 0)
    return tf.logical_and(webp, animated), flags

  def flagged(flags):
    byte = tf.gather(tf.constant([bytes([i]) for i in range(256)]), tf.bitwise.bitwise_or(flags, 0x10))
    return tf.strings.join([tf.strings.substr(contents, 0, 20), byte, tf.strings.substr(contents, 21, length - 21)])

  # 30 bytes: the RIFF header and the VP8X chunk (its flags at byte 20); shorter files are no such WebP.
  needed, flags = tf.cond(length >= 30, animated_without_alpha, lambda: (tf.constant(False), tf.constant(0)))
  return tf.cond(needed, lambda: flagged(flags), lambda: contents)


def _jpeg_log2_ratio(contents: tf.Tensor, min_side: int) -> tf.Tensor:
  """log2 of the largest of 1, 2, 4, 8 by which libjpeg may downscale a JPEG (in the DCT, nearly free) keeping both
  sides at least `min_side`: a 4000x3000 photo for a 64x64 model decodes at 500x375, 64 times less work and memory."""
  shape = tf.image.extract_jpeg_shape(contents)
  short = tf.minimum(shape[0], shape[1])
  log2_ratio = tf.constant(0, tf.int32)
  for i, r in enumerate((2, 4, 8), start=1):
    log2_ratio = tf.where(short // r >= min_side, i, log2_ratio)
  return log2_ratio


def decode(contents: tf.Tensor, min_side: int = 0) -> tf.Tensor:
  """Decodes a JPEG, PNG, GIF, BMP or WebP file.

  Args:
    contents: string scalar, the file's bytes.
    min_side: if > 0, JPEGs may be decoded downscaled by 2, 4 or 8 as long as both sides stay >= min_side.

  Returns:
    uint8 [h, w, c] with c in 1..4 as stored (1 gray, 2 gray+alpha, 3 RGB, 4 RGBA; palette PNGs and 8-bit BMPs
    expanded to RGB(A)); 16-bit PNGs scaled to 8 bits; the first frame of an animated GIF, PNG or WebP (a WebP's
    as RGBA).

  Raises:
    tf.errors.InvalidArgumentError (when run): empty, truncated, corrupt or not an image.
  """
  is_bmp = tf.logical_and(tf.strings.length(contents) >= 54, tf.strings.substr(contents, 0, 2) == "BM")
  bits = tf.cond(is_bmp, lambda: _le_uint(contents, 28, 2), lambda: tf.constant(0, tf.int32))
  header_size = tf.cond(is_bmp, lambda: _le_uint(contents, 14, 4), lambda: tf.constant(0, tf.int32))
  palette = tf.logical_and(tf.equal(bits, 8), header_size >= 40)

  def generic():
    decoded = tf.io.decode_image(_flag_webp_animation_alpha(contents), channels=0, dtype=tf.uint8,
                                 expand_animations=False)
    return tf.ensure_shape(decoded, [None, None, None])

  def paletted():
    return tf.ensure_shape(_decode_palette_bmp(contents), [None, None, None])

  def jpeg():
    # ratio is an attribute of the op, so one decoder per ratio.
    decoders = [lambda r=r: tf.ensure_shape(tf.io.decode_jpeg(contents, channels=0, ratio=r), [None, None, None])
                for r in (1, 2, 4, 8)]
    return tf.switch_case(_jpeg_log2_ratio(contents, min_side), decoders)

  cases = [(palette, paletted)]
  if min_side > 0:
    cases.append((tf.strings.substr(contents, 0, 3) == b"\xff\xd8\xff", jpeg))
  return tf.case(cases, default=generic, exclusive=False)


def _gray_to(x: tf.Tensor, channels: int) -> tf.Tensor:
  return x if channels == 1 else tf.concat([x, x, x], axis=-1)


def _rgb_to(x: tf.Tensor, channels: int) -> tf.Tensor:
  if channels == 3:
    return x
  return _LUMA[0] * x[..., 0:1] + _LUMA[1] * x[..., 1:2] + _LUMA[2] * x[..., 2:3]


def to_channels(x: tf.Tensor, channels: int) -> tf.Tensor:
  """float32 [..., c] with c in 1..4 (static or not) -> [..., channels]: alpha dropped, gray repeated, RGB to luma."""
  known = x.shape[-1]
  convert = {1: lambda: _gray_to(x, channels), 2: lambda: _gray_to(x[..., :1], channels),
             3: lambda: _rgb_to(x, channels), 4: lambda: _rgb_to(x[..., :3], channels)}
  if known is not None:
    if known not in convert:
      raise ValueError(f"images with {known} channels cannot be converted; expected 1 to 4")
    return convert[known]()
  stored = tf.shape(x)[-1]
  branches = [convert[c] for c in (1, 2, 3, 4)]
  y = tf.switch_case(tf.clip_by_value(stored, 1, 4) - 1, branches)
  return tf.ensure_shape(y, [None] * (x.shape.rank - 1) + [channels])


def center_square(x: tf.Tensor) -> tf.Tensor:
  """[..., h, w, c] -> the centred [..., s, s, c] with s = min(h, w)."""
  height, width = x.shape[-3], x.shape[-2]
  if height is not None and height == width:
    return x
  shape = tf.shape(x)
  height, width = shape[-3], shape[-2]
  side = tf.minimum(height, width)
  top, left = (height - side) // 2, (width - side) // 2
  return x[..., top:top + side, left:left + side, :]


def resize(x: tf.Tensor, size: Tuple[int, int]) -> tf.Tensor:
  """[..., h, w, c] float in [0, 255] -> [..., H, W, c]: antialiased bilinear, skipped when the size already fits."""
  if tuple(x.shape[-3:-1]) == tuple(size):
    return x

  def resized():
    y = tf.image.resize(x, size, method="bilinear", antialias=True)
    return tf.clip_by_value(y, 0.0, 255.0)

  if None not in x.shape[-3:-1]:
    return resized()
  same = tf.reduce_all(tf.shape(x)[-3:-1] == tf.constant(size))
  out_shape = x.shape[:-3].concatenate([*size, x.shape[-1]])
  return tf.cond(same, lambda: tf.ensure_shape(x, out_shape), resized)


def transform(image: tf.Tensor, image_shape: Tuple[int, int, int], crop: str) -> tf.Tensor:
  """A decoded image or batch -> what the model trains on.

  Args:
    image: uint8 [h, w, c] or [B, h, w, c], c in 1..4.
    image_shape: (H, W, C) of the model.
    crop: "center" (largest centred square, before resizing) or "none" (the whole image is stretched).

  Returns:
    float32 [H, W, C] or [B, H, W, C] in [-1, 1].
  """
  height, width, channels = image_shape
  if crop == "center":
    image = center_square(image)  # On uint8, before the 4x larger float copy.
  x = to_channels(tf.cast(image, tf.float32), channels)
  x = resize(x, (height, width))
  return x / 127.5 - 1.0


def flip(x: tf.Tensor, flips: tf.Tensor) -> tf.Tensor:
  """Mirrors horizontally the images of float [..., H, W, C] whose bool `flips` (shape [...]) is true."""
  mirrored = tf.reverse(x, axis=[-2])
  return tf.where(tf.reshape(flips, tf.concat([tf.shape(flips), [1, 1, 1]], 0)), mirrored, x)
