"""serve/app.py: the HTTP API (status codes, grid sizes, determinism, every bad parameter, concurrency) and page."""

import concurrent.futures
import io
import re
import shutil
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
import tensorflow as tf
from werkzeug import serving

from gan_dist import checkpoint as checkpoint_lib
from gan_dist import config as config_lib
from gan_dist import errors
from gan_dist import exporter
from gan_dist import sampling
from gan_dist import state as state_lib
from gan_dist import workdir as workdir_lib
from gan_dist.serve import app as app_lib
from gan_dist.serve import model as model_lib
from tests import helpers
from tests.serve import workdirs


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
  """{"conditional": app, "unconditional": app}: cgan_mlp (10 classes, EMA, mixed_float16) and mlp."""
  return {kind: app_lib.create_app(model_lib.from_workdir(workdirs.trained(kind, tmp_path_factory)))
          for kind in workdirs.KINDS}


@pytest.fixture(scope="module")
def client(apps):
  return apps["conditional"].test_client()


def _png(response) -> np.ndarray:
  assert response.status_code == 200, response.get_data(as_text=True)
  assert response.mimetype == "image/png"
  return tf.io.decode_png(response.get_data()).numpy()


def test_page_and_static_files_are_served_and_self_contained(client):
  page = client.get("/")
  assert page.status_code == 200 and page.mimetype == "text/html"
  html = page.get_data(as_text=True)
  for element in ('id="class"', 'id="num"', 'id="seed"', 'id="truncation"', 'id="new-samples"', 'id="grid"',
                  'id="download"', 'id="facts"', 'id="walk-animation"'):
    assert element in html
  assert "default-src 'self'" in page.headers["Content-Security-Policy"]
  for name in ("demo.js", "demo.css"):
    response = client.get(f"/static/{name}")
    assert response.status_code == 200
    html += response.get_data(as_text=True)
  # Nothing from another site (works offline): no absolute URLs in the page, its script or its style.
  assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//|url\(\s*[\"']?(https?:)?//|@import", html)
  assert not re.search(r"fetch\(\s*[\"'`](https?:)?//", html)


def test_health_and_info(apps):
  health = apps["conditional"].test_client().get("/api/health")
  assert health.status_code == 200 and health.json["status"] == "ok"
  info = apps["conditional"].test_client().get("/api/info").json
  assert (info["arch"], info["dataset"], info["step"], info["ema"], info["conditional"], info["num_classes"],
          info["image_shape"], info["latent_dim"], info["source"]) == (
              "cgan_mlp", "mnist", 1, True, True, 10, [28, 28, 1], workdirs.LATENT_DIM, "workdir")
  assert info["max_images"] == 64 and info["formats"] == ["png", "json", "npz"] and info["max_truncation"] == 4.0
  assert info["truncation"] == 0.0  # The run's --truncation: none.
  info = apps["unconditional"].test_client().get("/api/info").json
  assert (info["arch"], info["ema"], info["conditional"], info["num_classes"]) == ("mlp", False, False, 0)
  # They take no parameter and ignore any (README): a load balancer's probe may add its own.
  for path in ("/api/health?probe=lb", "/api/info?x=1"):
    reply = apps["unconditional"].test_client().get(path)
    assert reply.status_code == 200 and reply.json == apps["unconditional"].test_client().get(
        path.split("?")[0]).json, path


@pytest.mark.parametrize("kind, query, shape", [
    ("conditional", "num=12&seed=1", (2 * 28, 10 * 28, 1)),  # "any": one column per class.
    ("conditional", "num=64&seed=1&class=any", (7 * 28, 10 * 28, 1)),
    ("conditional", "num=16&seed=1&class=3", (4 * 28, 4 * 28, 1)),
    ("conditional", "num=1&seed=1&class=0", (28, 28, 1)),
    ("conditional", "num=4&scale=3", (2 * 28 * 3, 2 * 28 * 3, 1)),
    ("unconditional", "num=10&seed=2", (3 * 28, 4 * 28, 1)),
    ("unconditional", "", (4 * 28, 4 * 28, 1)),  # Defaults: 16 images, seed 0.
])
def test_png_has_the_requested_grid_size(apps, kind, query, shape):
  assert _png(apps[kind].test_client().get(f"/api/generate?{query}")).shape == shape


def test_walk_is_one_row_from_seed_a_to_seed_b(client):
  strip = _png(client.get("/api/walk?seed_a=4&seed_b=5&frames=6&class=2"))
  assert strip.shape == (28, 6 * 28, 1)
  first = _png(client.get("/api/generate?num=1&seed=4&class=2"))
  last = _png(client.get("/api/generate?num=1&seed=5&class=2"))
  # Different images, so that the last frame tells a walk ending at seed_b from one ending where it started.
  assert np.abs(first.astype(int) - last.astype(int)).mean() > 1
  np.testing.assert_allclose(strip[:, :28].astype(int), first.astype(int), atol=1)
  np.testing.assert_allclose(strip[:, -28:].astype(int), last.astype(int), atol=1)


def test_truncation_draws_truncated_noise_in_grids_and_walks(client):
  body = client.get("/api/generate?num=4&seed=3&class=2&truncation=0.5&format=json").json
  assert body["truncation"] == 0.5
  arrays = np.load(io.BytesIO(client.get("/api/generate?num=4&seed=3&class=2&truncation=0.5&format=npz").get_data()))
  np.testing.assert_array_equal(arrays["noise"], sampling.noise(4, workdirs.LATENT_DIM, 3, truncation=0.5))
  np.testing.assert_array_equal(arrays["images"], np.asarray(body["images"], np.uint8))
  plain = np.load(io.BytesIO(client.get("/api/generate?num=4&seed=3&class=2&format=npz").get_data()))
  assert client.get("/api/generate?num=4&seed=3&class=2&format=json").json["truncation"] == 0.0
  assert np.abs(plain["images"].astype(int) - arrays["images"].astype(int)).mean() > 1
  walk = np.load(io.BytesIO(client.get("/api/walk?seed_a=3&seed_b=4&frames=3&truncation=0.5&format=npz")
                            .get_data()))
  np.testing.assert_array_equal(walk["noise"][0], arrays["noise"][0])  # Starts at image 0 of seed 3's grid.
  assert np.abs(walk["noise"]).max() <= 0.5 + 1e-6


def test_a_run_trained_with_truncation_is_served_truncated_unless_asked_otherwise(tmp_path, tmp_path_factory):
  workdir = workdirs.with_truncation("conditional", tmp_path_factory, 0.5, tmp_path / "truncated")
  client = app_lib.create_app(model_lib.from_workdir(workdir)).test_client()
  assert client.get("/api/info").json["truncation"] == 0.5

  def npz(query):
    return np.load(io.BytesIO(client.get(f"/api/{query}&format=npz").get_data()))

  default, asked = npz("generate?num=4&seed=3&class=2"), npz("generate?num=4&seed=3&class=2&truncation=0.5")
  np.testing.assert_array_equal(default["noise"], sampling.noise(4, workdirs.LATENT_DIM, 3, truncation=0.5))
  np.testing.assert_array_equal(default["images"], asked["images"])
  assert client.get("/api/generate?num=4&seed=3&class=2&format=json").json["truncation"] == 0.5
  none = npz("generate?num=4&seed=3&class=2&truncation=0")
  np.testing.assert_array_equal(none["noise"], sampling.noise(4, workdirs.LATENT_DIM, 3, truncation=0.0))
  assert np.abs(none["images"].astype(int) - default["images"].astype(int)).mean() > 1
  walk = npz("walk?seed_a=3&seed_b=4&frames=3")
  np.testing.assert_array_equal(walk["noise"][0], default["noise"][0])
  assert np.abs(walk["noise"]).max() <= 0.5 + 1e-6


def test_same_seed_same_bytes(apps):
  for app in apps.values():
    client = app.test_client()
    first = client.get("/api/generate?num=9&seed=123").get_data()
    assert client.get("/api/generate?num=9&seed=123").get_data() == first
    assert client.get("/api/generate?num=9&seed=124").get_data() != first


def test_a_class_is_asked_for_by_id_or_by_the_name_the_run_recorded(tmp_path, tmp_path_factory):
  """class=three is class 3 where the run named its classes (class folders); /api/info lists the names; an unknown
  name is a 400 that lists them."""
  workdir = str(tmp_path / "named")
  shutil.copytree(workdirs.trained("conditional", tmp_path_factory), workdir)
  names = ["zero", "one", "two", "three", "", "", "", "", "", "nine"]
  workdir_lib.write_class_names(workdir, names)
  client = app_lib.create_app(model_lib.from_workdir(workdir)).test_client()
  assert client.get("/api/info").json["class_names"] == names
  by_name = client.get("/api/generate?num=2&seed=8&class=three&format=json").json
  assert by_name["labels"] == [3, 3]
  assert by_name["images"] == client.get("/api/generate?num=2&seed=8&class=3&format=json").json["images"]
  response = client.get("/api/generate?class=four")
  assert response.status_code == 400 and response.json == {
      "error": "class must be 'any' or a class id from 0 to 9, or a class name (zero, one, two, three, nine), got "
               "'four'", "parameter": "class"}
  # Class folders named by digits: the name wins over the id it spells, as in `sample --label` (tests/test_sample.py).
  workdir_lib.write_class_names(workdir, ["1", "10", "2"] + [""] * 7)
  client = app_lib.create_app(model_lib.from_workdir(workdir)).test_client()
  assert [client.get(f"/api/generate?num=1&class={c}&format=json").json["labels"] for c in ("10", "2", "0", "9")] == [
      [1], [2], [0], [9]]


def test_json_and_npz_hold_the_png_images(client):
  grid = _png(client.get("/api/generate?num=3&seed=8&class=7"))
  body = client.get("/api/generate?num=3&seed=8&class=7&format=json").json
  images = np.array(body["images"], np.uint8)
  assert body["shape"] == [3, 28, 28, 1] and body["labels"] == [7, 7, 7] and body["seed"] == 8
  np.testing.assert_array_equal(sampling.tile(images, body["grid"][1]), grid)
  response = client.get("/api/generate?num=3&seed=8&class=7&format=npz")
  assert response.status_code == 200 and "attachment" in response.headers["Content-Disposition"]
  arrays = np.load(io.BytesIO(response.get_data()))
  np.testing.assert_array_equal(arrays["images"], images)
  np.testing.assert_array_equal(arrays["labels"], [7, 7, 7])
  assert arrays["noise"].shape == (3, workdirs.LATENT_DIM)
  assert images.std() > 5


def test_unconditional_json_and_npz_have_no_labels(apps):
  client = apps["unconditional"].test_client()
  body = client.get("/api/generate?num=2&seed=8&format=json").json
  assert body["labels"] is None and body["shape"] == [2, 28, 28, 1]
  arrays = np.load(io.BytesIO(client.get("/api/walk?frames=3&format=npz").get_data()))
  assert sorted(arrays.files) == ["images", "noise"]


@pytest.mark.parametrize("kind, path, parameter, message", [
    ("conditional", "generate?num=0", "num", "num must be an integer from 1 to 64, got 0"),
    ("conditional", "generate?num=65", "num", "num must be an integer from 1 to 64, got 65"),
    ("conditional", "generate?num=abc", "num", "got 'abc'"),
    ("conditional", "generate?num=2.5", "num", "got '2.5'"),
    ("conditional", "generate?seed=abc", "seed", "seed must be an integer from 0 to 4294967295, got 'abc'"),
    ("conditional", "generate?seed=-1", "seed", "got -1"),
    ("conditional", "generate?seed=4294967296", "seed", "got 4294967296"),
    ("conditional", "generate?class=10", "class", "unknown class 10: this model has classes 0 to 9"),
    ("conditional", "generate?class=-1", "class", "unknown class -1"),
    ("conditional", "generate?class=seven", "class", "class must be 'any' or a class id from 0 to 9"),
    ("unconditional", "generate?class=3", "class", "this model is unconditional"),
    ("conditional", "generate?format=gif", "format", "format must be one of png, json, npz"),
    ("conditional", "generate?scale=9", "scale", "scale must be an integer from 1 to 8"),
    ("conditional", "generate?nmu=4", "nmu", "unknown parameter 'nmu'"),
    ("conditional", "generate?num=1&num=2", "num", "num is given 2 times"),
    ("conditional", "walk?frames=1", "frames", "frames must be an integer from 2 to 64"),
    ("conditional", "walk?frames=65", "frames", "got 65"),
    ("conditional", "walk?seed_a=x", "seed_a", "seed_a must be an integer"),
    ("conditional", "walk?seed_b=99999999999", "seed_b", "seed_b must be an integer"),
    ("conditional", "walk?class=12", "class", "unknown class 12"),
    ("conditional", "walk?seed=3", "seed", "unknown parameter 'seed'"),
    ("conditional", "generate?truncation=-0.5", "truncation", "truncation must be 0 (none) or a number up to 4, "
     "got -0.5"),
    ("conditional", "generate?truncation=5", "truncation", "got 5"),
    ("conditional", "walk?truncation=nan", "truncation", "got 'nan'"),
    ("conditional", "walk?truncation=half", "truncation", "got 'half'"),
    # Python's int() and float() take these; no client means them.
    ("conditional", "generate?num=1_0", "num", "got '1_0'"),
    ("conditional", "generate?num=%EF%BC%95", "num", "got '\uff15'"),  # A fullwidth 5.
    ("conditional", "generate?seed=%D9%A3", "seed", "got '\u0663'"),  # An Arabic-Indic 3.
    ("conditional", "generate?class=%EF%BC%95", "class", "class must be 'any' or a class id from 0 to 9"),
    ("conditional", "generate?truncation=0_5", "truncation", "got '0_5'"),
    ("conditional", "generate?seed=" + "9" * 5000, "seed", "got '" + "9" * 40 + "...'"),  # Quoted, not echoed whole.
])
def test_bad_parameter_is_400_naming_it(apps, kind, path, parameter, message):
  response = apps[kind].test_client().get(f"/api/{path}")
  assert response.status_code == 400
  assert response.json["parameter"] == parameter
  assert message in response.json["error"]
  assert "\n" not in response.json["error"]


def test_other_api_errors_are_json(client):
  response = client.get("/api/nothing")
  assert response.status_code == 404 and "error" in response.json
  response = client.post("/api/generate")
  assert response.status_code == 405 and "error" in response.json and "GET" in response.headers["Allow"]
  assert client.get("/nothing").status_code == 404


def test_eight_concurrent_requests_all_succeed(apps):
  app = apps["conditional"]
  queries = [f"num={n}&seed={s}&class={c}" for n, s, c in
             [(1, 1, 0), (16, 2, "any"), (5, 3, 4), (64, 4, "any"), (16, 2, "any"), (7, 5, 9), (32, 6, 1), (2, 7, 2)]]
  expected = [app.test_client().get(f"/api/generate?{q}").get_data() for q in queries]
  server = serving.make_server("127.0.0.1", 0, app, threaded=True)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  barrier = threading.Barrier(len(queries))

  def fetch(query):
    barrier.wait(timeout=30)  # All eight in flight together.
    with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/api/generate?{query}", timeout=60) as r:
      return r.status, r.read()

  try:
    with concurrent.futures.ThreadPoolExecutor(len(queries)) as pool:
      results = list(pool.map(fetch, queries))
  finally:
    server.shutdown()
    thread.join(timeout=10)
  assert [status for status, _ in results] == [200] * 8
  assert [body for _, body in results] == expected


class _Broken(model_lib.ServedModel):
  """A model whose generation fails (a bug, or TensorFlow running out of memory)."""

  def images(self, noise, labels):
    raise RuntimeError("out of memory")


def test_an_exception_inside_an_api_route_is_json_500():
  facts = dict(arch="mlp", dataset="mnist", step=0, ema=False, image_shape=[28, 28, 1], conditional=False,
               num_classes=0, latent_dim=4)
  app = app_lib.create_app(_Broken(lambda noise, labels: noise, facts))
  client = app.test_client()
  for path in ("/api/generate?num=2", "/api/walk?frames=2"):
    response = client.get(path)
    assert response.status_code == 500 and response.mimetype == "application/json"
    assert response.json == {"error": "internal error: RuntimeError; see the server's log"}
    assert response.headers["Cache-Control"] == "no-store"
  assert client.get("/api/info").status_code == 200  # The application itself keeps working.


def test_app_from_environment(monkeypatch, tmp_path_factory):
  monkeypatch.delenv("GAN_DIST_SAVED_MODEL", raising=False)
  monkeypatch.setenv("GAN_DIST_WORKDIR", workdirs.trained("unconditional", tmp_path_factory))
  monkeypatch.setenv("GAN_DIST_STEP", "1")
  assert app_lib.create_app_from_env().test_client().get("/api/info").json["arch"] == "mlp"
  monkeypatch.setenv("GAN_DIST_STEP", "latest")
  with pytest.raises(errors.UserError, match="GAN_DIST_STEP"):
    app_lib.create_app_from_env()
  with pytest.raises(errors.UserError, match="both given"):
    app_lib.load_model("W", "S")
  with pytest.raises(errors.UserError, match="nothing to serve"):
    app_lib.load_model("", "")
  with pytest.raises(errors.UserError, match="--step picks a checkpoint of a workdir; a --saved_model export"):
    app_lib.load_model("", "S", 3)
  with pytest.raises(errors.UserError, match="--best picks a checkpoint of a workdir; a --saved_model export"):
    app_lib.load_model("", "S", best=True)


def test_truncation_given_to_the_server_is_the_demo_s_default(tmp_path_factory):
  """`python -m gan_dist.serve --truncation=T` (ignored until 2026-12-05, even nan): T replaces the run's default."""
  workdir = workdirs.trained("unconditional", tmp_path_factory)
  client = app_lib.create_app(app_lib.load_model(workdir, truncation=0.5)).test_client()
  assert client.get("/api/info").json["truncation"] == 0.5
  default = client.get("/api/generate?num=2&seed=3&format=npz").data
  assert default == client.get("/api/generate?num=2&seed=3&format=npz&truncation=0.5").data
  assert default != client.get("/api/generate?num=2&seed=3&format=npz&truncation=0").data


def test_app_from_environment_serves_the_best_checkpoint(monkeypatch, tmp_path, tmp_path_factory):
  workdir = shutil.copytree(workdirs.trained("unconditional", tmp_path_factory), str(tmp_path / "workdir"))
  monkeypatch.delenv("GAN_DIST_SAVED_MODEL", raising=False)
  monkeypatch.setenv("GAN_DIST_WORKDIR", workdir)
  monkeypatch.setenv("GAN_DIST_STEP", "best")
  with pytest.raises(errors.UserError, match="no best checkpoint"):
    app_lib.create_app_from_env()
  helpers.keep_as_best(workdir, 1, helpers.scale_generators(0.5))
  best = app_lib.create_app_from_env().test_client().get("/api/generate?num=4&seed=3&format=npz")
  monkeypatch.setenv("GAN_DIST_STEP", "1")
  latest = app_lib.create_app_from_env().test_client().get("/api/generate?num=4&seed=3&format=npz")
  assert best.status_code == latest.status_code == 200
  best, latest = (np.load(io.BytesIO(r.data))["images"].astype(int) for r in (best, latest))
  assert np.abs(best - latest).mean() > 1


def test_app_from_environment_serves_a_saved_model(apps, monkeypatch, tmp_path, tmp_path_factory):
  path = exporter.export(workdirs.trained("conditional", tmp_path_factory), str(tmp_path / "export"))
  monkeypatch.delenv("GAN_DIST_WORKDIR", raising=False)
  monkeypatch.delenv("GAN_DIST_STEP", raising=False)
  monkeypatch.setenv("GAN_DIST_SAVED_MODEL", path)
  client = app_lib.create_app_from_env().test_client()
  info = client.get("/api/info").json
  assert (info["source"], info["arch"], info["step"], info["num_classes"]) == ("saved_model", "cgan_mlp", 1, 10)
  query = "/api/generate?num=12&seed=5&class=any"
  assert client.get(query).get_data() == apps["conditional"].test_client().get(query).get_data()
  monkeypatch.setenv("GAN_DIST_WORKDIR", "W")
  with pytest.raises(errors.UserError, match="both given"):
    app_lib.create_app_from_env()


def test_color_model(tmp_path):
  # An untrained 64x64 RGB workdir (no training needed to check shapes): the grid is a color PNG.
  cfg = config_lib.make_config(arch="dcgan64", workdir=str(tmp_path / "w"), strategy="one_device")
  state = state_lib.create_state(cfg, tf.distribute.get_strategy(), 0)
  tf.train.CheckpointManager(checkpoint_lib.make_checkpoint(state), workdir_lib.checkpoint_dir(cfg.workdir),
                             max_to_keep=1).save(checkpoint_number=0)
  workdir_lib.write_config(cfg, workdir_lib.flags_path(cfg.workdir))
  client = app_lib.create_app(model_lib.from_workdir(cfg.workdir)).test_client()
  assert client.get("/api/info").json["image_shape"] == [64, 64, 3]
  assert _png(client.get("/api/generate?num=6&seed=1")).shape == (2 * 64, 3 * 64, 3)
  assert _png(client.get("/api/walk?frames=3")).shape == (64, 3 * 64, 3)
