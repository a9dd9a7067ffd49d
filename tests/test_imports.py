"""The import direction of ssljax/: no cycles, function-local imports included.

`experiments/house.py` builds the graph from every import statement of every module (an
import inside a function counts: it only runs later), so a cycle cannot hide behind one.
"""

import ast
import pathlib
import textwrap

from experiments import house

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_ssljax_has_no_import_cycle():
    found = house.cycles(house.import_graph(REPO))
    assert not found, "import cycles in ssljax/: " + "; ".join(" -> ".join(c) for c in found)


def _package(tmp_path: pathlib.Path, files: dict[str, str]) -> pathlib.Path:
    for name, text in files.items():
        path = tmp_path / "ssljax" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return tmp_path


def test_a_cycle_behind_a_function_local_import_is_found(tmp_path):
    root = _package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from ssljax import b\n",
            "b.py": "def f():\n    from ssljax import a\n    return a\n",
            "c.py": "import ssljax.a\n",
        },
    )
    graph = house.import_graph(root)
    assert graph["ssljax.b"] == {"ssljax.a"}
    assert graph["ssljax.c"] == {"ssljax.a"}
    assert house.cycles(graph) == [["ssljax.a", "ssljax.b", "ssljax.a"]]


def test_relative_imports_and_package_names_resolve(tmp_path):
    root = _package(
        tmp_path,
        {
            "__init__.py": "from ssljax.data import load\n",
            "data/__init__.py": "from .load import NAME\n",
            "data/load.py": "from . import registry\nNAME = 1\n",
            "data/registry.py": "from ssljax.data import NAME\n",  # the package, not a module
        },
    )
    graph = house.import_graph(root)
    assert graph["ssljax"] == {"ssljax.data.load"}
    assert graph["ssljax.data"] == {"ssljax.data.load"}
    assert graph["ssljax.data.load"] == {"ssljax.data.registry"}
    assert graph["ssljax.data.registry"] == {"ssljax.data"}
    assert house.cycles(graph) == [
        ["ssljax.data", "ssljax.data.load", "ssljax.data.registry", "ssljax.data"]
    ]


def test_house_counts_this_checkout():
    s = house.summary(REPO)
    assert s["modules"] == len(list((REPO / "ssljax").rglob("*.py")))
    assert s["edges"] > s["modules"]  # a library, not a heap of files
    assert s["cycles"] == []


def test_every_module_has_a_layer_and_imports_only_down():
    s = house.summary(REPO)
    assert not s["unlayered"], (
        f"give these modules a layer in experiments/house.py: {s['unlayered']}"
    )
    assert not s["upward"], "imports of a higher layer: " + "; ".join(
        f"{a} ({house.layer_of(a)}) -> {b} ({house.layer_of(b)})" for a, b in s["upward"]
    )


def test_the_layers_without_jax_import_none_of_the_training_stack():
    """Statically, every import statement of the `core` and `study` layers (the subprocess
    test in test_study.py checks what actually gets imported)."""
    stack = ("jax", "flax", "optax", "orbax", "chex", "grain", "tensorflow_datasets")
    known = house.modules(REPO)
    found = []
    for module, path in known.items():
        if house.layer_of(module) not in house.NO_JAX_LAYERS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            found += [(module, n) for n in names if n.split(".")[0] in stack]
    assert not found, found


def test_an_upward_import_is_named(tmp_path):
    graph = {"ssljax.facts": {"ssljax.pretrain"}, "ssljax.pretrain": {"ssljax.facts"}}
    assert house.upward_edges(graph) == [("ssljax.facts", "ssljax.pretrain")]


def test_the_design_document_names_every_module():
    text = (REPO / "docs" / "design.md").read_text()
    missing = []
    for path in sorted((REPO / "ssljax").rglob("*.py")):
        name = path.name if path.name != "__init__.py" else f"{path.parent.name}/"
        if path.parent == REPO / "ssljax" and path.name == "__init__.py":
            name = "__init__.py"
        if name not in text:
            missing.append(str(path.relative_to(REPO)))
    assert not missing, f"docs/design.md does not name: {missing}"
