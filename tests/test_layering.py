"""The import graph of gan_dist follows the layers written in WORKSPACE.md.

The layer table is read from WORKSPACE.md itself (the fenced ```layers block), so the map and the rule cannot
drift apart. Every module of the package must be in it; a module may import modules of lower layers, or of its own
layer as long as there is no cycle; every gan_dist import is at module level (no lazy import to dodge a cycle); only
the command-line layers read absl's FLAGS.
"""

import ast
import fnmatch
import os
import re
from typing import Dict, List, Set, Tuple

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "gan_dist")


def read_layers(text: str) -> List[Tuple[str, List[str]]]:
  """[(layer name, [module patterns])], lowest first, from the ```layers block of WORKSPACE.md.

  Each line: `<layer name>: <module> <module> ...`; a pattern `pkg.*` matches the modules of a subpackage.
  """
  match = re.search(r"```layers\n(.*?)```", text, re.S)
  assert match, "WORKSPACE.md has no ```layers block"
  layers = []
  for line in match.group(1).splitlines():
    line = line.split("#", 1)[0].strip()
    if line:
      name, modules = line.split(":", 1)
      layers.append((name.strip(), modules.split()))
  return layers


def package_modules() -> Dict[str, str]:
  """{dotted name relative to gan_dist ("" for the package itself): path} of every module of the package."""
  found = {}
  for root, _, names in os.walk(PACKAGE):
    for name in names:
      if not name.endswith(".py"):
        continue
      rel = os.path.relpath(os.path.join(root, name), PACKAGE)[:-3].replace(os.sep, ".")
      found["" if rel == "__init__" else rel.removesuffix(".__init__")] = os.path.join(root, name)
  return found


def imports_of(path: str, modules: Dict[str, str], own: str) -> List[Tuple[str, int, bool]]:
  """[(imported gan_dist module, line, at module level)] of the file at `path` (module `own`)."""
  tree = ast.parse(open(path, encoding="utf-8").read())
  top = {id(node) for node in tree.body}
  for node in tree.body:  # `if TYPE_CHECKING:`/`try:` blocks at module level count as module level.
    if isinstance(node, (ast.If, ast.Try)):
      top |= {id(n) for n in ast.walk(node)}
  package = own if os.path.basename(path) == "__init__.py" else own.rpartition(".")[0]
  found = []
  for node in ast.walk(tree):
    names = []
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = package.split(".") if package else []
        base = base[:len(base) - (node.level - 1)]
        stem = ".".join(base + ([node.module] if node.module else []))
        stem = f"gan_dist.{stem}" if stem else "gan_dist"
      else:
        stem = node.module or ""
      for alias in node.names:
        candidate = f"{stem}.{alias.name}"
        rel = candidate[len("gan_dist."):] if candidate.startswith("gan_dist.") else None
        names.append(candidate if rel is not None and rel in modules else stem)
    for name in names:
      if name == "gan_dist" or name.startswith("gan_dist."):
        rel = name[len("gan_dist."):] if name != "gan_dist" else ""
        while rel and rel not in modules:  # `import gan_dist.models.dcgan.build` style: the module part.
          rel = rel.rpartition(".")[0]
        found.append((rel, node.lineno, id(node) in top))
  return found


def layer_of(module: str, layers) -> int:
  module = module or "gan_dist"  # The package's own __init__.
  for index, (_, patterns) in enumerate(layers):
    if any(module == p or (p.endswith(".*") and fnmatch.fnmatch(module, p)) for p in patterns):
      return index
  return -1


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
  """One cycle of `graph` as [a, b, ..., a], or [] if it has none."""
  state, stack = {}, []

  def visit(node):
    state[node] = 1
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 1:
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state:
        cycle = visit(nxt)
        if cycle:
          return cycle
    stack.pop()
    state[node] = 2
    return []

  for node in sorted(graph):
    if node not in state:
      cycle = visit(node)
      if cycle:
        return cycle
  return []


def violations(graph: Dict[str, Set[str]], layers) -> List[str]:
  """Every import against the layer order, unplaced module and cycle of `graph`, as messages."""
  problems = []
  for module in sorted(graph):
    if layer_of(module, layers) < 0:
      problems.append(f"gan_dist.{module} is in no layer of WORKSPACE.md")
  for module, targets in sorted(graph.items()):
    for target in sorted(targets):
      source_layer, target_layer = layer_of(module, layers), layer_of(target, layers)
      if min(source_layer, target_layer) >= 0 and target_layer > source_layer:
        problems.append(f"gan_dist.{module} ({layers[source_layer][0]}) imports gan_dist.{target} from the higher "
                        f"layer {layers[target_layer][0]}")
  cycle = find_cycle(graph)
  if cycle:
    problems.append("import cycle: " + " -> ".join(cycle))
  return problems


def _layers():
  return read_layers(open(os.path.join(REPO, "WORKSPACE.md"), encoding="utf-8").read())


def _graph():
  modules = package_modules()
  return modules, {m: {t for t, _, _ in imports_of(p, modules, m) if t != m} for m, p in modules.items()}


def test_every_import_follows_the_layers_of_workspace_and_there_is_no_cycle():
  _, graph = _graph()
  assert violations(graph, _layers()) == []


def test_every_gan_dist_import_is_at_module_level():
  modules = package_modules()
  lazy = [f"gan_dist.{m}:{line} imports gan_dist.{t or '(package)'} inside a function"
          for m, p in modules.items() for t, line, top in imports_of(p, modules, m) if not top]
  assert lazy == []


def test_only_command_line_modules_read_absl_flags():
  layers = _layers()
  command_line = {i for i, (name, _) in enumerate(layers) if name.startswith("cli")}
  assert command_line, "WORKSPACE.md's layers need the command-line layers (names starting with cli)"
  readers = []
  for module, path in package_modules().items():
    tree = ast.parse(open(path, encoding="utf-8").read())
    reads = any((isinstance(n, ast.Name) and n.id == "FLAGS") or (isinstance(n, ast.Attribute) and n.attr == "FLAGS")
                for n in ast.walk(tree))
    if reads and layer_of(module, layers) not in command_line:
      readers.append(module)
  assert readers == []


def test_the_checker_refuses_the_import_circle_of_the_old_flags_module():
  # The graph of version 0.1's circle: flags -> main -> train -> checkpoint -> flags (and strategy, summaries,
  # sample, eval) with flags placed in the config layer, as WORKSPACE.md places `config` today.
  old = [(name, patterns + (["flags"] if "config" in patterns else [])) for name, patterns in _layers()]
  graph = {"flags": {"errors", "main"}, "main": {"flags", "train", "strategy"}, "train": {"checkpoint", "flags"},
           "checkpoint": {"flags", "strategy"}, "strategy": {"flags"}, "errors": set()}
  problems = violations(graph, old)
  assert any("import cycle" in p for p in problems)
  assert any(p.startswith("gan_dist.flags") and "higher layer" in p for p in problems)


def test_the_checker_sees_relative_lazy_and_submodule_imports(tmp_path):
  path = tmp_path / "mod.py"
  path.write_text("from gan_dist import config\nfrom . import files\nfrom gan_dist.models import layers, Gan\n"
                  "def f():\n  import gan_dist.train\n")
  modules = {"config": "", "files": "", "models": "", "models.layers": "", "train": "", "mod": ""}
  found = imports_of(str(path), modules, "mod")
  assert sorted((t, top) for t, _, top in found) == [("config", True), ("files", True), ("models", True),
                                                     ("models.layers", True), ("train", False)]


if __name__ == "__main__":
  pytest.main([__file__])
