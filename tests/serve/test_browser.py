"""The demo page in a real browser: headless Chromium against `python -m gan_dist.serve` started on localhost.

Needs Debian's `chromium` and `chromium-driver` and the selenium package (`.ci/run` installs them); elsewhere the
test is skipped, but in CI (CI set) a missing browser fails it. GAN_DIST_UPDATE_DOCS=1 writes the screenshot to
docs/demo.png (GAN_DIST_DEMO_WORKDIR=W serves a better-trained conditional workdir for it).
"""

import os
import select
import shutil
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import tensorflow as tf

from gan_dist import workdir as workdir_lib
from tests import subprocs
from tests.serve import workdirs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", ""]
RUN_TRUNCATION = 0.33  # The served run's --truncation: any number, not only steps of 0.05; the page starts from it.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                  "--window-size=1100,1500")


def _missing_browser():
  missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
  try:
    import selenium  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    missing.append("the selenium package (pip install -e '.[test]')")
  return missing


def _require_browser():
  missing = _missing_browser()
  if missing:
    message = (f"browser test needs {', '.join(missing)}: apt-get install chromium chromium-driver (.ci/run "
               "installs them)")
    if os.environ.get("CI"):
      pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def browser(tmp_path):
  _require_browser()
  from selenium import webdriver  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.chrome.service import Service  # pylint: disable=g-import-not-at-top
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for flag in CHROMIUM_FLAGS:
    options.add_argument(flag)
  options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
  options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
  driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
  try:
    yield driver
  finally:
    driver.quit()


@pytest.fixture
def server(tmp_path, tmp_path_factory):
  """Starts `python -m gan_dist.serve --port=0` on a conditional workdir of a run with --truncation=0.33; yields a
  function that waits for its URL and returns it (the browser starts meanwhile: ask for this fixture first); stops
  it."""
  _require_browser()  # Before training and starting anything.
  workdir = os.environ.get("GAN_DIST_DEMO_WORKDIR")
  if not workdir:  # Named classes, as class folders give them (the run's IDX data named none); class 9 left unnamed.
    workdir = workdirs.with_truncation("conditional", tmp_path_factory, RUN_TRUNCATION, tmp_path / "workdir")
    workdir_lib.write_class_names(workdir, DIGIT_NAMES)
  with open(tmp_path / "server.log", "wb") as log:
    process = subprocess.Popen([sys.executable, "-m", "gan_dist.serve", f"--workdir={workdir}", "--port=0"],
                               stdout=subprocess.PIPE, stderr=log, cwd=REPO, env=subprocs.env())
  found = []

  def url():
    if not found:
      deadline, output = time.time() + 180, b""
      while not found and time.time() < deadline and process.poll() is None:
        if select.select([process.stdout], [], [], 1.0)[0]:
          line = process.stdout.readline()
          output += line
          if b" at http://" in line:
            found.append(line.split(b" at ")[1].split()[0].decode())
      assert found, f"server did not start: {output!r} {(tmp_path / 'server.log').read_text()[-2000:]}"
    return found[0]

  try:
    yield url
  finally:
    process.terminate()
    try:
      process.wait(timeout=20)
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()
    process.stdout.close()


def _wait(driver, condition, what, timeout=90):
  from selenium.webdriver.support.ui import WebDriverWait  # pylint: disable=g-import-not-at-top
  WebDriverWait(driver, timeout).until(lambda d: d.execute_script(condition), message=f"waiting for {what}")


def _not_blank(png: bytes) -> np.ndarray:
  image = tf.io.decode_png(png).numpy().astype(np.float32)
  assert image.std() > 5, "blank screenshot"
  return image


@pytest.mark.slow
def test_pick_a_class_and_new_samples(server, browser, tmp_path):
  server_url = server()
  from selenium.webdriver.common.by import By  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.support.ui import Select  # pylint: disable=g-import-not-at-top
  browser.get(server_url)
  _wait(browser, "return document.getElementById('grid').dataset.state === 'ready'", "the first grid")
  facts = browser.find_element(By.ID, "facts").text
  assert "ARCHITECTURE" in facts.upper() and "STEP" in facts.upper()
  if not os.environ.get("GAN_DIST_DEMO_WORKDIR"):
    assert "cgan_mlp" in facts and "mnist" in facts and "yes (decay 0.9)" in facts and "±0.33" in facts
    assert browser.find_element(By.ID, "truncation").get_attribute("value") == str(RUN_TRUNCATION)
  first_seed = browser.find_element(By.ID, "grid").get_attribute("data-seed")

  if not os.environ.get("GAN_DIST_DEMO_WORKDIR"):
    options = [o.text for o in Select(browser.find_element(By.ID, "class")).options]
    assert options == ["any"] + [f"{k} ({name})" for k, name in enumerate(DIGIT_NAMES[:9])] + ["9"], options
  Select(browser.find_element(By.ID, "class")).select_by_value("3")
  browser.find_element(By.ID, "new-samples").click()
  _wait(browser, f"""const img = document.getElementById('grid');
      return img.dataset.state === 'ready' && img.dataset.class === '3' && img.dataset.seed !== '{first_seed}'
          && img.dataset.seed === document.getElementById('seed').value && img.complete && img.naturalWidth > 0""",
        "the new grid of class 3")
  # Show, with a seed typed in and the run's truncation in its box (0.33: a step of 0.05 made the form invalid).
  browser.execute_script("document.getElementById('seed').value = '42';")
  browser.find_element(By.ID, "show").click()
  _wait(browser, """const img = document.getElementById('grid');
      return img.dataset.state === 'ready' && img.dataset.seed === '42' && img.complete && img.naturalWidth > 0""",
        "the grid of seed 42")
  grid = browser.find_element(By.ID, "grid")
  seed = grid.get_attribute("data-seed")
  assert ("of class 3 (three)" if not os.environ.get("GAN_DIST_DEMO_WORKDIR") else "of class 3") in \
      browser.find_element(By.ID, "caption").text
  assert not browser.find_element(By.ID, "error").is_displayed()
  assert f"seed={seed}" in browser.current_url and "class=3" in browser.current_url

  # The picture the page shows is the API's grid for that class and seed, pixel for pixel.
  def shown_is_the_api_grid(query):
    shown = browser.execute_script("""const img = document.getElementById('grid');
        const canvas = document.createElement('canvas');
        canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
        const context = canvas.getContext('2d');
        context.drawImage(img, 0, 0);
        const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
        const red = [];
        for (let i = 0; i < data.length; i += 4) red.push(data[i]);
        return [canvas.width, canvas.height, red];""")
    with urllib.request.urlopen(f"{server_url}api/generate?{query}", timeout=60) as response:
      expected = tf.io.decode_png(response.read()).numpy()[..., 0]
    assert (shown[0], shown[1]) == (4 * 28, 4 * 28)
    np.testing.assert_array_equal(np.array(shown[2], np.uint8).reshape(expected.shape), expected)
    assert expected.std() > 0
    return expected

  plain = shown_is_the_api_grid(f"num=16&seed={seed}&class=3")  # The API's default: the run's truncation.
  if not os.environ.get("GAN_DIST_DEMO_WORKDIR"):
    np.testing.assert_array_equal(shown_is_the_api_grid(f"num=16&seed={seed}&class=3&truncation={RUN_TRUNCATION}"),
                                  plain)
  download = browser.find_element(By.ID, "download").get_attribute("href")
  assert f"seed={seed}" in download and "class=3" in download

  # A truncation typed in redraws the grid from truncated noise (the API's grid with truncation=0.5).
  browser.execute_script("""const box = document.getElementById('truncation');
      box.value = '0.5'; box.dispatchEvent(new Event('change'));""")
  _wait(browser, """const img = document.getElementById('grid');
      return img.dataset.state === 'ready' && img.dataset.truncation === '0.5' && img.complete""", "the truncated grid")
  truncated = shown_is_the_api_grid(f"num=16&seed={seed}&class=3&truncation=0.5")
  assert np.abs(truncated.astype(int) - plain.astype(int)).mean() > 1
  assert "truncated to ±0.5" in browser.find_element(By.ID, "caption").text
  assert "truncation=0.5" in browser.current_url
  assert "truncation=0.5" in browser.find_element(By.ID, "download").get_attribute("href")

  _wait(browser, "return document.getElementById('walk-strip').dataset.state === 'ready'", "the latent walk")
  _not_blank(grid.screenshot_as_png)
  screenshot = browser.get_screenshot_as_png()
  _not_blank(screenshot)
  path = os.path.join(REPO, "docs", "demo.png") if os.environ.get("GAN_DIST_UPDATE_DOCS") else tmp_path / "demo.png"
  with open(path, "wb") as f:
    f.write(screenshot)
  severe = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
  assert not severe, severe
