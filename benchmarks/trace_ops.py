r"""Where the time of a train step goes, from two `--profile_steps` traces: CPU time per TensorFlow op type, side by
side.

  python3 -m gan_dist.main --flagfile=configs/faces64.cfg --data_dir=FOLDER --train_steps=30 --steps_per_loop=1 \
      --profile_steps=21,25 --strategy=one_device --workdir=/tmp/prof1
  python3 -m gan_dist.main ... --strategy=mirrored --num_cpu_replicas=2 --workdir=/tmp/prof2
  python3 benchmarks/trace_ops.py /tmp/prof1 /tmp/prof2

Reads each workdir's newest `tensorboard/plugins/profile/*/*.xplane.pb` (or an .xplane.pb given directly), sums the
durations of the events on the host's TensorFlow compute threads by op type (the part of the event name after its
last ':'), and prints the wall span of the traced steps and a table of the op types whose CPU time changed most from
the first trace to the second (milliseconds, event counts). CPU time is summed over threads, so it exceeds the span.
"""

import collections
import os
import sys
from typing import Dict, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # pylint: disable=g-import-not-at-top
from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=g-direct-tensorflow-import

from gan_dist import cli  # pylint: disable=g-import-not-at-top

HOST_PLANE = "/host:CPU"
COMPUTE_LINE = "tf_Compute"  # The executor's op threads; other host lines are tf.data, Python and the runtime.


def trace_path(path: str) -> str:
  """`path` itself if it is an .xplane.pb, else the newest one under PATH/tensorboard/plugins/profile/."""
  if path.endswith(".xplane.pb"):
    return path
  found = sorted(tf.io.gfile.glob(f"{path.rstrip('/')}/tensorboard/plugins/profile/*/*.xplane.pb"))
  if not found:
    sys.exit(cli.fail(f"no profiler trace under {path}/tensorboard/plugins/profile (run with --profile_steps)"))
  return found[-1]


def op_times(space: xplane_pb2.XSpace) -> Tuple[Dict[str, float], Dict[str, int], float]:
  """({op type: CPU milliseconds}, {op type: events}, wall milliseconds from the first to the last event)."""
  plane = next((p for p in space.planes if p.name == HOST_PLANE), None)
  if plane is None:
    sys.exit(cli.fail(f"the trace has no {HOST_PLANE} plane"))
  ms, count = collections.Counter(), collections.Counter()
  first, last = float("inf"), float("-inf")
  for line in plane.lines:
    if not line.name.startswith(COMPUTE_LINE):
      continue
    for event in line.events:
      op = plane.event_metadata[event.metadata_id].name.rsplit(":", 1)[-1]
      ms[op] += event.duration_ps / 1e9
      count[op] += 1
      start = line.timestamp_ns * 1e3 + event.offset_ps
      first, last = min(first, start), max(last, start + event.duration_ps)
  return dict(ms), dict(count), (last - first) / 1e9 if count else 0.0


def read(path: str) -> xplane_pb2.XSpace:
  space = xplane_pb2.XSpace()
  with tf.io.gfile.GFile(trace_path(path), "rb") as f:
    space.ParseFromString(f.read())
  return space


def table(a, b, rows: int = 15) -> str:
  """Markdown: the op types whose CPU time changed most from trace a to trace b (op_times results)."""
  (ms_a, n_a, span_a), (ms_b, n_b, span_b) = a, b
  lines = [f"wall span of the traced steps: {span_a:.0f} ms -> {span_b:.0f} ms ({span_b / max(span_a, 1e-9):.2f}x); "
           f"CPU time of all ops: {sum(ms_a.values()):.0f} ms -> {sum(ms_b.values()):.0f} ms",
           "", "| op type | first: ms (events) | second: ms (events) | change ms |", "| --- | --- | --- | --- |"]
  ops = sorted(set(ms_a) | set(ms_b), key=lambda op: -abs(ms_b.get(op, 0.0) - ms_a.get(op, 0.0)))
  for op in ops[:rows]:
    lines.append(f"| {op} | {ms_a.get(op, 0.0):.0f} ({n_a.get(op, 0)}) | {ms_b.get(op, 0.0):.0f} ({n_b.get(op, 0)}) | "
                 f"{ms_b.get(op, 0.0) - ms_a.get(op, 0.0):+.0f} |")
  return "\n".join(lines)


def main(argv):
  if argv and argv[0] in ("-h", "--help", "-help", "--helpfull"):
    print(__doc__)
    return
  if len(argv) != 2:
    sys.exit(cli.fail("usage: trace_ops.py WORKDIR_OR_XPLANE_A WORKDIR_OR_XPLANE_B"))
  print(table(op_times(read(argv[0])), op_times(read(argv[1]))))


if __name__ == "__main__":
  main(sys.argv[1:])
