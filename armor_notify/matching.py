"""Matching alerts to rules (SPEC §3), compiled once per config so each alert costs little.

Rules are indexed by event type; every glob set is one precompiled regular expression. Within an
event type, the filters on low-cardinality fields (environment, data source, schema, kind, tags,
severity) are answered for all rules at once by a bitmask remembered per field value, so an alert
is checked in full only against the few rules those masks leave (see :class:`_Bucket`).
"""

from __future__ import annotations

import fnmatch
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .alert import Alert
from .dedup import dedup_key
from .rules import Patterns, RuleModel, TagFilter


def _regex(patterns: Iterable[str]) -> re.Pattern[str] | None:
    parts = [fnmatch.translate(p) for p in patterns]
    return re.compile("|".join(parts), re.IGNORECASE) if parts else None


class Globs:
    """An include/exclude pattern set; an absent ``include`` includes everything."""

    def __init__(self, patterns: Patterns) -> None:
        self.requires_value = patterns.include is not None
        self._include = _regex(patterns.include or ())
        self._exclude = _regex(patterns.exclude)

    def matches(self, value: str | None) -> bool:
        if value is None:
            return not self.requires_value
        if self.requires_value and not (self._include and self._include.match(value)):
            return False
        return not (self._exclude and self._exclude.match(value))


class AssetGlobs:
    """Asset patterns: with a dot they match the qualified name, without one the table's name."""

    def __init__(self, patterns: Patterns) -> None:
        def split(items: Iterable[str]) -> tuple[list[str], list[str]]:
            items = list(items)
            return [p for p in items if "." in p], [p for p in items if "." not in p]

        self.requires_value = patterns.include is not None
        inc_q, inc_t = split(patterns.include or ())
        exc_q, exc_t = split(patterns.exclude)
        self._inc = (_regex(inc_q), _regex(inc_t))
        self._exc = (_regex(exc_q), _regex(exc_t))

    @staticmethod
    def _hit(pair: tuple[re.Pattern[str] | None, re.Pattern[str] | None], qual: str,
             table: str) -> bool:
        return bool((pair[0] and pair[0].match(qual)) or (pair[1] and pair[1].match(table)))

    def matches(self, qualified: str, table: str) -> bool:
        if self.requires_value and not self._hit(self._inc, qualified, table):
            return False
        return not self._hit(self._exc, qualified, table)


class Tags:
    def __init__(self, spec: TagFilter) -> None:
        self.any = frozenset(t.lower() for t in spec.any)
        self.all = frozenset(t.lower() for t in spec.all)
        self.none = frozenset(t.lower() for t in spec.none)

    def matches(self, tags: Iterable[str]) -> bool:
        have = {t.lower() for t in tags}
        if self.any and not (self.any & have):
            return False
        if not self.all <= have:
            return False
        return not (self.none & have)


@dataclass(frozen=True)
class Rule:
    """A validated rule, compiled for matching."""

    index: int
    model: RuleModel
    environments: Globs | None
    data_sources: Globs | None
    schemas: Globs | None
    kinds: Globs | None
    assets: AssetGlobs | None
    tags: Tags | None

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def destinations(self) -> tuple[str, ...]:
        return self.model.destinations

    @classmethod
    def compile(cls, index: int, model: RuleModel) -> Rule:
        scope = model.scope
        return cls(
            index=index,
            model=model,
            environments=Globs(scope.environments) if scope.environments else None,
            data_sources=Globs(scope.data_sources) if scope.data_sources else None,
            schemas=Globs(scope.schemas) if scope.schemas else None,
            kinds=Globs(scope.kinds) if scope.kinds else None,
            assets=AssetGlobs(scope.assets) if scope.assets else None,
            tags=Tags(scope.tags) if scope.tags else None,
        )

    def matches(self, alert: Alert) -> bool:
        """True when every scope filter and every condition holds (event type checked by the index)."""
        asset = alert.asset
        if self.environments and not self.environments.matches(asset.environment):
            return False
        if self.data_sources and not self.data_sources.matches(asset.data_source):
            return False
        if self.schemas and not self.schemas.matches(asset.schema_name):
            return False
        if self.kinds and not self.kinds.matches(asset.kind):
            return False
        if self.assets and not self.assets.matches(asset.name, asset.table_name):
            return False
        if self.tags and not self.tags.matches(asset.tags):
            return False
        return self._conditions_hold(alert)

    def _conditions_hold(self, alert: Alert) -> bool:
        cond = self.model.conditions
        if cond.min_severity is not None and alert.severity.rank < cond.min_severity.rank:
            return False
        if cond.min_delay_hours is not None and (
            alert.freshness is None or alert.freshness.delay_hours < cond.min_delay_hours
        ):
            return False
        wanted = cond.changes
        if wanted is None or wanted == "any":
            return True
        if wanted == "breaking":
            return any(c.breaking for c in alert.changes)
        if wanted == "non_breaking":
            return bool(alert.changes) and not any(c.breaking for c in alert.changes)
        return any(c.type in wanted for c in alert.changes)


@dataclass(frozen=True)
class Route:
    """Where one alert goes: one destination, the rule that owns the delivery, and its dedup key."""

    destination: str
    rule: str
    dedup_key: str
    also_matched: tuple[str, ...] = field(default=())
    """Other matching rules that list this destination (they do not send again)."""
    owner: str | None = None
    """The asset's owner whose destination this is (a rule sending to ``owners``); ``""``:
    the ``fallback`` of owners the config does not map."""


OWNERS = "owners"
"""What a rule lists among its destinations to send to the asset's owners' destinations."""


# A memo holds at most this many field values before it starts afresh: alerts share a handful of
# environments, data sources and schemas, so in practice it never fills; the bound only keeps odd
# input (a new value in every alert) from growing it without limit.
MEMO_LIMIT = 2048


class _Filters:
    """Every distinct filter on one field, across all event types, and which of them each value
    passes (remembered per value), so a filter that many rules share is evaluated once."""

    def __init__(self) -> None:
        self._checks: list[Callable[[Any], bool]] = []
        self._ids: dict[Any, int] = {}
        self._memo: dict[Any, tuple[int, ...]] = {}

    def add(self, key: Any, check: Callable[[Any], bool]) -> int:
        """The id of this filter (equal keys, equal filters: one id)."""
        if key not in self._ids:
            self._ids[key] = len(self._checks)
            self._checks.append(check)
        return self._ids[key]

    def passed_by(self, value: Any) -> tuple[int, ...]:
        found = self._memo.get(value)
        if found is None:
            found = tuple(i for i, check in enumerate(self._checks) if check(value))
            if len(self._memo) >= MEMO_LIMIT:
                self._memo.clear()
            self._memo[value] = found
        return found


class _Field:
    """One prefilter of a bucket: which of its rules pass their filter on one alert field, as a
    bitmask (bit ``i`` for the bucket's rule ``i``), remembered per field value."""

    def __init__(self, value_of: Callable[[Alert], Any], filters: _Filters,
                 rules_of: dict[int, int], unfiltered: int) -> None:
        self.value_of = value_of
        self._filters = filters
        self._rules_of = rules_of  # filter id -> bits of this bucket's rules that have it
        self._unfiltered = unfiltered  # rules without this filter pass whatever the value
        self._memo: dict[Any, int] = {}

    def mask(self, alert: Alert) -> int:
        value = self.value_of(alert)
        mask = self._memo.get(value)
        if mask is None:
            mask = self._unfiltered
            rules_of = self._rules_of
            for passed in self._filters.passed_by(value):
                mask |= rules_of.get(passed, 0)
            if len(self._memo) >= MEMO_LIMIT:
                self._memo.clear()
            self._memo[value] = mask
        return mask


_Filter = tuple[Any, Callable[[Any], bool]]
"""A rule's filter on one field: a hashable description (equal filters are evaluated once per
value, however many rules share them) and the check of a value."""


def _globs(patterns: Patterns | None, compiled: Globs | None) -> _Filter | None:
    return None if patterns is None or compiled is None else (patterns, compiled.matches)


def _tags(rule: Rule) -> _Filter | None:
    spec = rule.model.scope.tags
    return None if spec is None or rule.tags is None else (spec, rule.tags.matches)


def _min_severity(rule: Rule) -> _Filter | None:
    wanted = rule.model.conditions.min_severity
    return None if wanted is None else (wanted, lambda severity: severity.rank >= wanted.rank)


# The prefilters: how to read the value, and a rule's filter on it (None for a rule without one).
# Data sources come first: they split large configs the most, so the mask often reaches zero
# before the other fields are looked at. Asset names are left to the full check: nearly every
# alert has its own, so a memo would not help.
_FIELDS: tuple[tuple[Callable[[Alert], Any], Callable[[Rule], _Filter | None]], ...] = (
    (lambda a: a.asset.data_source,
     lambda r: _globs(r.model.scope.data_sources, r.data_sources)),
    (lambda a: a.asset.environment,
     lambda r: _globs(r.model.scope.environments, r.environments)),
    (lambda a: a.asset.schema_name, lambda r: _globs(r.model.scope.schemas, r.schemas)),
    (lambda a: a.asset.kind, lambda r: _globs(r.model.scope.kinds, r.kinds)),
    (lambda a: a.asset.tags, _tags),
    (lambda a: a.severity, _min_severity),
)


class _Bucket:
    """The enabled rules of one event type, in file order, with their prefilters.

    ``Rule.matches`` stays the definition of a match: the masks only skip rules whose filter on
    some field already fails, and every rule they leave is checked in full, so the result is
    exactly that of checking every rule in file order.
    """

    def __init__(self, rules: list[Rule], shared: Sequence[_Filters]) -> None:
        self.rules = rules
        self.everything = (1 << len(rules)) - 1
        self.fields: list[_Field] = []
        for (value_of, filter_of), filters in zip(_FIELDS, shared, strict=True):
            rules_of: dict[int, int] = {}  # filter id -> bits of the rules that have it
            for i, rule in enumerate(rules):
                found = filter_of(rule)
                if found is not None:
                    fid = filters.add(*found)
                    rules_of[fid] = rules_of.get(fid, 0) | 1 << i
            if rules_of:  # a field no rule filters on costs nothing per alert
                unfiltered = self.everything & ~sum(rules_of.values())
                self.fields.append(_Field(value_of, filters, rules_of, unfiltered))

    def matching(self, alert: Alert) -> list[Rule]:
        candidates = self.everything
        for prefilter in self.fields:
            candidates &= prefilter.mask(alert)
            if not candidates:
                return []
        rules = self.rules
        found = []
        while candidates:  # lowest bit first: file order
            low = candidates & -candidates
            rule = rules[low.bit_length() - 1]
            if rule.matches(alert):
                found.append(rule)
            candidates ^= low
        return found


class Router:
    """Rules indexed by event type, in file order. ``owners``: owner (lower-case) → their
    destinations, and ``fallback`` for an asset with no owner the map knows, for rules that
    send to ``owners``."""

    def __init__(self, rules: Sequence[Rule], owners: Mapping[str, Sequence[str]] | None = None,
                 fallback: Sequence[str] = ()) -> None:
        self.rules = list(rules)
        self.owners = {k.lower(): tuple(v) for k, v in (owners or {}).items()}
        self.fallback = tuple(fallback)
        by_event: dict[str, list[Rule]] = defaultdict(list)
        for rule in self.rules:
            if rule.model.enabled:
                for event in dict.fromkeys(rule.model.event):
                    by_event[event].append(rule)
        shared = [_Filters() for _ in _FIELDS]
        self._by_event = {event: _Bucket(rules, shared) for event, rules in by_event.items()}

    def matching_rules(self, alert: Alert) -> list[Rule]:
        """Every enabled rule that matches, in file order."""
        bucket = self._by_event.get(alert.event_type)
        return bucket.matching(alert) if bucket is not None else []

    def route(self, alert: Alert) -> list[Route]:
        """One route per destination, owned by the first matching rule in file order."""
        matching = self.matching_rules(alert)
        if not matching:
            return []
        owners: dict[str, Rule] = {}
        others: dict[str, list[str]] = defaultdict(list)
        chosen_by: dict[str, str] = {}
        for rule in matching:
            for dest, owner in self._destinations(rule, alert):
                if dest not in owners:
                    owners[dest] = rule
                    if owner is not None:
                        chosen_by[dest] = owner
                elif rule.name not in others[dest] and rule is not owners[dest]:
                    others[dest].append(rule.name)
        return [
            Route(
                destination=dest,
                rule=rule.name,
                dedup_key=dedup_key(rule.name, alert.event_type, alert.asset.id, alert.dedup_key,
                                    alert.check.id if alert.check is not None else None),
                also_matched=tuple(others.get(dest, ())),
                owner=chosen_by.get(dest),
            )
            for dest, rule in owners.items()
        ]

    def _destinations(self, rule: Rule, alert: Alert) -> Iterator[tuple[str, str | None]]:
        """The rule's destinations, ``owners`` replaced by the asset's owners' (each with the
        owner that chose it; ``""`` for the fallback)."""
        for dest in rule.destinations:
            if dest != OWNERS:
                yield dest, None
                continue
            mapped = [o for o in alert.asset.owners if o.lower() in self.owners]
            for owner in mapped:
                for target in self.owners[owner.lower()]:
                    yield target, owner
            if not mapped:
                for target in self.fallback:
                    yield target, ""
