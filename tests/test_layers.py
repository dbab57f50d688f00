"""The layers of ``core/``: imports point down the layer list, never in a circle, and never at Streamlit.

The import graph is read from the source with ``ast`` (nothing is imported): every ``import`` and
``from ... import`` of a module, at module level, inside functions and under ``if TYPE_CHECKING:`` alike (a
type-only import still ties the two modules together). ``from core.x import y`` is an edge to ``core.x.y`` when
``y`` is a submodule, else to ``core.x``. Importing ``core.x.y`` is not counted as importing the package
``core.x`` (its ``__init__``) as well: a package re-exporting its own modules would otherwise be a circle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "core"

# The layers of core/, top first: a module may import its own layer and the layers below it, never one above.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("research", ("core.research", "core.replay")),  # drivers of research: replay, sweeps, walk-forward, saved runs
    ("runtime", ("core.runtime", "core.worker")),
    ("engine", ("core.engine",)),
    ("services", ("core.services",)),  # LLM gate, EDGAR, Slack, Redis
    ("views", ("core.views",)),  # read-only queries for the pages
    # broker and market-data ports and adapters: above the rules, because the simulated broker fills by the fill
    # rule of core/rules/fills.py (the rules import no adapter)
    ("venues", ("core.venues",)),
    ("rules", ("core.rules",)),  # trading rules as plain functions
    ("metrics", ("core.metrics",)),  # pure figures: KPIs, returns, drawdown, Sharpe, ...
    ("state", ("core.state",)),  # the Store journal, the book, decision logs, kv
    ("base", ("core.config", "core.bounds", "core.exports", "core.secrets", "core.universe", "core.clock", "core.feed",
              "core.strategy")),
    ("package", ("core",)),  # core/__init__.py (a docstring)
)

# Import circles known and allowed, each by name: {(importer, imported): the only names that edge may import}.
# Without these edges there must be no circle; an edge importing any other name is not exempt. An edge listed here
# that no longer exists is simply not needed any more (delete the entry when its circle is gone).
KNOWN_CYCLES: dict[str, dict[tuple[str, str], frozenset[str]]] = {}

# Imports up the layers known and allowed for now, each with its reason: (importer, imported).
LAYER_EXCEPTIONS: dict[tuple[str, str], str] = {
    ("core.feed", "core.venues.marketdata"):
        "the feed reads bars through the market-data port (the MarketData Protocol, for its type hint); the port "
        "moving down or the feed moving up to the venues (the simulated broker imports the feed) is still open",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(CORE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def core_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(CORE.rglob("*.py"))}


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> Iterator[tuple[str, int, str]]:
    """(imported module, line, name imported from it or "") for every import anywhere in the module (module level,
    in functions, under ``if TYPE_CHECKING:``), relative ones resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, ""
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            for alias in node.names:
                sub = f"{mod}.{alias.name}"
                yield (sub, node.lineno, "") if sub in modules else (mod, node.lineno, alias.name)


def import_graph() -> dict[str, dict[str, int]]:
    """core module -> {imported core module: line of the first such import}."""
    return {v: {w: lines[0] for w, (lines, _) in ws.items()} for v, ws in _edges().items()}


def _edges() -> dict[str, dict[str, tuple[list[int], set[str]]]]:
    """core module -> {imported core module: (lines, names imported from it; "" for the module itself)}."""
    modules = core_modules()
    graph: dict[str, dict[str, tuple[list[int], set[str]]]] = {}
    for name, path in modules.items():
        edges: dict[str, tuple[list[int], set[str]]] = {}
        for mod, line, what in imports_of(name, path, modules):
            if mod in modules and mod != name:
                lines, names = edges.setdefault(mod, ([], set()))
                lines.append(line)
                names.add(what)
        graph[name] = edges
    return graph


def layer_of(module: str) -> int:
    best, rank = -1, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, rank = len(p), i
    assert rank >= 0, f"{module} is in no layer of LAYERS: add it to the table"
    return rank


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The import circles: one path around each strongly connected group of modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_path_around(graph, set(g)) for g in groups]


def _path_around(graph: dict[str, dict[str, int]], group: set[str]) -> list[str]:
    """A circle through the group's first module: a -> b -> ... -> a (breadth first, so a shortest one)."""
    start = min(group)
    prev: dict[str, str] = {}
    todo = [start]
    while todo:
        v = todo.pop(0)
        for w in sorted(graph[v]):
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                return [start, *reversed(path[:-1]), start] if v != start else [start, start]
            if w in group and w not in prev:
                prev[w] = v
                todo.append(w)
    raise AssertionError(f"no circle through {start}")


def without_known_cycles() -> dict[str, dict[str, int]]:
    """The import graph less the edges of KNOWN_CYCLES that import nothing but the names listed for them."""
    allowed = {edge: names for edges in KNOWN_CYCLES.values() for edge, names in edges.items()}
    return {v: {w: lines[0] for w, (lines, names) in ws.items() if not names <= allowed.get((v, w), frozenset())}
            for v, ws in _edges().items()}


def test_the_graph_sees_the_imports():
    graph = import_graph()
    assert "core.state.store" in graph["core.metrics.kpi"]  # module level
    assert "core.research.workers" in graph["core.research.replay"]  # inside a function
    assert "core.state.book" in graph["core.engine.account"]  # under TYPE_CHECKING
    assert "core.metrics.kpi" in graph["core.engine.protect"]  # from a package, a submodule
    assert "core.metrics" not in graph["core.rules.protections"]
    assert "core.engine" in graph["core.runtime"]  # from a package, a name its __init__ defines


def test_the_cycle_finder_reports_a_circle():
    graph = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b": 1}, "b": {}}) == []


def test_no_import_circles_in_core():
    found = cycles(without_known_cycles())
    assert not found, "import circles in core/:\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_known_circles_stay_inside_their_layer():
    for name, edges in KNOWN_CYCLES.items():
        for v, w in edges:
            assert layer_of(v) == layer_of(w), f"{name}: {v} -> {w} crosses layers"


def test_imports_point_down_the_layers():
    wrong = []
    for v, ws in import_graph().items():
        for w, line in ws.items():
            if layer_of(w) < layer_of(v) and (v, w) not in LAYER_EXCEPTIONS:
                wrong.append(f"{v} (layer {LAYERS[layer_of(v)][0]}) imports {w} (layer {LAYERS[layer_of(w)][0]}), "
                             f"line {line}")
    assert not wrong, "imports pointing up the layers of core/:\n" + "\n".join(sorted(wrong))


def test_every_core_module_has_a_layer():
    for name in core_modules():
        layer_of(name)


def test_core_never_imports_streamlit():
    modules = core_modules()
    wrong = [f"{name}:{line} imports {mod}" for name, path in modules.items()
             for mod, line, _ in imports_of(name, path, modules) if mod.split(".")[0] == "streamlit"]
    assert not wrong, "\n".join(wrong)
