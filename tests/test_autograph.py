"""The rule of WORKSPACE.md "No autograph", read from the package's source with `ast`: every tf.function of gan_dist
is traced with autograph=False, and every function handed to tf.data (map, flat_map, interleave, filter) goes
through `graph_fn` (datasets/base.py)."""

import ast

from tests import test_layering

TF_DATA_METHODS = ("map", "flat_map", "interleave", "filter")
# The keyword each of them takes its function by (tf.data's own names), for calls that name it.
FUNCTION_KEYWORDS = ("map_func", "predicate")


def _is_tf_function(node) -> bool:
  """`tf.function` or `tensorflow.function`, called or as a decorator."""
  if isinstance(node, ast.Call):
    node = node.func
  return (isinstance(node, ast.Attribute) and node.attr == "function" and isinstance(node.value, ast.Name)
          and node.value.id in ("tf", "tensorflow"))


def _autograph_off(call: ast.Call) -> bool:
  return any(k.arg == "autograph" and isinstance(k.value, ast.Constant) and k.value.value is False
             for k in call.keywords)


def _is_graph_fn(node) -> bool:
  return isinstance(node, ast.Call) and (
      (isinstance(node.func, ast.Name) and node.func.id == "graph_fn")
      or (isinstance(node.func, ast.Attribute) and node.func.attr == "graph_fn"))


def violations(source: str):
  """[(line, what)] of the tf.functions with autograph and the tf.data functions not wrapped in graph_fn."""
  found = []
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      # A bare @tf.function; a called one, @tf.function(...), is a Call below.
      found += [(d.lineno, "@tf.function without autograph=False") for d in node.decorator_list
                if _is_tf_function(d) and not isinstance(d, ast.Call)]
    if isinstance(node, ast.Call):
      if _is_tf_function(node.func) and not _autograph_off(node):
        found.append((node.lineno, "tf.function(...) without autograph=False"))
      if isinstance(node.func, ast.Attribute) and node.func.attr in TF_DATA_METHODS:
        handed = node.args[:1] + [k.value for k in node.keywords if k.arg in FUNCTION_KEYWORDS]
        if handed and not _is_graph_fn(handed[0]):
          found.append((node.lineno, f".{node.func.attr}(...) of a function not wrapped in graph_fn"))
  return found


def test_every_tf_function_and_tf_data_function_of_the_package_is_traced_without_autograph():
  problems = []
  for path in test_layering.package_modules().values():
    with open(path) as f:
      problems += [f"{path}:{line}: {what}" for line, what in violations(f.read())]
  assert not problems, "\n".join(problems)


def test_the_check_finds_each_kind_of_violation():
  source = "\n".join([
      "@tf.function",
      "def a(): pass",
      "b = tf.function(lambda x: x)",
      "c = tf.function(lambda x: x, autograph=True)",
      "d = dataset.map(lambda x: x)",
      "e = dataset.interleave(fn, cycle_length=2)",
      "@tf.function(autograph=False)",
      "def ok(): pass",
      "f = tf.function(lambda x: x, jit_compile=True, autograph=False)",
      "g = dataset.map(graph_fn(lambda x: x)).flat_map(data.graph_fn(fn))",
      "h = dataset.map(map_func=lambda x: x)",
      "i = dataset.filter(predicate=fn)",
      "@tensorflow.function",
      "def j(): pass",
      "@tf.function(jit_compile=True)",
      "def k(): pass",
      "m = dataset.map(map_func=graph_fn(fn), num_parallel_calls=2)",
  ])
  assert sorted(line for line, _ in violations(source)) == [1, 3, 4, 5, 6, 11, 12, 13, 15]
