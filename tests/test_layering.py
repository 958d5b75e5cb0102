"""The package layers of docs/ARCHITECTURE.md ("Layers"), read from the source with `ast` (no import runs):
data <- models <- components <- pipeline, serving and the CLIs on top, and no import loop between the project's
own modules. Module-level and function-level imports both count: a deferred import is still a dependency."""

import ast
import collections
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("data", "models", "components", "pipeline", "serving")
TOP_MODULES = ("runner",)

# package -> packages it must not import (anything above it).
FORBIDDEN = {
    "data": {"models", "components", "pipeline", "serving"},
    "models": {"components", "pipeline", "serving"},
    "components": {"pipeline", "serving"},
}
# serving/server reads exports through models/export_files.py and must not pull in the network code (tf_keras).
SERVER_MAY_REACH = ("data", "serving", "models.export_files")


def project_modules(root):
    """{dotted module name: path} of the project's packages and top-level modules under `root`."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    for name in TOP_MODULES:
        if (root / f"{name}.py").exists():
            modules[name] = root / f"{name}.py"
    return modules


def _owner(name, modules):
    """The project module a dotted name lives in (itself, or the longest prefix that is a module), or None."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imported_modules(module, path, modules):
    """The project modules `module` imports anywhere in its file. Relative imports are resolved; in
    `from pkg import name`, a submodule `pkg.name` counts as imported, any other name counts as `pkg`."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            owner = _owner(target, modules)
            if owner and owner != module:
                found.add(owner)
    return found


def import_graph(root):
    modules = project_modules(root)
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def strongly_connected(graph):
    """Tarjan's strongly connected components of {node: successors} (iterative: no recursion limit)."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = counter
                    counter += 1
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph.get(succ, ())))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
    return components


def upward_imports(graph):
    return sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        for target in targets
        if target.split(".")[0] in FORBIDDEN.get(module.split(".")[0], ())
    )


def import_loops(graph):
    return sorted(c for c in strongly_connected(graph) if len(c) > 1)


def reachable(graph, start):
    seen, todo = set(), [start]
    while todo:
        for target in graph.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


@pytest.fixture(scope="module")
def graph():
    return import_graph(ROOT)


def test_no_upward_imports(graph):
    assert upward_imports(graph) == [], "imports against the layers of docs/ARCHITECTURE.md"


def test_no_import_loops(graph):
    assert import_loops(graph) == [], "import loops between project modules"


def test_serving_server_reads_exports_without_the_model_code(graph):
    server = [m for m in graph if m == "serving.server" or m.startswith("serving.server.")]
    assert server
    beyond = sorted(
        {
            target
            for module in server
            for target in reachable(graph, module)
            if target != "models" and not target.startswith(SERVER_MAY_REACH)
        }
    )
    assert beyond == []


# The checker itself, on a small tree with each kind of import it must see.
FAKE_TREE = {
    "data/__init__.py": "",
    "data/base.py": "import os\n",
    "data/reader.py": "from .base import x\n",  # relative
    "data/registry.py": "def f():\n    from data import reader\n",  # function-level, submodule by name
    "data/loop_a.py": "from data.loop_b import y\n",
    "data/loop_b.py": "def g():\n    import data.loop_a\n",  # closes a loop only through a deferred import
    "models/__init__.py": "",
    "models/net.py": "from data import base\nfrom models.sub import thing\n",
    "models/sub/__init__.py": "from . import leaf\n",  # relative from a package
    "models/sub/leaf.py": "from ...pipeline import conf\n",  # upward, relative, two levels
    "components/__init__.py": "",
    "components/c.py": "from serving.api import call\n",  # upward
    "pipeline/__init__.py": "",
    "pipeline/conf.py": "import components.c\n",
    "serving/__init__.py": "",
    "serving/api.py": "from models import net\n",
}


def test_the_checker_sees_every_kind_of_import(tmp_path):
    for name, text in FAKE_TREE.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path)
    assert graph["data.reader"] == {"data.base"}
    assert graph["data.registry"] == {"data.reader"}
    assert graph["models.net"] == {"data.base", "models.sub"}
    assert graph["models.sub"] == {"models.sub.leaf"}
    assert graph["models.sub.leaf"] == {"pipeline.conf"}
    assert upward_imports(graph) == ["components.c -> serving.api", "models.sub.leaf -> pipeline.conf"]
    assert import_loops(graph) == [
        ["components.c", "models.net", "models.sub", "models.sub.leaf", "pipeline.conf", "serving.api"],
        ["data.loop_a", "data.loop_b"],
    ]
    assert reachable(graph, "serving.api") >= {"models.net", "data.base"}


def test_strongly_connected_components_of_a_known_graph():
    graph = collections.defaultdict(set, {1: {2}, 2: {3}, 3: {1, 4}, 4: {5}, 5: {4}, 6: {6}})
    assert sorted(strongly_connected(graph)) == [[1, 2, 3], [4, 5], [6]]
