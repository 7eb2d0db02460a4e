"""Matching alerts to rules (SPEC §3), compiled once per config so each alert costs little.

Rules are indexed by event type; every glob set is one precompiled regular expression.
"""

from __future__ import annotations

import fnmatch
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

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


class Router:
    """Rules indexed by event type, in file order."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = list(rules)
        self._by_event: dict[str, list[Rule]] = defaultdict(list)
        for rule in self.rules:
            if rule.model.enabled:
                for event in dict.fromkeys(rule.model.event):
                    self._by_event[event].append(rule)

    def matching_rules(self, alert: Alert) -> list[Rule]:
        """Every enabled rule that matches, in file order."""
        return [r for r in self._by_event.get(alert.event_type, ()) if r.matches(alert)]

    def route(self, alert: Alert) -> list[Route]:
        """One route per destination, owned by the first matching rule in file order."""
        owners: dict[str, Rule] = {}
        others: dict[str, list[str]] = defaultdict(list)
        for rule in self.matching_rules(alert):
            for dest in rule.destinations:
                if dest not in owners:
                    owners[dest] = rule
                elif rule.name not in others[dest] and rule is not owners[dest]:
                    others[dest].append(rule.name)
        return [
            Route(
                destination=dest,
                rule=rule.name,
                dedup_key=dedup_key(rule.name, alert.event_type, alert.asset.id, alert.dedup_key),
                also_matched=tuple(others.get(dest, ())),
            )
            for dest, rule in owners.items()
        ]
