"""Serves the demo page and HTTP API of a trained generator with waitress, a production WSGI server.

  python -m gan_dist.serve --workdir=W [--step=N | --best] [--host=127.0.0.1] [--port=8000] [--threads=4]
  python -m gan_dist.serve --saved_model=DIR [...]

Needs the `serve` extra: pip install -e '.[serve]'. --port=0 picks a free port; the line "Serving ... at URL"
says which, once the server listens.
"""

from absl import flags

from gan_dist import cli
from gan_dist import errors

try:  # Flask and waitress are an optional extra: without them, main says how to install them.
  import waitress
  from gan_dist.serve import app as app_lib
  _MISSING = None
except ImportError as e:
  _MISSING = e


def define_flags(fv: flags.FlagValues) -> None:
  """The flags of `python -m gan_dist.serve`, besides the Config's (of which it reads --workdir, and --truncation: the
  demo's default truncation instead of the run's)."""
  flags.DEFINE_string("saved_model", "", "Serve this SavedModel export (python -m gan_dist.export) instead of a "
                      "--workdir.", flag_values=fv)
  cli.define_checkpoint_flags(fv, "Serve (of --workdir)")
  cli.show_in_help(fv, ("workdir", "truncation"))
  flags.DEFINE_string("host", "127.0.0.1", "Address to listen on (0.0.0.0: every interface; put a reverse proxy "
                      "in front of it for the public).", flag_values=fv)
  flags.DEFINE_integer("port", 8000, "Port to listen on; 0 picks a free one.", lower_bound=0, upper_bound=65535,
                       flag_values=fv)
  flags.DEFINE_integer("threads", 4, "Request threads of the server (generation itself runs one batch at a time).",
                       lower_bound=1, flag_values=fv)


def main(argv) -> None:
  del argv  # cli.parse_flags refused positional arguments.
  if _MISSING is not None:
    raise errors.UserError(f"the demo server needs the serve extra ({_MISSING}); install it with "
                           "pip install -e '.[serve]'")
  fv = cli.FLAGS
  # --workdir has a default (/tmp/gan_dist); only a --workdir actually given competes with --saved_model.
  workdir = fv.workdir if fv["workdir"].present else ""
  model = app_lib.load_model(workdir, fv.saved_model, fv.step, fv.best,
                             truncation=fv.truncation if fv["truncation"].present else None)
  application = app_lib.create_app(model)
  try:
    server = waitress.create_server(application, host=fv.host, port=fv.port, threads=fv.threads)
  except OSError as e:
    raise errors.UserError(f"cannot listen on {fv.host}:{fv.port} ({e.strerror or e}); pick another --port, or "
                           "--port=0 for a free one") from None
  facts = model.facts
  what = (f"{facts['arch']} ({facts['dataset']}, step {facts['step']}{', EMA' if facts['ema'] else ''}"
          f"{', the best checkpoint' if facts.get('best_checkpoint') else ''}) from "
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
  cli.run(main, define_flags)


if __name__ == "__main__":
  run()
