"""The modules of ``armor_notify`` depend on each other one way, from the front ends down to the
leaves, so that a new backend or a new front end is a new module and never a fork.

The import graph is read from the source (``ast``), counting every import: at the top of a
module, inside a function, and under ``if TYPE_CHECKING:`` (a type-only import still ties two
modules together, and hides a cycle from the interpreter, not from the reader). A subpackage
counts as one module. Two checks:

- there is no import cycle;
- every module belongs to one layer of :data:`LAYERS`, and imports only from its own layer or a
  lower one. Modules in one layer are peers: they may import each other (no cycle, as above).

The layers, lowest first:

1. **leaves** import nothing from armor-notify: errors, the duration parser, the shared
   validation helpers (strict pydantic base, "did you mean", ``format_loc``), secret masking,
   attempt outcomes, dedup keys, the I/O pool, terminal output.
2. **models**: what an alert, a rule, a destination (the plugin contract's config, sender and
   notification) and a delivery are, and the models of noise control (``noise``: schedules,
   blackouts, digests, the intake ``Decision`` and the ``History`` it is decided with). Nothing
   here reads a config.
3. **services on the models**: matching alerts to rules, the retry policy, reading alerts from
   JSON (``intake``), the shared message wording (``message``), digests built with it
   (``digests``) and users' templates of it (``templates``), the HTTP client senders use
   (``http``), the plugin contract (``hookspecs``) and what plugins registered (``registry``),
   and what intake decisions ask the outbox
   (``history``): the check-state ledger (``ledger``) and the mutes (``mutes``), with their SQL
   over the seam (``sql``, a leaf) that the outbox's backends implement.
4. **storage**: the outbox. It takes an intake policy (``IntakePolicy``) with each write and
   never imports the gate or the config, so a second backend is a new class here.
5. **loading**: the plugin manager (``plugins``) and the config (``config``: validated against
   the registry, compiled into rules and a router).
6. **applying a config**: the noise gate (``gate``, handed to the outbox as its intake policy),
   the check rules (``check_intake``, handed to it as its ``checks``) and the dispatcher
   (attempts, retries, rate limits, leases).
7. **the Python API** (``api``) and the package's front door (``armor_notify/__init__.py``).
8. **front ends**: the command line (``cli``) and the pytest kit for plugin authors
   (``testing``).

A new module goes into the layer that says what it is, and imports only from that layer and
those below. If it needs something from above, move the shared part down (into a leaf if need
be) instead of importing upwards or hiding the import inside a function.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterable, Mapping
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "armor_notify"
INIT = "__init__"
"""The node of the package's own ``__init__.py`` (``from armor_notify import X``)."""

LAYERS: tuple[tuple[str, frozenset[str]], ...] = tuple((name, frozenset(modules)) for name, modules in (
    ("leaves", {"errors", "durations", "times", "validation", "secrets", "outcome", "dedup", "pool",
                "output", "sources", "sql"}),
    ("models", {"alert", "rules", "destinations", "delivery", "noise"}),
    ("services on the models", {"matching", "retry", "intake", "message", "digests", "http",
                                "hookspecs", "registry", "history", "ledger", "mutes",
                                "lineage", "templates"}),
    ("storage", {"outbox_core", "outbox", "outbox_postgres"}),
    ("loading", {"plugins", "config"}),
    ("applying a config", {"gate", "dispatcher", "check_intake"}),
    ("the Python API", {"api", INIT}),
    ("front ends", {"cli", "testing", "pytest_plugin", "server", "status_page", "metrics"}),
))


# -- the graph ------------------------------------------------------------------------------------


def _nodes(package: Path) -> dict[str, list[Path]]:
    """Module name → its files: ``alert`` → [alert.py]; a subpackage → every file in it."""
    nodes: dict[str, list[Path]] = {INIT: [package / "__init__.py"]}
    for path in sorted(package.iterdir()):
        if path.suffix == ".py" and path.name != "__init__.py":
            nodes[path.stem] = [path]
        elif path.is_dir() and (path / "__init__.py").exists():
            nodes[path.name] = sorted(path.rglob("*.py"))
    return nodes


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module → the modules of ``package`` it imports, however and wherever it imports them."""
    nodes = _nodes(package)
    graph: dict[str, set[str]] = {}
    for name, files in nodes.items():
        found: set[str] = set()
        for file in files:
            found |= _imports(file, package, set(nodes))
        found.discard(name)
        graph[name] = found
    return graph


def _imports(file: Path, package: Path, nodes: set[str]) -> set[str]:
    inside = list(file.relative_to(package.parent).with_suffix("").parts)
    here = inside if file.name == "__init__.py" else inside[:-1]  # the file's own package
    if here and here[-1] == INIT:
        here = here[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"), str(file))):
        if isinstance(node, ast.Import):
            out |= {_node([*alias.name.split(".")], package.name, nodes) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            target = [*base, *(node.module.split(".") if node.module else [])]
            if node.module is None or target == [package.name]:
                # ``from . import x``: x is a module, or a name from the package's __init__
                out |= {_node([*target, alias.name], package.name, nodes) for alias in node.names}
            else:
                out.add(_node(target, package.name, nodes))
    out.discard("")
    return out


def _node(parts: list[str], package: str, nodes: set[str]) -> str:
    """The module of ``package`` that a dotted import path lands in ("" when outside it)."""
    if not parts or parts[0] != package:
        return ""
    return parts[1] if len(parts) > 1 and parts[1] in nodes else INIT


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One import cycle as a path (``[a, b, a]``), or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for dep in sorted(graph.get(name, ())):
            if state.get(dep) == 1:
                return [*path[path.index(dep):], dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        path.pop()
        state[name] = 2
        return None

    for name in sorted(graph):
        if name not in state:
            found = visit(name)
            if found:
                return found
    return None


# -- the checks -----------------------------------------------------------------------------------


def test_there_is_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, (
        "import cycle (type-only and in-function imports count): " + " -> ".join(cycle or [])
        + "; move what both sides need into a lower module")


def test_every_module_has_a_layer() -> None:
    declared = [name for _, modules in LAYERS for name in modules]
    assert len(declared) == len(set(declared)), "a module is declared in two layers"
    missing = sorted(set(import_graph()) - set(declared))
    assert not missing, (f"armor_notify modules without a layer: {', '.join(missing)}: add each to "
                         "LAYERS in tests/test_layers.py, in the lowest layer its imports allow")
    gone = sorted(set(declared) - set(import_graph()))
    assert not gone, f"LAYERS names modules that no longer exist: {', '.join(gone)}"


def test_imports_go_down_the_layers() -> None:
    level = {name: i for i, (_, modules) in enumerate(LAYERS) for name in modules}
    upward = [
        f"{name} ({LAYERS[level[name]][0]}) imports {dep} ({LAYERS[level[dep]][0]})"
        for name, deps in sorted(import_graph().items()) if name in level
        for dep in sorted(deps) if dep in level and level[dep] > level[name]
    ]
    assert not upward, "imports that go up the layers:\n  " + "\n  ".join(upward)


def test_the_storage_layer_does_not_know_the_config() -> None:
    """The outbox reaches the noise gate only through the intake policy it is given."""
    graph = import_graph()
    below = _reachable(graph, "outbox")
    assert not below & {"config", "gate", "plugins", "dispatcher", "api"}, sorted(below)


def _reachable(graph: Mapping[str, Iterable[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for dep in graph.get(todo.pop(), ()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


# -- the graph reader itself ----------------------------------------------------------------------


def _package(root: Path, files: Mapping[str, str]) -> Path:
    package = root / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return package


def test_type_only_and_late_imports_count(tmp_path: Path) -> None:
    package = _package(tmp_path, {
        "low.py": """\
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from .high import High
            """,
        "high.py": "from .low import thing\n",
        "late.py": """\
            def f():
                from pkg import middle
                import pkg.low
            """,
        "middle.py": "from . import low, VERSION\n",
        "sub/__init__.py": "from ..low import x\n",
        "sub/inner.py": "from .. import high\n",
    })
    graph = import_graph(package)
    assert graph["low"] == {"high"}
    assert graph["late"] == {"middle", "low"}
    assert graph["middle"] == {"low", INIT}
    assert graph["sub"] == {"low", "high"}
    assert find_cycle(graph) in (["high", "low", "high"], ["low", "high", "low"])


def test_a_graph_without_cycles_has_none() -> None:
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
