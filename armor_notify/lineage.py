"""Lineage: which assets feed which, so that an alert can be traced to the asset upstream of it
that is failing (issue 19: one page per root cause).

A :class:`Lineage` is a directed graph of asset names (``raw.orders`` → ``analytics.orders``)
built from any of:

- a dbt ``manifest.json``: its models, seeds, snapshots and sources, named by their relation
  (``database.schema.alias``, as the dbt source names alert assets), with ``parent_map`` for
  the edges (tests are left out); a node is also known by its ``unique_id``;
- an edges file (JSON or YAML): a list of ``{from: NAME, to: NAME}``, or OpenLineage run events
  (``{"inputs": [{"namespace", "name"}], "outputs": [...]}``: every input feeds every output);
- an alert's own ``asset.upstream`` (added per alert, see :meth:`Lineage.upstream`).

Names compare without regard to case. An asset is found by its qualified name, else by its id
(a dbt ``unique_id``), else by the last two parts of its name when exactly one node ends so
(``marts.orders`` for ``analytics.marts.orders``). One not found is outside the lineage.

A file that cannot be read raises :class:`LineageError` with the file, the place in it and what
is wrong. Loading is linear in the size of the inputs: a 50,000-node manifest loads in about a
second (``bench/bench_lineage.py``).
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, Problem

BUILT = ("model.", "seed.", "snapshot.", "source.")
"""The dbt nodes that are assets (tests, analyses, exposures are not)."""


class LineageError(ConfigError):
    """A lineage file that cannot be read: where, and what is wrong."""

    kind = "lineage"


@dataclass
class Lineage:
    """A directed graph of assets: ``parents[i]`` feed node ``i``, ``children[i]`` are fed by
    it."""

    names: list[str] = field(default_factory=list)
    """Each node's name as first seen (its qualified name, when dbt gave one)."""
    parents: list[list[int]] = field(default_factory=list)
    children: list[list[int]] = field(default_factory=list)
    _index: dict[str, int] = field(default_factory=dict)
    """Name (as written, and lower-case), or lower-case dbt ``unique_id`` → node."""
    _tails: dict[str, int | None] = field(default_factory=dict)
    """Lower-case last two parts of a name → node (``None``: more than one ends so)."""
    sources: list[str] = field(default_factory=list)
    """What it was built from (file paths), for ``lineage show``."""
    owners: dict[str, set[int]] = field(default_factory=dict)
    """Owner (a dbt ``meta.owner``, a group's owner) → the assets they own."""
    _below: tuple[tuple[tuple[str, ...], int], Below] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def edges(self) -> int:
        return sum(len(c) for c in self.children)

    # -- building -------------------------------------------------------------------------------
    def node(self, name: str, *aliases: str) -> int:
        """The node named ``name`` (also known as ``aliases``), made if new."""
        key = name.lower()
        found = self._index.get(key)
        if found is None:
            found = next((self._index[a.lower()] for a in aliases if a.lower() in self._index),
                         None)
        if found is None:
            found = len(self.names)
            self.names.append(name)
            self.parents.append([])
            self.children.append([])
            parts = key.split(".")
            if len(parts) > 2:
                tail = ".".join(parts[-2:])
                self._tails[tail] = None if tail in self._tails else found
        self._index.setdefault(key, found)
        self._index.setdefault(name, found)  # as written too: most lookups are, and skip lower()
        for alias in aliases:
            self._index.setdefault(alias.lower(), found)
        return found

    def edge(self, parent: int, child: int) -> None:
        if parent != child and child not in self.children[parent]:
            self.children[parent].append(child)
            self.parents[child].append(parent)

    # -- asking ---------------------------------------------------------------------------------
    def find(self, name: str, asset_id: str | None = None) -> int | None:
        """The node of an asset: by qualified name, else by id, else by its last two parts."""
        found = self._index.get(name)
        if found is None:
            found = self._index.get(name.lower())
        if found is None and asset_id:
            found = self._index.get(asset_id.lower())
        if found is None:
            parts = name.lower().split(".")
            if len(parts) >= 2:
                found = self._tails.get(".".join(parts[-2:]))
        return found

    def walk(self, start: int, *, up: bool, depth: int) -> Iterator[tuple[int, int]]:
        """Every node upstream (``up``) or downstream of ``start`` within ``depth`` steps, once
        each, nearest first, with its distance."""
        links = self.parents if up else self.children
        seen = {start}
        queue: deque[tuple[int, int]] = deque([(start, 0)])
        while queue:
            node, distance = queue.popleft()
            if distance >= depth:
                continue
            for nxt in links[node]:
                if nxt not in seen:
                    seen.add(nxt)
                    yield nxt, distance + 1
                    queue.append((nxt, distance + 1))

    def upstream(self, name: str, asset_id: str | None = None, *, depth: int,
                 declared: Sequence[str] = ()) -> list[tuple[str, int]]:
        """The names upstream of an asset within ``depth`` steps, nearest first, with their
        distance; ``declared`` (the alert's ``asset.upstream``) are at distance 1, and the
        lineage upstream of them follows."""
        out: dict[str, int] = {}
        starts: list[tuple[int, int]] = []
        node = self.find(name, asset_id)
        if node is not None:
            starts.append((node, 0))
        for given in declared:
            out.setdefault(given, 1)
            found = self.find(given)
            if found is not None:
                starts.append((found, 1))
        for start, offset in starts:
            for other, distance in self.walk(start, up=True, depth=depth - offset):
                total = distance + offset
                if self.names[other] not in out or out[self.names[other]] > total:
                    out[self.names[other]] = total
        out.pop(name, None)
        return sorted(out.items(), key=lambda item: (item[1], item[0]))

    def downstream(self, name: str, asset_id: str | None = None, *,
                   depth: int) -> list[tuple[str, int]]:
        node = self.find(name, asset_id)
        if node is None:
            return []
        return [(self.names[n], d) for n, d in self.walk(node, up=False, depth=depth)]

    def below(self, roots: Iterable[str], *, depth: int) -> Below:
        """Which of ``roots`` (assets failing now, say) lie upstream of each asset, within
        ``depth`` steps: walked once, downstream from each root, into a table keyed by every
        name the lineage knows, so that asking for an alert's asset is one lookup, however
        large the lineage is. The last table is kept: intakes while the failing set stays the
        same reuse it."""
        wanted = (tuple(sorted(set(roots))), depth)
        if self._below is not None and self._below[0] == wanted:
            return self._below[1]
        made = self._make_below(wanted[0], depth)
        self._below = (wanted, made)
        return made

    def _make_below(self, roots: Iterable[str], depth: int) -> Below:
        hits: dict[int, list[tuple[str, int]]] = {}
        for root in roots:
            node = self.find(root)
            if node is None:
                continue
            for child, distance in self.walk(node, up=False, depth=depth):
                hits.setdefault(child, []).append((root, distance))
        if not hits:
            return Below({}, {})
        for found in hits.values():
            found.sort(key=lambda r: -r[1])  # furthest upstream first
        none: list[tuple[str, int]] = []  # (shared, never handed out)
        return Below({key: hits.get(node, none) for key, node in self._index.items()},
                     {tail: hits[node] for tail, node in self._tails.items()
                      if node is not None and node in hits})


def roots_above(below: Below, name: str, asset_id: str | None, declared: Sequence[str],
                failing: Collection[str]) -> list[tuple[str, int]]:
    """The failing roots (``failing``: lower-case names) upstream of an asset, with their
    distance: from the lineage, and through its own ``asset.upstream`` (one step up)."""
    found = below.roots(name, asset_id)
    if not found and not declared:
        return []
    found = list(found)  # (a copy: the table's own lists stay)
    for given in declared:
        if given.lower() in failing:
            found.append((given, 1))
        found += [(root, d + 1) for root, d in below.roots(given)]
    own = name.lower()
    return [(root, d) for root, d in found if root.lower() != own and root.lower() in failing]


@dataclass(frozen=True)
class Below:
    """:meth:`Lineage.below`'s answer: asset → the roots upstream of it, furthest first."""

    keys: dict[str, list[tuple[str, int]]]
    """Every name the lineage knows (as written, lower-case, dbt ``unique_id``) → the roots
    upstream of it (empty: none); empty when no root is in the lineage."""
    tails: dict[str, list[tuple[str, int]]]
    """The assets below a root by the last two parts of their name."""

    def roots(self, name: str, asset_id: str | None = None) -> list[tuple[str, int]]:
        """The roots upstream of the asset, furthest first (found as :meth:`Lineage.find`
        finds it)."""
        keys = self.keys
        found = keys.get(name)  # the name as the lineage writes it: one lookup, most alerts
        if found is None and keys:
            low = name.lower()
            found = keys.get(low)
            if found is None and asset_id:
                found = keys.get(asset_id.lower())
            if found is None:
                found = self.tails.get(".".join(low.rsplit(".", 2)[-2:]))
        return found or []


# -- reading ------------------------------------------------------------------------------------------


def load(dbt_manifest: str | os.PathLike[str] | None = None,
         edges: Iterable[str | os.PathLike[str]] = ()) -> Lineage:
    """The lineage of a dbt manifest and edges files; :class:`LineageError` naming the file and
    the place for what cannot be read."""
    lineage = Lineage()
    if dbt_manifest is not None:
        add_dbt_manifest(lineage, Path(dbt_manifest))
    for path in edges:
        add_edges(lineage, Path(path))
    return lineage


def _read_json(path: Path, what: str) -> Any:
    try:
        with path.open("rb") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise LineageError([Problem(str(path), "", f"{what} not found")]) from None
    except OSError as exc:
        raise LineageError([Problem(str(path), "", f"cannot read the {what}: "
                                                   f"{exc.strerror or exc}")]) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        line = getattr(exc, "lineno", None)
        raise LineageError([Problem(str(path), "", f"not valid JSON: "
                                                   f"{getattr(exc, 'msg', exc)}", line)]) from None


def add_dbt_manifest(lineage: Lineage, path: Path) -> None:
    """The models, seeds, snapshots and sources of a dbt manifest, and their ``parent_map``."""
    data = _read_json(path, "dbt manifest")
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), dict):
        raise LineageError([Problem(str(path), "nodes", "not a dbt manifest (no nodes)")])
    nodes: dict[str, Any] = {}
    for section in ("nodes", "sources"):
        found = data.get(section)
        if isinstance(found, dict):
            nodes.update(found)
    ids: dict[str, int] = {}
    found_groups = data.get("groups")
    groups: dict[str, Any] = found_groups if isinstance(found_groups, dict) else {}
    for uid, node in nodes.items():
        if isinstance(uid, str) and uid.startswith(BUILT) and isinstance(node, dict):
            ids[uid] = lineage.node(relation_name(uid, node), uid)
            owner = dbt_owner(node, groups)
            if owner:
                lineage.owners.setdefault(owner, set()).add(ids[uid])
    parent_map = data.get("parent_map")
    if parent_map is None:  # older manifests: each node's depends_on
        parent_map = {uid: (node.get("depends_on") or {}).get("nodes", [])
                      for uid, node in nodes.items() if isinstance(node, dict)}
    if not isinstance(parent_map, dict):
        raise LineageError([Problem(str(path), "parent_map", "expected an object of "
                                                             "unique_id → parents")])
    for uid, parents in parent_map.items():
        child = ids.get(uid)
        if child is None or not isinstance(parents, list):
            continue
        for parent in parents:
            found = ids.get(parent) if isinstance(parent, str) else None
            if found is not None:
                lineage.edge(found, child)
    lineage.sources.append(str(path))


def dbt_owner(node: dict[str, Any], groups: dict[str, Any]) -> str | None:
    """A dbt node's owner: its ``meta.owner`` (or its config's, its source's), else its group's
    owner's name or email (what the dbt source puts in ``asset.owners``)."""
    found = node.get("config")
    config: dict[str, Any] = found if isinstance(found, dict) else {}
    group = groups.get(f"group.{node.get('package_name')}.{node.get('group')}")
    for meta in (node.get("meta"), config.get("meta"), node.get("source_meta"), group):
        owner = meta.get("owner") if isinstance(meta, dict) else None
        if isinstance(owner, dict):
            owner = owner.get("name") or owner.get("email")
        if isinstance(owner, str) and owner:
            return owner
    return None


def relation_name(uid: str, node: dict[str, Any]) -> str:
    """``database.schema.alias`` (a source's ``identifier``): the name the dbt source gives an
    alert's asset."""
    relation = node.get("identifier") if uid.startswith("source.") else (
        node.get("alias") or node.get("name"))
    parts = [str(p) for p in (node.get("database"), node.get("schema"), relation) if p]
    return ".".join(parts) or uid


def add_edges(lineage: Lineage, path: Path) -> None:
    """Edges from a JSON or YAML file: ``[{from, to}]`` (or ``{"edges": [...]}``), or
    OpenLineage run events with ``inputs`` and ``outputs``."""
    yaml_file = path.suffix.lower() in (".yaml", ".yml")
    data = _read_yaml(path) if yaml_file else _read_json(path, "edges file")
    items = data.get("edges") if isinstance(data, dict) and "edges" in data else data
    if isinstance(items, dict):  # one OpenLineage event
        items = [items]
    if not isinstance(items, list):
        raise LineageError([Problem(str(path), "", "expected a list of edges ({from, to}) or of "
                                                   "OpenLineage events ({inputs, outputs})")])
    problems: list[Problem] = []
    for i, item in enumerate(items):
        where = f"[{i}]"
        if isinstance(item, dict) and ("inputs" in item or "outputs" in item):
            inputs = _datasets(item.get("inputs"), f"{where}.inputs", path, problems)
            outputs = _datasets(item.get("outputs"), f"{where}.outputs", path, problems)
            for source in inputs:
                for target in outputs:
                    lineage.edge(lineage.node(source), lineage.node(target))
        elif isinstance(item, dict) and isinstance(item.get("from"), str) and \
                isinstance(item.get("to"), str) and item["from"].strip() and item["to"].strip():
            lineage.edge(lineage.node(item["from"].strip()), lineage.node(item["to"].strip()))
        else:
            problems.append(Problem(str(path), where, "expected {from: NAME, to: NAME} or an "
                                                      "OpenLineage event with inputs and outputs"))
        if len(problems) >= 20:
            break
    if problems:
        raise LineageError(problems)
    lineage.sources.append(str(path))


def _datasets(value: Any, where: str, path: Path, problems: list[Problem]) -> list[str]:
    """The names of an OpenLineage event's datasets (``name``, as the asset's name)."""
    if value is None:
        return []
    if not isinstance(value, list):
        problems.append(Problem(str(path), where, "expected a list of datasets"))
        return []
    names = []
    for j, dataset in enumerate(value):
        name = dataset.get("name") if isinstance(dataset, dict) else None
        if isinstance(name, str) and name.strip():
            names.append(name.strip())
        else:
            problems.append(Problem(str(path), f"{where}[{j}]", "a dataset needs a name"))
    return names


def _read_yaml(path: Path) -> Any:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LineageError([Problem(str(path), "", "edges file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LineageError([Problem(str(path), "", f"cannot read the edges file: {exc}")]) \
            from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise LineageError([Problem(str(path), "", f"not valid YAML: "
                                                   f"{getattr(exc, 'problem', exc)}",
                                    mark.line + 1 if mark is not None else None)]) from None


class LineageFiles:
    """The lineage a config names, loaded when first asked for and loaded again when one of its
    files changes (looked at most once a second) or :meth:`reload` is called (``SIGHUP``).
    Failing open: a file that cannot be read leaves no lineage (``error`` says why), and alerts
    page as if there were none."""

    CHECK_EVERY = 1.0

    def __init__(self, dbt_manifest: Path | None, edges: Sequence[Path]) -> None:
        self.dbt_manifest = dbt_manifest
        self.edges = tuple(edges)
        self.paths: tuple[Path, ...] = ((dbt_manifest,) if dbt_manifest else ()) + self.edges
        self.error: str | None = None
        self._lineage: Lineage | None = None
        self._stamps: tuple[tuple[float, int] | None, ...] | None = None
        self._checked = -1e9

    def _stamp(self) -> tuple[tuple[float, int] | None, ...]:
        stamps: list[tuple[float, int] | None] = []
        for path in self.paths:
            try:
                info = path.stat()
                stamps.append((info.st_mtime, info.st_size))
            except OSError:
                stamps.append(None)
        return tuple(stamps)

    def reload(self) -> None:
        """Read the files again at the next :meth:`current` (``SIGHUP``)."""
        self._stamps = None
        self._checked = -1e9

    def current(self) -> Lineage | None:
        """The lineage (``None``: none configured, or it cannot be read: see ``error``)."""
        now = time.monotonic()
        if now - self._checked < self.CHECK_EVERY and self._stamps is not None:
            return self._lineage
        if not self.paths:
            return None
        self._checked = now
        stamps = self._stamp()
        if stamps != self._stamps:
            self._stamps = stamps
            try:
                self._lineage, self.error = load(self.dbt_manifest, self.edges), None
            except LineageError as exc:
                self._lineage = None
                self.error = "; ".join(str(p) for p in exc.problems)
        return self._lineage
