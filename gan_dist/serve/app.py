"""The demo's web application (Flask): the page, its static files and the HTTP API.

  GET /                 the demo page (static/index.html; plain HTML, CSS and JavaScript, nothing from elsewhere)
  GET /api/health       {"status": "ok", "traces": {bucket: traces of the generation function}}
  GET /api/info         the model's facts and the API's limits
  GET /api/generate     a grid: num (1-64, default 16), seed (0-4294967295, default 0), class (a class id, a
                        class name of the facts' class_names, or "any"; conditional models), format (png | json |
                        npz, default png), scale (1-8, default 1), truncation (0-4, 0 = none; default: the run's
                        --truncation, the model's facts; BigGAN's truncation trick, `sampling.truncate`)
  GET /api/walk         a latent walk from seed_a to seed_b in `frames` images (2-64, default 16), one row:
                        seed_a, seed_b, frames, class, format, scale, truncation

A bad parameter (unknown, repeated, not a number, out of range, a class the model does not have) is answered with
HTTP 400 and {"error": "<one line>", "parameter": "<its name>"}. Any other error of an /api/ path is JSON too.
Grids of a conditional model with class "any" have one column per class (image i has class i mod num_classes).

Serve it with a production WSGI server: `python -m gan_dist.serve` runs waitress; gunicorn or waitress-serve can
load `gan_dist.serve.app:create_app_from_env()` (GAN_DIST_WORKDIR or GAN_DIST_SAVED_MODEL, optional GAN_DIST_STEP:
a step or `best`).
"""

import io
import json
import os
import re
from typing import Optional

import flask
import numpy as np
import tensorflow as tf
from werkzeug import exceptions

from gan_dist import errors
from gan_dist import sampling
from gan_dist.serve import model as model_lib

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
FORMATS = ("png", "json", "npz")
MAX_SCALE = 8
MAX_FRAMES = model_lib.MAX_IMAGES
MAX_TRUNCATION = 4.0  # Past 4 a truncation changes almost nothing (|z| > 4 has probability 6e-5).
_GENERATE_PARAMS = ("num", "seed", "class", "format", "scale", "truncation")
_WALK_PARAMS = ("seed_a", "seed_b", "frames", "class", "format", "scale", "truncation")
# The page needs nothing from other origins (works offline); the policy makes the browser refuse it if it tried.
_CSP = ("default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; object-src 'none'; "
        "base-uri 'self'; frame-ancestors 'none'")


class BadParameter(exceptions.BadRequest):
  """A request parameter the API refuses: HTTP 400 naming the parameter."""

  def __init__(self, parameter: str, message: str):
    super().__init__(message)
    self.parameter = parameter


def _single(args, name: str) -> Optional[str]:
  values = args.getlist(name)
  if len(values) > 1:
    raise BadParameter(name, f"{name} is given {len(values)} times; give it once")
  return values[0] if values else None


def _check_known(args, known) -> None:
  for name in args:
    if name not in known:
      raise BadParameter(name, f"unknown parameter {name!r}; this endpoint takes {', '.join(known)}")


# What a number in a query may look like: ASCII digits (Python's int() and float() also take "1_0" and other
# scripts' digits, which no client means), at most 30 of them (int() refuses over 4,300 digits with its own error).
_INTEGER = re.compile(r"[+-]?[0-9]{1,30}", re.ASCII)
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", re.ASCII)


def _shown(text: str) -> str:
  """`text` as an error message quotes it: at most 40 characters of it."""
  return repr(text if len(text) <= 40 else text[:40] + "...")


def _int(args, name: str, default: int, low: int, high: int) -> int:
  text = _single(args, name)
  if text is None or text == "":
    return default
  if not _INTEGER.fullmatch(text.strip()):
    raise BadParameter(name, f"{name} must be an integer from {low} to {high}, got {_shown(text)}")
  value = int(text.strip())
  if not low <= value <= high:
    raise BadParameter(name, f"{name} must be an integer from {low} to {high}, got {value}")
  return value


def _truncation(args, default: float) -> float:
  """The noise's truncation T: 0 (none) or a number in (0, MAX_TRUNCATION]; absent: `default`."""
  text = _single(args, "truncation")
  if text is None or text.strip() == "":
    return default
  message = f"truncation must be 0 (none) or a number up to {MAX_TRUNCATION:g}"
  if not _DECIMAL.fullmatch(text.strip()):
    raise BadParameter("truncation", f"{message}, got {_shown(text)}")
  value = float(text.strip())
  if not 0.0 <= value <= MAX_TRUNCATION:  # NaN fails this too.
    raise BadParameter("truncation", f"{message}, got {text.strip()}")
  return value


def _class(args, model: model_lib.ServedModel) -> Optional[int]:
  """None for "any" (or absent); else a class id of a conditional model, given as such or by its name in the
  model's facts (a class folder's)."""
  text = _single(args, "class")
  if text is None or text.strip().lower() in ("", "any"):
    return None
  if not model.conditional:
    raise BadParameter("class", f"class={_shown(text)}: this model is unconditional; leave class out or use "
                       "class=any")
  high = model.num_classes - 1
  named = sampling.class_named(text.strip(), model.facts.get("class_names", []))
  if named is not None:
    return named
  if not _INTEGER.fullmatch(text.strip()):
    names = [name for name in model.facts.get("class_names", []) if name]
    or_name = f", or a class name ({', '.join(names)})" if names else ""
    raise BadParameter("class", f"class must be 'any' or a class id from 0 to {high}{or_name}, got {_shown(text)}")
  value = int(text.strip())
  if not 0 <= value <= high:
    raise BadParameter("class", f"unknown class {value}: this model has classes 0 to {high} (or 'any')")
  return value


def _format(args) -> str:
  text = (_single(args, "format") or "png").strip().lower()
  if text not in FORMATS:
    raise BadParameter("format", f"format must be one of {', '.join(FORMATS)}, got {_shown(text)}")
  return text


def _respond(images: np.ndarray, labels: np.ndarray, noise: np.ndarray, columns: int, fmt: str, scale: int,
             name: str, request_facts: dict, conditional: bool) -> flask.Response:
  """The images as a PNG grid, a JSON document or an NPZ archive.

  Args:
    images: uint8 [N, H, W, C]; labels int32 [N] and noise float32 [N, latent_dim], their inputs.
    columns: columns of the PNG grid (JSON: its `grid` field).
    fmt: one of FORMATS; scale: PNG pixels per image pixel.
    name: the NPZ download's file name, without .npz.
    request_facts: the request's parameters, echoed in the JSON.
    conditional: whether labels mean anything (an unconditional model's JSON has labels null, its NPZ none).
  """
  if fmt == "png":
    grid = sampling.tile(images, columns, scale)
    return flask.Response(tf.io.encode_png(grid).numpy(), mimetype="image/png")
  rows = -(-len(images) // columns)
  if fmt == "json":
    body = dict(request_facts, shape=list(images.shape), grid=[rows, columns],
                labels=labels.tolist() if conditional else None, images=images.tolist())
    return flask.Response(json.dumps(body, separators=(",", ":")), mimetype="application/json")
  arrays = dict(images=images, noise=noise)
  if conditional:
    arrays["labels"] = labels
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  return flask.Response(buffer.getvalue(), mimetype="application/octet-stream",
                        headers={"Content-Disposition": f'attachment; filename="{name}.npz"'})


def create_app(model: model_lib.ServedModel) -> flask.Flask:
  """The Flask application serving `model` (a `model.ServedModel`)."""
  app = flask.Flask(__name__, static_folder=STATIC_DIR, static_url_path="/static")
  app.json.sort_keys = False
  app.config["served_model"] = model

  @app.get("/")
  def index():
    return app.send_static_file("index.html")

  @app.get("/api/health")
  def health():
    return {"status": "ok", "traces": {str(k): v for k, v in sorted(model.trace_counts.items())}}

  @app.get("/api/info")
  def info():
    return dict(model.facts, max_images=model_lib.MAX_IMAGES, max_seed=sampling.MAX_SEED, max_frames=MAX_FRAMES,
                max_scale=MAX_SCALE, max_truncation=MAX_TRUNCATION, formats=list(FORMATS),
                buckets=list(model_lib.BUCKETS))

  @app.get("/api/generate")
  def generate():
    args = flask.request.args
    _check_known(args, _GENERATE_PARAMS)
    num = _int(args, "num", 16, 1, model_lib.MAX_IMAGES)
    seed = _int(args, "seed", 0, 0, sampling.MAX_SEED)
    label = _class(args, model)
    fmt = _format(args)
    scale = _int(args, "scale", 1, 1, MAX_SCALE)
    truncation = _truncation(args, model.truncation)
    noise, labels = model.inputs(num, seed, label, truncation=truncation)
    images = model.images(noise, labels)
    cycling = model.num_classes if model.conditional and label is None else 0
    return _respond(images, labels, noise, sampling.grid_columns(num, cycling), fmt, scale, f"samples_seed{seed}",
                    {"num": num, "seed": seed, "class": "any" if label is None else label,
                     "truncation": truncation}, model.conditional)

  @app.get("/api/walk")
  def walk():
    args = flask.request.args
    _check_known(args, _WALK_PARAMS)
    seed_a = _int(args, "seed_a", 0, 0, sampling.MAX_SEED)
    seed_b = _int(args, "seed_b", 1, 0, sampling.MAX_SEED)
    frames = _int(args, "frames", 16, 2, MAX_FRAMES)
    label = _class(args, model)
    fmt = _format(args)
    scale = _int(args, "scale", 1, 1, MAX_SCALE)
    truncation = _truncation(args, model.truncation)
    noise, labels = model.walk_inputs(seed_a, seed_b, frames, label, truncation=truncation)
    images = model.images(noise, labels)
    return _respond(images, labels, noise, frames, fmt, scale, f"walk_{seed_a}_{seed_b}",
                    {"seed_a": seed_a, "seed_b": seed_b, "frames": frames, "class": "any" if label is None else label,
                     "truncation": truncation}, model.conditional)

  @app.errorhandler(exceptions.HTTPException)
  def http_error(error):
    if not flask.request.path.startswith("/api/"):
      return error
    body = {"error": error.description}
    if isinstance(error, BadParameter):
      body["parameter"] = error.parameter
    response = flask.jsonify(body)
    response.status_code = error.code
    if error.code == 405:
      response.headers["Allow"] = "GET, HEAD"
    return response

  @app.errorhandler(Exception)
  def internal_error(error):
    app.logger.exception("Request %s failed", flask.request.full_path)
    if not flask.request.path.startswith("/api/"):
      return exceptions.InternalServerError()
    response = flask.jsonify({"error": f"internal error: {type(error).__name__}; see the server's log"})
    response.status_code = 500
    return response

  @app.after_request
  def headers(response):
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = _CSP
    if flask.request.path.startswith("/api/"):
      response.headers["Cache-Control"] = "no-store"
    return response

  return app


def load_model(workdir: str = "", saved_model: str = "", step: Optional[int] = None, best: bool = False,
               truncation: Optional[float] = None) -> model_lib.ServedModel:
  """The model of a workdir (its latest checkpoint, that of `step`, or the best) or of a SavedModel export (exactly
  one of them); `truncation`, if given, is the demo's default truncation instead of the run's."""
  if truncation is not None and not 0.0 <= truncation <= MAX_TRUNCATION:  # NaN fails this too.
    raise errors.UserError(f"--truncation={truncation}: the demo takes 0 (none) or a number up to "
                           f"{MAX_TRUNCATION:g}")
  model = _load_model(workdir, saved_model, step, best)
  if truncation is not None:
    model.facts["truncation"] = truncation
  return model


def _load_model(workdir: str, saved_model: str, step: Optional[int], best: bool) -> model_lib.ServedModel:
  if workdir and saved_model:
    raise errors.UserError(f"--workdir={workdir} and --saved_model={saved_model} both given; serve one of them")
  if not workdir and not saved_model:
    raise errors.UserError("nothing to serve: give --workdir=W (a trained run) or --saved_model=DIR (an export)")
  if saved_model:
    if step is not None or best:
      raise errors.UserError(f"--{'step' if step is not None else 'best'} picks a checkpoint of a workdir; a "
                             "--saved_model export has one step")
    return model_lib.from_saved_model(saved_model)
  return model_lib.from_workdir(workdir, step, best)


def create_app_from_env() -> flask.Flask:
  """The application for a WSGI server, from GAN_DIST_WORKDIR or GAN_DIST_SAVED_MODEL (and GAN_DIST_STEP: a step,
  or `best` for the run's best checkpoint)."""
  step = os.environ.get("GAN_DIST_STEP", "")
  if step and not step.isdigit() and step != "best":
    raise errors.UserError(f"GAN_DIST_STEP={step!r} must be a checkpoint step (a number) or best")
  model = load_model(os.environ.get("GAN_DIST_WORKDIR", ""), os.environ.get("GAN_DIST_SAVED_MODEL", ""),
                     int(step) if step.isdigit() else None, step == "best")
  return create_app(model)
