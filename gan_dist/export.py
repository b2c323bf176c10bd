"""Exports a trained generator for programs that do not have gan_dist (see `exporter` for both formats).

  python -m gan_dist.export --workdir=W [--format=saved_model] [--out=W/export] [--step=N | --best]
  python -m gan_dist.export --workdir=W --format=keras [--out=W/generator.keras] [--step=N | --best]
"""

from absl import flags

from gan_dist import cli
from gan_dist import exporter

# --out's default per format, inside the workdir.
DEFAULT_OUT = {"saved_model": "export", "keras": "generator.keras"}


def define_flags(fv: flags.FlagValues) -> None:
  """The flags of `python -m gan_dist.export`, besides the Config's (of which it reads --workdir)."""
  cli.define_checkpoint_flags(fv, "Export")
  cli.show_in_help(fv, ("workdir",))
  flags.DEFINE_enum("format", "saved_model", exporter.FORMATS, "saved_model: a SavedModel directory with a "
                    "serving_default signature (noise [+ labels] -> uint8 images); keras: a .keras file of the "
                    "float32 generator.", flag_values=fv)
  flags.DEFINE_string("out", "", "Where to write the export (default: <workdir>/export for saved_model, "
                      "<workdir>/generator.keras for keras).", flag_values=fv)


def output_path(workdir: str, fmt: str, out: str = "") -> str:
  """`out`, or the default of format `fmt` (one of exporter.FORMATS) inside `workdir`."""
  return out or f"{workdir.rstrip('/')}/{DEFAULT_OUT[fmt]}"


def main(argv) -> None:
  del argv  # cli.parse_flags refused positional arguments.
  fv = cli.FLAGS
  out = output_path(fv.workdir, fv.format, fv.out)
  exporter.export(fv.workdir, out, fv.step, fv.format, fv.best)
  print(f"Exported the generator of {fv.workdir} ({fv.format}) to {out}")


def run():
  cli.run(main, define_flags)


if __name__ == "__main__":
  run()
