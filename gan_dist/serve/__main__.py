"""Serves the demo page and HTTP API of a trained generator with waitress, a production WSGI server.

  python -m gan_dist.serve --workdir=W [--step=N] [--host=127.0.0.1] [--port=8000] [--threads=4]
  python -m gan_dist.serve --saved_model=DIR [...]

Needs the `serve` extra: pip install -e '.[serve]'. --port=0 picks a free port; the line "Serving ... at URL"
says which, once the server listens.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from gan_dist import errors  # pylint: disable=g-import-not-at-top
from gan_dist import flags as gan_flags


def define_flags(fv) -> None:
  """Flags of `python -m gan_dist.serve` (on top of --workdir)."""
  gan_flags.define_serve_flags(fv)


def main(argv):
  del argv
  fv = gan_flags.FLAGS
  try:
    import waitress  # pylint: disable=g-import-not-at-top
    from gan_dist.serve import app as app_lib  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise errors.UserError(f"the demo server needs the serve extra ({e}); install it with "
                           "pip install -e '.[serve]'") from None
  workdir = fv.workdir if fv["workdir"].present else ""
  model = app_lib.load_model(workdir, fv.saved_model, fv.step)
  application = app_lib.create_app(model)
  try:
    server = waitress.create_server(application, host=fv.host, port=fv.port, threads=fv.threads)
  except OSError as e:
    raise errors.UserError(f"cannot listen on {fv.host}:{fv.port} ({e.strerror or e}); pick another --port, or "
                           "--port=0 for a free one") from None
  facts = model.facts
  what = (f"{facts['arch']} ({facts['dataset']}, step {facts['step']}{', EMA' if facts['ema'] else ''}) from "
          f"{workdir or fv.saved_model}")
  host = f"[{server.effective_host}]" if ":" in str(server.effective_host) else server.effective_host
  print(f"Serving {what} at http://{host}:{server.effective_port}/ (Ctrl-C stops)", flush=True)
  try:
    server.run()
  except KeyboardInterrupt:
    pass
  finally:
    server.close()


def run():
  gan_flags.run_tool(main, define_flags)


if __name__ == "__main__":
  sys.exit(run())
