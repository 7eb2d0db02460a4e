"""The Python API, mirroring the command line: load a config, route, send, test."""

from __future__ import annotations

import functools
import os
import random
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .alert import Alert, Asset, Severity
from .config import Config, StateSettings, config_from_dict, load_config, parse_config
from .delivery import Delivery, State
from .errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_QUEUED,
    AlertError,
    ArmorNotifyError,
    ConfigError,
    MuteError,
    Problem,
)
from .gate import Gate
from .history import NO_HISTORY, History
from .intake import (
    AlertInput,
    SourceAlerts,
    parse_alerts,
    read_alerts,
    read_source,
    source_input,
)
from .lineage import roots_above
from .matching import Route
from .plugins import PluginManager, load_plugins
from .sources import Source, SourceInput
from .times import iso, readable
from .validation import suggest

if TYPE_CHECKING:
    from .dispatcher import Dispatcher
    from .ledger import CheckState
    from .lineage import Below, Lineage, LineageFiles  # (LineageFiles imported when first used)
    from .mutes import Mute
    from .outbox import Outbox


STATE_URL_ENV = "ARMOR_NOTIFY_STATE"
RETENTION_EVERY = 600.0
"""How often a worker removes finished deliveries past their retention (seconds)."""
MISSING_EVERY = 5.0
"""How often a worker looks for checks that stopped reporting (at most; seconds)."""
STATE_DIR_ENV = "ARMOR_NOTIFY_STATE_DIR"
POSTGRES_PREFIXES = ("postgresql://", "postgres://")


def is_postgres_url(location: str | os.PathLike[str]) -> bool:
    return isinstance(location, str) and location.lower().startswith(POSTGRES_PREFIXES)


def state_location(state: str | None = None, state_dir: str | os.PathLike[str] | None = None,
                   settings: StateSettings | None = None) -> str | os.PathLike[str] | None:
    """Where the outbox lives: a ``postgresql://`` URL, a SQLite state directory, or ``None``
    for the default directory. The first that is set of: ``state`` (``--state``),
    ``state_dir`` (``--state-dir``), ``$ARMOR_NOTIFY_STATE``, ``$ARMOR_NOTIFY_STATE_DIR``, the
    config's ``state.url``. Given both ``state`` and ``state_dir``: :class:`ConfigError`."""
    if state and state_dir:
        raise ConfigError([Problem("--state", "", "give --state or --state-dir, not both")])
    for chosen, name in ((state, "--state"), (state_dir, ""),
                         (os.environ.get(STATE_URL_ENV), f"${STATE_URL_ENV}"),
                         (os.environ.get(STATE_DIR_ENV), "")):
        if chosen and name and not is_postgres_url(chosen):
            raise ConfigError([Problem(name, "", "must be a postgresql:// URL (a SQLite state "
                                                 "directory is given with --state-dir or "
                                                 f"${STATE_DIR_ENV})")])
        if chosen:
            return chosen
    if settings is not None and settings.url is not None:
        return settings.url.get_secret_value()
    return None


def open_outbox(state: str | os.PathLike[str] | None = None, *,
                create: bool = True) -> Outbox | None:
    """The durable outbox at ``state``: a ``postgresql://`` URL (the ``postgresql`` extra), or
    the SQLite file in that state directory (default: ``$ARMOR_NOTIFY_STATE_DIR``, else the XDG
    state directory). With ``create=False`` no SQLite file is created: ``None`` when there is
    none there yet (``route`` only reads one)."""
    if state is not None and is_postgres_url(state):
        from .outbox_postgres import PostgresOutbox

        return PostgresOutbox.open(str(state))
    from .outbox import FILE_NAME, SqliteOutbox, default_state_dir

    if not create:
        path = Path(state) if state else default_state_dir()
        if not (path / FILE_NAME).exists():
            return None
    return SqliteOutbox.open(state)


_VERDICTS = {"send": "send", "suppress": "suppressed", "hold": "held", "digest": "digest"}


@dataclass(frozen=True)
class SendReport:
    """Every delivery of one ``send``, and the exit code the command line gives for it."""

    alerts: Sequence[Alert]
    deliveries: Sequence[Delivery]
    notes: Mapping[str, str] = field(default_factory=dict)
    """Alert id → what the check ledger did with it (a check result: paged, still failing,
    resolved, passing)."""
    payloads: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """A dry run's: delivery id → what would have been sent (:meth:`Notifier.preview`)."""

    def count(self, state: State) -> int:
        return sum(1 for d in self.deliveries if d.state is state)

    @property
    def exit_code(self) -> int:
        """0 all delivered (or suppressed/skipped); 1 some failed; 3 some still queued."""
        if self.count(State.failed) or self.count(State.dead):
            return EXIT_FAILED
        if self.count(State.queued) or self.count(State.in_flight):
            return EXIT_QUEUED
        return EXIT_OK

    def as_dict(self) -> dict[str, Any]:
        return {
            "alerts": [{"id": a.id, "event_type": a.event_type, "title": a.title,
                        "status": a.status, **({"check": self.notes[a.id]}
                                               if a.id in self.notes else {})}
                       for a in self.alerts],
            "deliveries": [{**d.as_dict(), **({"payload": self.payloads[d.id]}
                                              if d.id in self.payloads else {})}
                           for d in self.deliveries],
            "summary": {s.value: self.count(s) for s in State},
            "exit_code": self.exit_code,
        }


class Notifier:
    """armor-notify for Python programs.

    >>> notifier = Notifier.from_file("armor-notify.yaml")
    >>> report = notifier.send(notifier.parse_alerts({"event_type": "schema_change", ...}))
    >>> [(d.destination, d.state.value) for d in report.deliveries]
    """

    def __init__(self, config: Config, plugins: PluginManager, *,
                 outbox: Outbox | None = None, max_workers: int = 32,
                 rng: random.Random | None = None) -> None:
        self.config = config
        self.plugins = plugins
        if outbox is not None:
            self.outbox = outbox
        self._max_workers, self._rng = max_workers, rng
        self.gate = Gate(config)
        """Noise controls: schedules, blackouts, cooldowns, daily limits and digests."""
        self._roots_seen: tuple[Sequence[Any], Lineage, dict[str, float], Below,
                                 dict[str, str]] | None = None
        """What :meth:`explain` last made of the failing checks (``route`` asks per alert)."""

    @classmethod
    def from_file(cls, path: str | os.PathLike[str] | None = None, *,
                  plugins: PluginManager | None = None, **kwargs: Any) -> Notifier:
        """Load plugins (once per process) and a config file (``None``: the default lookup)."""
        pm = plugins or load_plugins()
        return cls(load_config(path, pm.registry), pm, **kwargs)

    @classmethod
    def from_yaml(cls, text: str, *, plugins: PluginManager | None = None,
                  environ: Mapping[str, str] | None = None, **kwargs: Any) -> Notifier:
        pm = plugins or load_plugins()
        return cls(parse_config(text, pm.registry, environ=environ), pm, **kwargs)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, plugins: PluginManager | None = None,
                  **kwargs: Any) -> Notifier:
        pm = plugins or load_plugins()
        return cls(config_from_dict(data, pm.registry), pm, **kwargs)

    # The outbox and the dispatcher are made on first use: routing and explaining need neither.
    @functools.cached_property
    def outbox(self) -> Outbox:
        """Where deliveries are written before they are attempted (in memory unless given)."""
        from .outbox import SqliteOutbox

        return SqliteOutbox.memory()

    @functools.cached_property
    def lineage(self) -> LineageFiles:
        """The config's lineage (``lineage:``), read when first used and again when a file
        changes; ``lineage.current()`` is ``None`` when there is none or it cannot be read."""
        from .lineage import LineageFiles

        manifest, edges = self.config.lineage_paths()
        return LineageFiles(manifest, edges)

    @functools.cached_property
    def dispatcher(self) -> Dispatcher:
        """Leases, attempts, retries and records deliveries (with the senders it makes)."""
        from .dispatcher import Dispatcher

        return Dispatcher(self.config, max_workers=self._max_workers,
                          rng=self._rng or random.Random())

    def close(self) -> None:
        """Release senders' connections and the outbox."""
        made = vars(self)
        if "dispatcher" in made:
            self.dispatcher.close()
        if "outbox" in made:
            self.outbox.close()

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- alerts -----------------------------------------------------------------------------------
    def parse_alerts(self, data: Any, *, source: str = "<input>") -> list[Alert]:
        """Validate alert data (an object or a list); raises ``AlertError`` listing every problem."""
        return parse_alerts(data, self.plugins.registry.event_types, source=source)

    def read_alerts(self, path: str, *, source: str | None = None) -> list[Alert]:
        """Alerts from a JSON file, ``-`` for standard input (at most 16 MiB); with ``source``,
        what that source (``dbt``, ``alertmanager``…) makes of the file or directory."""
        if source is None:
            return read_alerts(path, self.plugins.registry.event_types)
        with self.open_alerts(path, source=source) as found:
            return list(found)

    def open_alerts(self, path: str, *, source: str | None = None) -> AlertInput | SourceAlerts:
        """Alerts from a JSON file or ``-``, streamed when they are JSON lines: ``check()`` them
        (every problem at once), then iterate; use it as a context manager. With ``source``,
        the named source reads the file, directory or standard input instead."""
        kinds = self.plugins.registry.event_types
        if source is None:
            return AlertInput(path, kinds)
        return SourceAlerts(self.source(source), source_input(path), kinds)

    def read_source(self, source: str, given: SourceInput) -> list[Alert]:
        """What the source named ``source`` makes of ``given`` (a file, a directory or bytes:
        an HTTP request body), validated; raises ``AlertError`` with every problem."""
        return read_source(self.source(source), given, self.plugins.registry.event_types)

    def source(self, name: str) -> Source:
        """The installed source called ``name``; ``AlertError`` naming those installed."""
        sources = self.plugins.registry.sources
        if name not in sources:
            raise AlertError([Problem("--source", "", f"unknown source '{name}'"
                                      f"{suggest(name, sources)}; installed: "
                                      f"{', '.join(sorted(sources)) or 'none'}"
                                      f"{self.plugins.registry.failure_note}")])
        return sources[name]

    # -- what the commands do ---------------------------------------------------------------------
    def route(self, alert: Alert) -> list[Route]:
        """Which destinations get ``alert``, from which rule, with which dedup key. Sends nothing."""
        return self.config.router.route(alert)

    def matching_rules(self, alert: Alert) -> list[str]:
        return [r.name for r in self.config.router.matching_rules(alert)]

    def enqueue(self, alerts: Alert | Iterable[Alert]) -> list[Delivery]:
        """Route alerts and write their deliveries to the outbox; send nothing yet.

        A delivery of an alert already accepted within ``defaults.repeat_window`` (same alert
        id and status, same destination) is not written again: the stored one is returned with
        ``repeat`` set. Check results (alerts with a ``check``) are judged by the check ledger
        first: what they write is its decision (a page, a resolve, or nothing).
        """
        return self.accept([alerts] if isinstance(alerts, Alert) else list(alerts))[0]

    def accept(self, alerts: Sequence[Alert]) -> tuple[list[Delivery], dict[str, str]]:
        """:meth:`enqueue`, with what the check ledger did with each check result (alert id →
        a note: paged, still failing, resolved, passing), as ``send`` and ``serve`` show it."""
        return self._intake(list(alerts))

    def _intake(self, alerts: list[Alert], *, lease: bool = False, sweep: bool = False,
                now: float | None = None) -> tuple[list[Delivery], dict[str, str]]:
        """Write ``alerts``' deliveries at ``now`` (default: the clock), leased to this process
        when ``lease``; with ``sweep`` also ``check_missing`` for overdue checks. Returns the
        deliveries and the ledger's notes."""
        planned = self.config.plan(alerts)
        checks = None
        if sweep or any(a.check is not None for a in alerts):
            from .check_intake import CheckRules

            checks = CheckRules(self.config, alerts, sweep=sweep,
                                lineage=self.lineage.current())
        out = []
        lease_to = (self.dispatcher.owner, self.dispatcher.rules_for) if lease else None
        for delivery, new in self.outbox.enqueue(
                planned, repeat_window=self.config.defaults.repeat_window,
                now=self.dispatcher.clock() if now is None else now, policy=self.gate,
                lease_to=lease_to, checks=checks):
            delivery.repeat = not new
            out.append(delivery)
        return out, checks.notes if checks is not None else {}

    # -- checks and mutes --------------------------------------------------------------------------
    def notice_missing(self, now: float | None = None) -> list[Delivery]:
        """Raise ``check_missing`` for every check with no result for twice its
        ``expect_every`` (once per check, until it reports again); what a worker does every few
        seconds. Returns the deliveries written."""
        moment = self.dispatcher.clock() if now is None else now
        due = self.outbox.next_overdue()
        if due is None or due > moment:
            return []
        return self._intake([], sweep=True, now=moment)[0]

    def checks(self, *, failing: bool = False) -> list[CheckState]:
        """The check-state ledger: every check seen, failing ones first."""
        return self.outbox.checks(failing=failing)

    def mute(self, *, assets: Sequence[str] = (), tags: Sequence[str] = (),
             rules: Sequence[str] = (), reason: str, seconds: float,
             author: str | None = None) -> Mute:
        """Hold the triggers of these assets (glob patterns), tags or rules for ``seconds``
        (at most 30 days): they are delivered when the mute ends if still failing."""
        from .mutes import MAX_MUTE, MuteScope

        scope = MuteScope(tuple(assets), tuple(tags), tuple(rules))
        problems = []
        if not scope:
            problems.append(Problem("mute", "", "say what to mute: --asset, --tag or --rule "
                                                "(each may be repeated)"))
        unknown = [r for r in rules if self.config.rule(r) is None]
        problems += [Problem("--rule", "", f"no rule named '{r}'"
                             f"{suggest(r, [x.name for x in self.config.rules])}")
                     for r in unknown]
        if not reason.strip():
            problems.append(Problem("--reason", "", "say why (it is shown with every alert "
                                                    "the mute holds)"))
        if not 0 < seconds <= MAX_MUTE:
            problems.append(Problem("--for", "", "a mute lasts more than 0 s and at most 30 "
                                                 "days (it must end)"))
        if problems:
            raise MuteError(problems)
        now = self.dispatcher.clock()
        return self.outbox.add_mute(scope, " ".join(reason.split()), author or _user(), now=now,
                                    until=now + seconds)

    def unmute(self, mute_id: int) -> tuple[Mute, list[str]]:
        """End a mute now: what it held is due at once (unless another mute covers it, or its
        rule's schedule or a blackout with ``hold: true`` still holds it).
        Returns the mute and the ids of the deliveries released."""
        mute, released = self.outbox.lift_mute(mute_id, self.dispatcher.clock(),
                                               self.config.defaults.timezone,
                                               self.gate.closed_until)
        if mute is None:
            raise ArmorNotifyError(f"no mute #{mute_id} in the outbox (see `armor-notify mute "
                                   "list --all`)")
        return mute, released

    def mutes(self, *, ended: bool = False) -> list[Mute]:
        """Mutes in force (``ended``: also those lifted or expired), newest first."""
        return self.outbox.mutes(self.dispatcher.clock(), ended=ended)

    def plan(self, alerts: Alert | Iterable[Alert]) -> list[Delivery]:
        """The deliveries ``send`` would write for ``alerts`` (already final ones marked:
        suppressed because another destination has the same target, or ``send_resolved`` is
        off). Writes and sends nothing."""
        return self.config.plan([alerts] if isinstance(alerts, Alert) else alerts)

    def preview(self, alerts: Alert | Iterable[Alert], *,
                destination: str | None = None) -> list[dict[str, Any]]:
        """What each destination the alerts route to would be sent, exactly (the PagerDuty
        event, the Slack payload, the email's headers and parts), with secrets masked; only
        ``destination``'s when given. Judged by routing alone (not by noise controls, mutes or
        the check ledger, which ``route`` explains). Sends and writes nothing."""
        if destination is not None and destination not in self.config.destinations:
            names = list(self.config.destinations)
            raise ArmorNotifyError(f"no destination named '{destination}'"
                                   f"{suggest(destination, names)} (the config has: "
                                   f"{', '.join(names) or 'none'})")
        shown = []
        for d in self.plan(alerts):
            if destination is not None and d.destination != destination:
                continue
            dest = self.config.destinations[d.destination]
            entry: dict[str, Any] = {
                "alert_id": d.alert.id, "status": d.alert.status, "title": d.alert.title,
                "destination": d.destination, "type": dest.type.name, "rule": d.rule,
                "dedup_key": d.dedup_key}
            if d.state is State.suppressed:
                entry["not_sent_because"] = d.reason
            else:
                entry["payload"] = self.dispatcher.preview(d)
            shown.append(entry)
        return shown

    def explain(self, alert: Alert, *, at: float | None = None,
                history: History = NO_HISTORY) -> dict[str, Any]:
        """What ``route`` shows for ``alert``, as data: the matching rules, and for each routed
        destination its rule, dedup key and whether it would be sent at ``at`` (default: now),
        judged by the noise controls and mutes against ``history`` (an outbox's ``history()``;
        none by default), and for a check result by the check ledger. Sends and writes
        nothing."""
        moment = time.time() if at is None else at
        verdicts: dict[str, tuple[str, str]] = {}
        for d in self.plan(alert):
            if d.state is State.suppressed:
                verdicts[d.destination] = ("suppressed", d.reason)
            else:
                decision = self.gate.decide(d, moment, history)
                verdicts[d.destination] = (_VERDICTS[decision.action], decision.reason)
        routed = self.route(alert)
        chosen = {r.destination: r.owner for r in routed}
        routes = [(r.destination, r.rule, r.also_matched, r.dedup_key) for r in routed]
        check = None
        if alert.check is not None:
            check, routes = self._explain_check(alert, moment, history, routes, verdicts)
            if check["decision"] == "page":
                self._explain_lineage(alert, moment, history, check, routes, verdicts)
        destinations = self.config.destinations
        return {
            "alert_id": alert.id,
            "event_type": alert.event_type,
            "status": alert.status,
            "title": alert.title,
            "asset": alert.asset.name,
            "matching_rules": self.matching_rules(alert),
            **({"check": check} if check is not None else {}),
            "routes": [{
                "destination": name,
                "type": destinations[name].type.name if name in destinations else "?",
                "target": destinations[name].describe() if name in destinations else "?",
                "rule": rule,
                "also_matched": list(also),
                "dedup_key": dedup,
                "owner": chosen.get(name),
                "sent": verdicts[name][0] == "send",
                "outcome": verdicts[name][0],
                "not_sent_because": verdicts[name][1] or None,
            } for name, rule, also, dedup in routes],
        }

    def _explain_lineage(self, alert: Alert, at: float, history: History,
                         check: dict[str, Any],
                         routes: list[tuple[str, str, tuple[str, ...], str]],
                         verdicts: dict[str, tuple[str, str]]) -> None:
        """For a check that would start failing: whether it folds into a failing root upstream
        (``check["lineage"]``), or why it pages on its own."""
        if not self.config.lineage.dbt_manifest and not self.config.lineage.edges:
            return
        graph = self.lineage.current()
        if graph is None:
            check["lineage"] = f"the lineage cannot be read ({self.lineage.error}): pages on its own"
            return
        settings = self.config.lineage
        found = history.failing(at - settings.window)
        seen = self._roots_seen
        if seen is None or seen[0] is not found or seen[1] is not graph:  # once per input
            table = {root.asset.lower(): root.since for root in found}
            seen = self._roots_seen = (found, graph, table,
                                       graph.below(table, depth=settings.depth), {})
        _, _, failing, below, notes = seen
        asset = alert.asset
        roots = roots_above(below, asset.name, asset.id, asset.upstream, failing)
        if not roots:
            check["lineage"] = (
                "nothing upstream of it is failing: pages on its own"
                if asset.upstream or asset.name in below.keys
                or graph.find(asset.name, asset.id) is not None
                else f"{asset.name} is not in the lineage: pages on its own")
            return
        root = max(roots, key=lambda r: (r[1], -failing[r[0].lower()]))[0].lower()
        why = notes.get(root)
        if why is None:  # once per root and input
            from .ledger import folded_note

            entry = next(f for f in found if f.asset.lower() == root)
            node = graph.find(entry.asset)
            why = notes[root] = folded_note(
                graph.names[node] if node is not None else entry.asset,  # as the lineage has it
                entry.since, self.config.defaults.timezone, [r.dedup_key for r in entry.routes])
        check["lineage"] = why
        for name, rule_name, _, _ in routes:
            rule = self.config.rule(rule_name)
            if verdicts[name][0] == "send" and (rule is None or rule.model.fold != "off"):
                verdicts[name] = ("suppressed", why) if rule is None or \
                    rule.model.fold == "suppress" else ("send", f"{why}, with its dedup key")

    def _explain_check(self, alert: Alert, at: float, history: History,
                       routes: list[tuple[str, str, tuple[str, ...], str]],
                       verdicts: dict[str, tuple[str, str]],
                       ) -> tuple[dict[str, Any], list[tuple[str, str, tuple[str, ...], str]]]:
        """The check ledger's part of :meth:`explain`: its entry and decision, and the routes
        and verdicts it makes (a resolve goes where the trigger went)."""
        from . import ledger

        assert alert.check is not None
        row = history.check_state(ledger.key_of(alert))
        zone = self.config.defaults.timezone
        verdict = ledger.judge(row, alert.check, errors=self.config.checks.errors, zone=zone)
        check = {"id": alert.check.id, "status": alert.check.status,
                 "state": row.state if row is not None else "new",
                 "since": iso(row.since) if row is not None else None,
                 "decision": verdict.action, "note": verdict.note}
        if verdict.action == "resolve" and row is not None and row.incident is not None:
            routes = [(r.destination, r.rule, (), r.dedup_key) for r in row.incident.routes]
            for r in row.incident.routes:
                dest = self.config.destinations.get(r.destination)
                verdicts[r.destination] = ("send", verdict.note) if dest is None or \
                    dest.send_resolved else ("suppressed", "send_resolved is off")
        elif verdict.action == "hold" and row is not None:
            last = max(row.since, row.reminded_at or 0.0)
            for name, rule_name, _, _ in routes:
                rule = self.config.rule(rule_name)
                every = rule.model.remind_every if rule is not None else None
                if verdicts[name][0] != "send":
                    continue
                if every is not None and at - last >= every:
                    verdicts[name] = ("send", f"reminder: still failing since "
                                              f"{readable(row.since, zone)}")
                else:
                    verdicts[name] = ("suppressed", verdict.note)
        elif verdict.action != "page":
            for name, *_ in routes:
                verdicts[name] = ("suppressed", verdict.note)
        return check, routes

    def drain(self, *, wait: float | None = None, ids: Collection[str] | None = None,
              on_final: Callable[[Delivery], None] | None = None, stop_when_idle: bool = True,
              poll: float = 1.0, retention: float | None = None,
              on_outbox_error: Callable[[Exception, float], None] | None = None,
              stop: threading.Event | None = None) -> None:
        """Deliver what is queued in the outbox (only ``ids``, if given) until nothing is left
        or ``wait`` seconds have passed. A worker passes ``stop_when_idle=False``: it then runs
        until interrupted, looking for new deliveries every ``poll`` seconds.

        ``retention``: remove finished deliveries older than this many seconds, when the drain
        starts and every :data:`RETENTION_EVERY` seconds after. ``on_outbox_error``: keep going
        when the outbox fails (a database that went away): it is called with the error and the
        seconds until the next try, and the drain starts again then (at most 30 s apart); what
        was accepted stays in the outbox, and attempts that were running are taken up again
        when their leases expire. Without it the error is raised. ``stop`` ends it from another
        thread (set it, then :meth:`wake`): attempts running finish, the rest stays queued."""
        from .dispatcher import Chore
        from .outbox import OutboxError

        def remove_old(now: float) -> None:
            assert retention is not None
            self.outbox.purge(older_than=retention, now=now)

        def notice_missing(now: float) -> None:
            self.notice_missing(now)

        chores = [] if retention is None else [Chore(RETENTION_EVERY, remove_old)]
        if ids is None:  # a worker (also `worker --once`): checks that stopped reporting
            chores.append(Chore(min(MISSING_EVERY, 5 * poll), notice_missing))
        backoff = 1.0
        while True:
            began = time.monotonic()
            try:
                self.dispatcher.deliver(self.outbox, ids=ids, wait_seconds=wait,
                                        on_final=on_final, stop_when_idle=stop_when_idle,
                                        poll=poll, chores=chores, stop=stop)
                return
            except OutboxError as exc:
                if on_outbox_error is None:
                    raise
                if time.monotonic() - began > 60:  # it had been working: start over gently
                    backoff = 1.0
                on_outbox_error(exc, backoff)
                if stop is None:
                    time.sleep(backoff)
                elif stop.wait(backoff):  # stopped while waiting to try again
                    return
                backoff = min(backoff * 2, 30.0)
                for chore in chores:
                    chore.due = 0.0

    def wake(self) -> None:
        """Wake this notifier's running drain: work was queued by another thread (``serve``)."""
        if "dispatcher" in vars(self):
            self.dispatcher.wake()

    def inspect(self, states: Iterable[str | State] = (), limit: int = 100) -> list[Delivery]:
        """Deliveries in the outbox, newest first, optionally only in these states."""
        return self.outbox.find([State(s).value for s in states], limit)

    def send(self, alerts: Alert | Iterable[Alert], *, dry_run: bool = False,
             wait: float | None = None,
             on_final: Callable[[Delivery], None] | None = None,
             payloads: bool = False) -> SendReport:
        """Route, write to the outbox and deliver; returns when every delivery is final or
        ``wait`` seconds have passed (what is still retrying then stays queued).

        ``on_final`` is called on the calling thread once for each delivery of these alerts as
        it becomes final during the send (e.g. for a progress bar): at once for those final when
        written (suppressed, or skipped in a dry run), then as attempts end. Not for repeats of
        deliveries accepted earlier, nor for those still queued when ``send`` returns.

        A dry run with ``payloads`` also reports what each delivery would have sent
        (:attr:`SendReport.payloads`, as :meth:`preview` shows it)."""
        alerts = [alerts] if isinstance(alerts, Alert) else list(alerts)
        if dry_run:
            skipped = self._skip_all(alerts, on_final)
            return SendReport(alerts, skipped, payloads={
                d.id: self.dispatcher.preview(d) for d in skipped
                if payloads and d.state is State.skipped})
        # Deliveries due now are leased to this process as they are written, so sending them
        # needs no separate claim.
        deliveries, notes = self._intake(alerts, lease=wait is None or wait > 0)
        if on_final is not None:
            for d in deliveries:
                if not d.repeat and d.state.final:
                    on_final(d)
        # Held ones (a mute, a schedule with hold: true) wait in the outbox for a worker.
        fresh = [d.id for d in deliveries if not d.repeat and d.state is not State.batched
                 and not d.state.final and not d.held]
        if fresh:
            deliveries = self._deliver_fresh(deliveries, fresh, wait, on_final)
        return SendReport(alerts, deliveries, notes)

    def _skip_all(self, alerts: Sequence[Alert],
                  on_final: Callable[[Delivery], None] | None) -> list[Delivery]:
        """A dry run: what would be sent, each marked skipped."""
        planned = self.plan(alerts)
        for d in planned:
            if d.state is State.queued:
                d.finish(State.skipped, "dry run: nothing was sent")
            if on_final is not None:
                on_final(d)
        return planned

    def _deliver_fresh(self, deliveries: list[Delivery], fresh: list[str], wait: float | None,
                       on_final: Callable[[Delivery], None] | None) -> list[Delivery]:
        """Deliver the newly accepted deliveries ``fresh`` (and any earlier one for the same
        dedup key that must go first); ``deliveries`` as they are when this returns."""
        finished: dict[str, Delivery] = {}
        leased = [d for d in deliveries if not d.repeat and d.state is State.in_flight]
        # A resolve waits for its own earlier trigger if that is still queued: drive both.
        leased_ids = {d.id for d in leased}
        before = self.outbox.older_pending([i for i in fresh if i not in leased_ids])
        wanted = set(fresh)

        def final(delivery: Delivery) -> None:
            if delivery.id in wanted and delivery.id not in finished:
                finished[delivery.id] = delivery
                if on_final is not None:
                    on_final(delivery)

        self.dispatcher.deliver(self.outbox, ids=[*before, *fresh], wait_seconds=wait,
                                leased=leased, on_final=final)
        unfinished = [i for i in fresh if i not in finished]
        if unfinished:  # still queued: read their state (next attempt, last reason)
            finished.update((d.id, d) for d in self.outbox.find(ids=unfinished,
                                                                 limit=len(unfinished)))
        return [self._mark_repeat(finished.get(d.id, d), d.repeat) for d in deliveries]

    @staticmethod
    def _mark_repeat(delivery: Delivery, repeat: bool) -> Delivery:
        delivery.repeat = repeat
        return delivery

    def test(self, destination: str, *, resolve: bool = False,
             rng: random.Random | None = None) -> list[Delivery]:
        """Send a test event to one destination, as the product's Test button does.

        The first delivery is the trigger; with ``resolve`` a second one resolves it (sent even
        when the destination's ``send_resolved`` is off).
        """
        if destination not in self.config.destinations:
            names = list(self.config.destinations)
            raise ConfigError([Problem(self.config.path, "destinations",
                                       f"no destination named '{destination}'"
                                       f"{suggest(destination, names)}; configured: "
                                       f"{', '.join(names) or 'none'}")])
        number = (rng or random.Random()).randint(10000, 99999)
        dedup = f"anomalyarmor-test-{number}"
        alert = test_alert(dedup, self.config.defaults.source)
        # Test events never go to the durable outbox: one that fails is reported, not retried later.
        from .dispatcher import resolved_copy
        from .outbox import SqliteOutbox

        scratch = SqliteOutbox.memory()
        try:
            results = []
            for event in (alert, resolved_copy(alert)) if resolve else (alert,):
                delivery = self.dispatcher.test_delivery(destination, event, dedup)
                scratch.enqueue([delivery], repeat_window=0, now=self.dispatcher.clock())
                self.dispatcher.deliver(scratch, ids=[delivery.id])
                results.append(scratch.get(delivery.id) or delivery)
                if results[-1].state is not State.delivered:
                    break
            return results
        finally:
            scratch.close()


def _user() -> str:
    """Who sets a mute: ``$USER``, else the login name."""
    import getpass

    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def test_alert(dedup_key: str, source: str) -> Alert:
    """The synthetic alert ``armor-notify test`` sends."""
    return Alert(
        id=dedup_key,
        event_type="schema_change",
        severity=Severity.critical,
        title=f"Test event from {source} (armor-notify)",
        description="This is a test event sent by `armor-notify test` to check that this "
                    "destination works. No action is needed; resolve it once you have seen it.",
        asset=Asset(id="anomalyarmor-test", name="armor_notify.test.connection",
                    data_source="armor-notify", environment="test"),
        dedup_key=dedup_key,
    )
