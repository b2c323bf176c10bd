"""Packs an image folder into ArrayRecord shards for clusters and buckets (data.write_pack; datasets/packed.py).

  python -m gan_dist.pack --data_dir=FOLDER --out=DIR [--shard_size=10000]
  python -m gan_dist.main --dataset=packed --data_dir=DIR ...     (or --dataset=folder: a pack is recognised)

Rerunning an interrupted packing resumes it (same folder listing and --shard_size) or starts over (another listing
or --shard_size); a complete pack of the same listing is left as it is, and refused with another --shard_size.
"""

from absl import flags

from gan_dist import cli
from gan_dist import data
from gan_dist import errors


def define_flags(fv: flags.FlagValues) -> None:
  """The flags of `python -m gan_dist.pack`, besides the Config's (of which it reads --data_dir)."""
  flags.DEFINE_string("out", "", "The pack directory to write (any TensorFlow filesystem).", flag_values=fv)
  flags.DEFINE_integer("shard_size", data.SHARD_SIZE, "Images per shard.", lower_bound=1, flag_values=fv)
  cli.show_in_help(fv, ("data_dir",))


def main(argv) -> None:
  del argv  # cli.parse_flags refused positional arguments.
  fv = cli.FLAGS
  if not fv.data_dir or not fv.out:
    raise errors.UserError("python -m gan_dist.pack needs --data_dir=FOLDER and --out=DIR")
  # write_pack prints the summary itself: only it knows whether it packed anything or left a complete pack alone.
  data.write_pack(fv.data_dir, fv.out, fv.shard_size, progress=print)


def run():
  cli.run(main, define_flags)


if __name__ == "__main__":
  run()
