"""The house in numbers: modules, lines, import edges and import cycles of `ssljax/`.

    python -m experiments.house            # ssljax/ of this checkout
    python -m experiments.house --root=DIR # DIR/ssljax of another checkout (e.g. main)

Every import statement counts, function-local ones included (`ast.walk`): an import inside
a function is an import all the same, it only runs later. Only what a statement names is
an edge: `from ssljax.data import registry` is an edge to `ssljax.data.registry`, while
`from ssljax.data import load_dataset` (a name the package's `__init__` holds) and
`import ssljax` are edges to the packages themselves. `tests/test_imports.py` fails on any
cycle this finds.
"""

import ast
import collections
import pathlib
import sys

from absl import app, flags

PACKAGE = "ssljax"


# The layers of ssljax/, bottom to top (docs/design.md draws them): a module imports only
# modules of its own layer or below. `core` and `study` import no JAX; a module without a
# layer here fails tests/test_imports.py until it is given one.
LAYERS: dict[str, tuple[str, ...]] = {
    name: tuple(mods.split())
    for name, mods in {
        "core": "errors version faults interrupt facts files results cli health metrics "
        "data.registry data.medmnist_info data.batches",
        # report_headline: issue 21's module on main, placed here for the merge.
        "study": "stats plots report report_runs report_tables report_plots report_health "
        "report_headline",
        "device": "parallel models models.conv models.resnet models.heads augment "
        "augment.params augment.geometry augment.photometric losses optim steps diagnostics "
        "batchnorm inference probes checkpoint writers workdirs methods",
        "data": "data data.download data.npzstream data.load data.subsets data.userfiles "
        "data.folder_scan data.imagefile data.dicom data.folder data.tfds_build "
        "data.tfds_medmnist data.pipeline data.sources",
        "entry": "validation entry",
        "jobs": "loop trainer representations pretrain evaluate evaluate.setup evaluate.frozen "
        "evaluate.finetune embed preview encoder",
        "top": "jobs",
    }.items()
}
LAYERS["top"] += ("",)  # "" is the package itself: ssljax.load_encoder
NO_JAX_LAYERS = ("core", "study")


def layer_of(module: str) -> str | None:
    """The layer of a dotted module name (`ssljax.data.load` -> 'data'), None if unlisted."""
    short = module.removeprefix(PACKAGE).removeprefix(".")
    return next((name for name, mods in LAYERS.items() if short in mods), None)


def upward_edges(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(importer, imported) pairs where a module imports from a layer above its own."""
    rank = {name: i for i, name in enumerate(LAYERS)}
    return sorted(
        (m, t)
        for m, targets in graph.items()
        for t in targets
        if layer_of(m) and layer_of(t) and rank[layer_of(t)] > rank[layer_of(m)]
    )


def modules(root: pathlib.Path) -> dict[str, pathlib.Path]:
    """Dotted module name -> its file, for every .py under root/ssljax (a package's
    `__init__.py` goes by the package's name)."""
    out = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(name: str, known: dict[str, pathlib.Path]) -> str | None:
    """The longest known module that `name` is or lies in, or None outside the package."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return None


def _targets(node: ast.AST, module: str, is_package: bool, known: dict) -> list[str]:
    """The package modules one import statement names (`from a import b`: a.b when b is a
    module, else a)."""
    if isinstance(node, ast.Import):
        return [t for a in node.names if (t := _resolve(a.name, known))]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:  # relative: from the module's package, up level - 1
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    out = []
    for alias in node.names:
        full = f"{prefix}.{alias.name}"
        target = full if full in known else _resolve(prefix, known)
        if target:
            out.append(target)
    return out


def import_graph(root: pathlib.Path) -> dict[str, set[str]]:
    """module -> the package modules it imports anywhere in its file (itself left out)."""
    known = modules(root)
    graph = {}
    for module, path in known.items():
        is_package = path.name == "__init__.py"
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for target in _targets(node, module, is_package, known):
                if target != module:
                    edges.add(target)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), each sorted,
    with the shortest cycle through its first module spelled out: [a, b, ..., a]."""
    index, low, stack, on_stack, comps = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_shortest_cycle(graph, comp) for comp in sorted(comps)]


def _shortest_cycle(graph: dict[str, set[str]], comp: list[str]) -> list[str]:
    """[start, ..., start]: the shortest path back to comp[0] inside the component (BFS)."""
    start, members = comp[0], set(comp)
    parent, queue = {start: None}, collections.deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(graph[v] & members):
            if w == start:
                path = [v]
                while parent[path[-1]] is not None:
                    path.append(parent[path[-1]])
                return [start, *reversed(path[:-1]), start] if len(path) > 1 else [start, v, start]
            if w not in parent:
                parent[w] = v
                queue.append(w)
    return comp


def summary(root: pathlib.Path) -> dict:
    """{modules, lines, edges, cycles, largest: (lines, module), unlayered, upward} of
    root/ssljax."""
    known = modules(root)
    graph = import_graph(root)
    lines = {m: len(p.read_text().splitlines()) for m, p in known.items()}
    return {
        "modules": len(known),
        "lines": sum(lines.values()),
        "edges": sum(len(e) for e in graph.values()),
        "cycles": cycles(graph),
        "largest": max((n, m) for m, n in lines.items()),
        "unlayered": sorted(m for m in known if layer_of(m) is None),
        "upward": upward_edges(graph),
    }


_ROOT = flags.DEFINE_string(
    "root", str(pathlib.Path(__file__).resolve().parents[1]), "Checkout whose ssljax/ to count."
)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    root = pathlib.Path(_ROOT.value).expanduser()
    s = summary(root)
    print(f"{root / PACKAGE}: {s['modules']} modules, {s['lines']} lines, ", end="")
    print(f"{s['edges']} import edges")
    print(f"largest module: {s['largest'][1]} ({s['largest'][0]} lines)")
    print(f"import cycles: {len(s['cycles'])}")
    for cycle in s["cycles"]:
        print("  " + " -> ".join(cycle))
    print(f"layers: {' < '.join(LAYERS)}; modules without a layer: {len(s['unlayered'])}; ", end="")
    print(f"imports of a higher layer: {len(s['upward'])}")
    for importer, imported in s["upward"]:
        print(f"  {importer} -> {imported}")


if __name__ == "__main__":
    app.run(main)
