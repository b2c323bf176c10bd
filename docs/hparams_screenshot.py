r"""Screenshot of TensorBoard's HParams table of a folder of runs, in headless Chromium on localhost.

  python3 docs/hparams_screenshot.py RUNS_DIR [OUT.png] [--show=arch,batch_size,g_lr,...]

Serves RUNS_DIR with launch/tensorboard.sh on a free local port, opens the HParams tab with Debian's chromium and
chromedriver (selenium, as tests/serve/test_browser.py), shows only the --show hyperparameter columns (TensorBoard
shows the first five alphabetically, which here are the ADA options) and every metric, and saves the page.
"""

import os
import socket
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if HERE not in sys.path:
  sys.path.insert(0, HERE)

from selenium import webdriver  # pylint: disable=g-import-not-at-top
from selenium.webdriver.chrome.service import Service

from gan_dist import cli  # pylint: disable=g-import-not-at-top

DEFAULT_SHOW = "arch,batch_size,g_lr,d_lr,ema_decay,loss,train_steps"
# Every paper-checkbox of the page, through the shadow roots of TensorBoard's Polymer dashboard.
FIND_CHECKBOXES = """
const found = [];
function walk(node) {
  if (!node) return;
  if (node.tagName === 'PAPER-CHECKBOX') found.push(node);
  if (node.shadowRoot) walk(node.shadowRoot);
  for (const child of node.children || []) walk(child);
}
walk(document.documentElement);
return found;
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


USAGE = "usage: hparams_screenshot.py RUNS_DIR [OUT.png] [--show=NAME,...]"


def main(argv):
  # --help prints the usage: read as RUNS_DIR it would start TensorBoard and Chromium on a folder that is not there.
  if any(a in ("-h", "--help", "--helpfull") for a in argv):
    print(__doc__)
    return
  args = [a for a in argv if not a.startswith("--show=")]
  show = next((a.split("=", 1)[1] for a in argv if a.startswith("--show=")), DEFAULT_SHOW).split(",")
  unknown = [a for a in args if a.startswith("-")]
  if unknown:
    sys.exit(cli.fail(f"unknown option {unknown[0]}; {USAGE}"))
  if not args or len(args) > 2:
    sys.exit(cli.fail(USAGE))
  if "://" not in args[0] and not os.path.isdir(args[0]):  # A bucket (gs://) is TensorBoard's to read.
    sys.exit(cli.fail(f"RUNS_DIR {args[0]} is not a folder; {USAGE}"))
  runs, out = args[0], args[1] if len(args) > 1 else os.path.join(HERE, "docs", "hparams.png")
  port = _free_port()
  server = subprocess.Popen([os.path.join(HERE, "launch", "tensorboard.sh"), runs],
                            env=dict(os.environ, PORT=str(port)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    for _ in range(60):
      try:
        urllib.request.urlopen(f"http://localhost:{port}/data/logdir", timeout=2)
        break
      except OSError:
        time.sleep(1)
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=2000,520"):
      options.add_argument(flag)
    browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
      browser.get(f"http://localhost:{port}/#hparams")
      deadline = time.monotonic() + 60
      while time.monotonic() < deadline and not browser.execute_script(FIND_CHECKBOXES):
        time.sleep(1)
      time.sleep(3)  # The table fills after the checkboxes appear.
      hparams_done = False
      for box in browser.execute_script(FIND_CHECKBOXES):
        name = (box.text or browser.execute_script("return arguments[0].textContent", box)).strip()
        if name.startswith("hparams/"):
          hparams_done = True  # Metrics follow the hyperparameters: keep them all.
        if hparams_done or not name:
          continue
        if browser.execute_script("return arguments[0].checked", box) != (name in show):
          browser.execute_script("arguments[0].click()", box)
      time.sleep(3)
      browser.save_screenshot(out)
    finally:
      browser.quit()
  finally:
    server.terminate()
    server.wait(timeout=30)
  print(f"wrote {out}")


if __name__ == "__main__":
  main(sys.argv[1:])
