"""The ``armor-notify`` command line (SPEC §6)."""

from __future__ import annotations

import json
import signal
import time
import traceback
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from . import __version__
from .alert import Alert
from .api import EXIT_FAILED, EXIT_OK, EXIT_QUEUED, EXIT_USAGE, Notifier, SendReport
from .config import load_config
from .delivery import Delivery, State
from .errors import ArmorNotifyError, ProblemsError
from .noise import NO_HISTORY, History, zone
from .outbox import FILE_NAME, SqliteOutbox, default_state_dir
from .output import table
from .plugins import PluginManager, load_plugins

CONFIG_HELP = "Config file (default: $ARMOR_NOTIFY_CONFIG, else ./armor-notify.yaml)."
STATE_DIR_HELP = ("Where the outbox lives (default: $ARMOR_NOTIFY_STATE_DIR, else "
                  "$XDG_STATE_HOME/armor-notify, else ~/.local/state/armor-notify).")
json_option = click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
state_dir_option = click.option("--state-dir", metavar="DIR", help=STATE_DIR_HELP)


class _Group(click.Group):
    """Turns user errors into a message on stderr and exit code 2, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ArmorNotifyError as exc:
            _report_error(ctx, exc)
            ctx.exit(EXIT_USAGE)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:
            if ctx.find_root().params.get("debug"):
                traceback.print_exc()
            else:
                click.echo(f"armor-notify: internal error: {type(exc).__name__}: {exc}\n"
                           "Run again with --debug for a traceback, and please report it.",
                           err=True)
            ctx.exit(EXIT_FAILED)


def _report_error(ctx: click.Context, exc: ArmorNotifyError) -> None:
    sub = ctx.invoked_subcommand
    as_json = bool(sub and ctx.obj and ctx.obj.get("json"))
    if as_json:
        problems = [p.__dict__ for p in exc.problems] if isinstance(exc, ProblemsError) else []
        click.echo(json.dumps({"error": str(exc), "problems": problems}, indent=2))
    click.echo(f"armor-notify: {exc}", err=True)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="armor-notify")
@click.option("--debug", is_flag=True, help="Show tracebacks for internal errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Route data-observability alerts to PagerDuty, Slack, email and plugin destinations."""
    ctx.obj = {"debug": debug}


def _plugins() -> PluginManager:
    pm = load_plugins()
    for line in pm.plugin_errors():
        click.echo(f"armor-notify: warning: {line}", err=True)
    return pm


def _notifier(config: str | None) -> Notifier:
    return Notifier.from_file(config, plugins=_plugins())


def _json_flag(ctx: click.Context, as_json: bool) -> None:
    ctx.find_root().obj["json"] = as_json


def _emit(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _emit_list(key: str, items: Iterable[Any]) -> None:
    """``_emit({key: list(items)})``, written item by item (the same text, in flat memory)."""
    click.echo(f'{{\n  "{key}": [', nl=False)
    count = 0
    for item in items:
        text = json.dumps(item, indent=2, default=str).replace("\n", "\n    ")
        click.echo(f'{"," if count else ""}\n    {text}', nl=False)
        count += 1
    click.echo("\n  ]\n}" if count else "]\n}")


# -- send -------------------------------------------------------------------------------------------
DEFAULT_WAIT = 30.0


def _open_outbox(state_dir: str | None) -> SqliteOutbox:
    return SqliteOutbox.open(state_dir)


@cli.command()
@click.argument("event", metavar="EVENT")
@click.option("--config", "-c", "config", metavar="F", help=CONFIG_HELP)
@json_option
@click.option("--dry-run", is_flag=True, help="Route and show what would be sent; send nothing.")
@click.option("--wait", "wait", type=click.FloatRange(min=0), default=DEFAULT_WAIT,
              show_default=True, metavar="SECONDS",
              help="How long to keep delivering; what is still retrying then stays queued for "
                   "`armor-notify worker`. 0 accepts and queues without sending.")
@state_dir_option
@click.pass_context
def send(ctx: click.Context, event: str, config: str | None, as_json: bool, dry_run: bool,
         wait: float, state_dir: str | None) -> None:
    """Route and deliver the alert(s) in EVENT, a JSON file (- for stdin).

    Every delivery is written to the outbox before it is attempted.
    Exit codes: 0 all delivered (or suppressed/skipped), 1 some failed, 2 bad config or input,
    3 some still queued for retry.
    """
    _json_flag(ctx, as_json)
    pm = _plugins()
    cfg = load_config(config, pm.registry)
    outbox = None if dry_run else _open_outbox(state_dir)
    with Notifier(cfg, pm, outbox=outbox) as notifier:
        alerts = notifier.read_alerts(event)
        report = notifier.send(alerts, dry_run=dry_run, wait=wait)
    if as_json:
        _emit(report.as_dict())
    else:
        _print_report(report)
        batched = report.count(State.batched)
        if batched:
            click.echo(f"{batched} collected for a digest: `armor-notify worker` sends it when "
                       "its window closes or fills.")
        queued = report.count(State.queued) + report.count(State.in_flight)
        if queued:
            click.echo(f"{queued} deliver{'ies are' if queued != 1 else 'y is'} still queued in "
                       f"the outbox: `armor-notify worker` delivers "
                       f"{'them' if queued != 1 else 'it'}.")
    ctx.exit(report.exit_code)


def _print_report(report: SendReport) -> None:
    by_alert: dict[str, list[Delivery]] = {a.id: [] for a in report.alerts}
    for d in report.deliveries:
        by_alert[d.alert.id].append(d)
    for alert in report.alerts:
        click.echo(f"Alert {alert.id}: {alert.event_type} {alert.status} — {alert.title} "
                   f"({alert.asset.name})")
        items = by_alert[alert.id]
        if not items:
            click.echo("  no rule matched: nothing to send\n")
            continue
        rows = [[d.destination, d.destination_type, d.rule, _state_text(d.state),
                 str(d.attempt_count), _detail(d)] for d in items]
        click.echo(_indent(table(["DESTINATION", "TYPE", "RULE", "STATE", "ATTEMPTS", "DETAIL"],
                                 rows, max_width=90)))
        for d in items:
            if d.state in (State.failed, State.dead) and (d.reason or d.hint):
                click.echo(f"  {d.destination}: {d.reason}")
                if d.hint:
                    click.echo(f"    hint: {d.hint}")
        click.echo("")
    counts = [f"{report.count(s)} {s.value}" for s in State if report.count(s)]
    click.echo(", ".join(counts) if counts else "nothing to deliver")


def _state_text(state: State) -> str:
    return {State.queued: "queued (retrying)", State.in_flight: "in flight",
            State.batched: "digest"}.get(state, state.value)


def _detail(d: Delivery) -> str:
    if d.repeat:
        return f"already accepted at {_when(d.created_at)}: not sent again"
    if d.state is State.queued:
        return f"next attempt {_when(d.next_attempt_at)}; last: {d.reason}"
    if d.state is State.delivered and d.details.get("dedup_key"):
        return f"dedup key {d.details['dedup_key']}"
    return d.reason


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


# -- route ------------------------------------------------------------------------------------------
@cli.command()
@click.argument("event", metavar="EVENT")
@click.option("--config", "-c", "config", metavar="F", help=CONFIG_HELP)
@json_option
@click.option("--at", "at", metavar="TIME",
              help="Judge schedules, blackouts, cooldowns and daily limits at this ISO 8601 time "
                   "(default: now; a time without a zone is in defaults.timezone).")
@click.option("--state-dir", metavar="DIR", help=STATE_DIR_HELP + " Read for cooldowns and "
              "daily limits; never written.")
@click.pass_context
def route(ctx: click.Context, event: str, config: str | None, as_json: bool, at: str | None,
          state_dir: str | None) -> None:
    """Show which rules match EVENT and which destinations would get it; send nothing.

    JSON lines (one alert a line) are read as a stream, so files of any size route in flat
    memory; every line is checked before anything is printed."""
    _json_flag(ctx, as_json)
    notifier = _notifier(config)
    with notifier.open_alerts(event) as source:
        source.check()
        moment = _parse_at(at, notifier.config.defaults.timezone)
        history = _read_history(state_dir)
        results = (_route_result(notifier, alert, moment, history) for alert in source)
        if as_json:
            _emit_list("alerts", results)
            return
        for res in results:
            _print_route(res)


def _route_result(notifier: Notifier, alert: Alert, moment: float,
                  history: History) -> dict[str, Any]:
    verdicts: dict[str, tuple[str, str]] = {}
    for d in notifier.dispatcher.plan([alert]):
        if d.state is State.suppressed:
            verdicts[d.destination] = ("suppressed", d.reason)
        else:
            decision = notifier.gate.decide(d, moment, history)
            verdicts[d.destination] = (
                {"send": "send", "suppress": "suppressed", "hold": "held",
                 "digest": "digest"}[decision.action], decision.reason)
    routes = notifier.route(alert)
    return {
        "alert_id": alert.id,
        "event_type": alert.event_type,
        "status": alert.status,
        "title": alert.title,
        "asset": alert.asset.name,
        "matching_rules": notifier.matching_rules(alert),
        "routes": [{
            "destination": r.destination,
            "type": notifier.config.destinations[r.destination].type.name,
            "target": notifier.config.destinations[r.destination].describe(),
            "rule": r.rule,
            "also_matched": list(r.also_matched),
            "dedup_key": r.dedup_key,
            "sent": verdicts[r.destination][0] == "send",
            "outcome": verdicts[r.destination][0],
            "not_sent_because": verdicts[r.destination][1] or None,
        } for r in routes],
    }


def _print_route(res: dict[str, Any]) -> None:
    click.echo(f"Alert {res['alert_id']}: {res['event_type']} {res['status']} — "
               f"{res['title']} ({res['asset']})")
    if not res["routes"]:
        click.echo("  no rule matched: nothing would be sent\n")
        return
    click.echo(f"  matching rules: {', '.join(res['matching_rules'])}")
    rows = [[r["destination"], r["type"], r["target"], r["rule"],
             ", ".join(r["also_matched"]) or "-", r["dedup_key"],
             "yes" if r["sent"] else f"{_OUTCOME_WORDS[r['outcome']]}: {r['not_sent_because']}"]
            for r in res["routes"]]
    click.echo(_indent(table(["DESTINATION", "TYPE", "TARGET", "RULE", "ALSO MATCHED",
                              "DEDUP KEY", "SENT"], rows, max_width=80)))
    click.echo("")


_OUTCOME_WORDS = {"suppressed": "no", "held": "later", "digest": "in a digest", "send": "yes"}


def _parse_at(text: str | None, zone_name: str) -> float:
    if text is None:
        return time.time()
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise click.BadParameter(f"'{text}' is not an ISO 8601 time such as "
                                 "2026-12-24T09:30 or 2026-12-24T09:30:00+01:00",
                                 param_hint="--at") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone(zone_name))
    return moment.timestamp()


def _read_history(state_dir: str | None) -> History:
    path = Path(state_dir) if state_dir else default_state_dir()
    if (path / FILE_NAME).exists():
        return SqliteOutbox(str(path / FILE_NAME)).history()
    return NO_HISTORY


# -- test -------------------------------------------------------------------------------------------
@cli.command("test")
@click.argument("destination")
@click.option("--config", "-c", "config", metavar="F", help=CONFIG_HELP)
@click.option("--resolve", is_flag=True, help="Resolve the test event right after sending it.")
@json_option
@click.pass_context
def test_command(ctx: click.Context, destination: str, config: str | None, resolve: bool,
                 as_json: bool) -> None:
    """Send a test event to DESTINATION, as the product's Test button does."""
    _json_flag(ctx, as_json)
    notifier = _notifier(config)
    with notifier:
        results = notifier.test(destination, resolve=resolve)
    dest = notifier.config.destinations[destination]
    trigger = results[0]
    ok = all(d.state is State.delivered for d in results) and (not resolve or len(results) == 2)
    if as_json:
        _emit({"destination": destination, "type": dest.type.name, "ok": ok,
               "deliveries": [d.as_dict() for d in results]})
        ctx.exit(EXIT_OK if ok else EXIT_FAILED)
    name = dest.type.title
    if trigger.state is not State.delivered:
        click.echo(f"Test event to {name} failed: {trigger.reason}", err=True)
        if trigger.hint:
            click.echo(f"Hint: {trigger.hint}", err=True)
        ctx.exit(EXIT_FAILED)
    click.echo(f"Success! Test event sent to {name}")
    click.echo(f"Dedup Key: {trigger.details.get('dedup_key') or trigger.dedup_key}")
    if not resolve:
        if dest.type.test_reminder:
            click.echo(dest.type.test_reminder)
        ctx.exit(EXIT_OK)
    resolved = results[1] if len(results) > 1 else None
    if resolved is not None and resolved.state is State.delivered:
        if resolved.details.get("skipped"):
            click.echo(f"Nothing to resolve: {resolved.reason}")
        else:
            click.echo(f"Resolved the test event in {name}.")
        ctx.exit(EXIT_OK)
    reason = resolved.reason if resolved else "not attempted"
    click.echo(f"Could not resolve the test event: {reason}", err=True)
    ctx.exit(EXIT_FAILED)


# -- validate ---------------------------------------------------------------------------------------
@cli.command()
@click.option("--config", "-c", "config", metavar="F", help=CONFIG_HELP)
@json_option
@click.pass_context
def validate(ctx: click.Context, config: str | None, as_json: bool) -> None:
    """Check the config and report every error (exit 0 when valid, 2 otherwise)."""
    _json_flag(ctx, as_json)
    notifier = _notifier(config)
    cfg = notifier.config
    dests: list[dict[str, Any]] = [{"name": d.name, "type": d.type.name, "target": d.describe(),
              "send_resolved": d.send_resolved,
              "rate_limit": str(d.rate_limit) if d.rate_limit else "none"}
             for d in cfg.destinations.values()]
    rules = [{"name": r.name, "event": list(r.model.event), "enabled": r.model.enabled,
              "destinations": list(r.destinations)} for r in cfg.rules]
    if as_json:
        _emit({"valid": True, "config": cfg.path, "destinations": dests, "rules": rules})
        return
    click.echo(f"{cfg.path}: valid — {len(dests)} destination{'s' * (len(dests) != 1)}, "
               f"{len(rules)} rule{'s' * (len(rules) != 1)}")
    click.echo(_indent(table(["DESTINATION", "TYPE", "TARGET", "SEND RESOLVED", "RATE LIMIT"],
                             [[d["name"], d["type"], d["target"],
                               "yes" if d["send_resolved"] else "no", d["rate_limit"]]
                              for d in dests], max_width=80)))
    unused = set(cfg.destinations) - {n for r in cfg.rules for n in r.destinations}
    for name in sorted(unused):
        click.echo(f"  note: destination '{name}' is not used by any rule")


# -- worker -----------------------------------------------------------------------------------------
@cli.command()
@click.option("--config", "-c", "config", metavar="F", help=CONFIG_HELP)
@click.option("--once", is_flag=True,
              help="Deliver what is queued, then exit (retries are bounded by each "
                   "destination's retry_deadline).")
@click.option("--wait", "wait", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="With --once: stop after this long even if deliveries are still retrying.")
@click.option("--poll", type=click.FloatRange(min=0.05), default=1.0, show_default=True,
              metavar="SECONDS", help="How often an idle worker looks for new deliveries.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per finished delivery.")
@state_dir_option
@click.pass_context
def worker(ctx: click.Context, config: str | None, once: bool, wait: float | None, poll: float,
           as_json: bool, state_dir: str | None) -> None:
    """Deliver queued deliveries from the outbox as they fall due.

    Several workers may share one outbox: each delivery is leased to one worker at a time, and a
    delivery whose worker died is picked up again when its lease expires.
    """
    _json_flag(ctx, as_json)
    pm = _plugins()
    cfg = load_config(config, pm.registry)
    finished: list[Delivery] = []

    def report(d: Delivery) -> None:
        finished.append(d)
        if as_json:
            click.echo(json.dumps(d.as_dict(), default=str))
        else:
            detail = f": {d.reason}" if d.state is not State.delivered and d.reason else ""
            click.echo(f"{d.state.value:<10} {d.destination}  {d.alert.id}  "
                       f"({d.attempt_count} attempt{'s' * (d.attempt_count != 1)}){detail}")

    signal.signal(signal.SIGTERM, _raise_interrupt)
    with Notifier(cfg, pm, outbox=_open_outbox(state_dir)) as notifier:
        try:
            notifier.dispatcher.deliver(notifier.outbox, wait_seconds=wait if once else None,
                                        stop_when_idle=once, on_final=report, poll=poll)
        except KeyboardInterrupt:
            click.echo("armor-notify worker: stopped; deliveries in flight are picked up again "
                       "when their lease expires", err=True)
            ctx.exit(EXIT_OK)
        left = len(notifier.outbox.find([State.queued.value, State.in_flight.value], limit=1))
    if any(d.state in (State.failed, State.dead) for d in finished):
        ctx.exit(EXIT_FAILED)
    ctx.exit(EXIT_QUEUED if left else EXIT_OK)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


# -- outbox -----------------------------------------------------------------------------------------
@cli.group()
def outbox() -> None:
    """See and act on what is queued, failed or dead in the outbox."""


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text[-1:] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise click.BadParameter(f"'{text}' is not a duration such as 30m, 12h or 7d") from None


@outbox.command("list")
@click.option("--state", "states", multiple=True,
              type=click.Choice([s.value for s in State]), help="Only these states (repeatable).")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@json_option
@state_dir_option
@click.pass_context
def outbox_list(ctx: click.Context, states: tuple[str, ...], limit: int, as_json: bool,
                state_dir: str | None) -> None:
    """List deliveries, newest first."""
    _json_flag(ctx, as_json)
    with _open_outbox(state_dir) as box:
        found = box.find(states, limit)
    if as_json:
        _emit({"deliveries": [d.as_dict() for d in found]})
        return
    if not found:
        click.echo("the outbox is empty" if not states else "no deliveries in those states")
        return
    click.echo(table(["ID", "ACCEPTED", "ALERT", "STATUS", "DESTINATION", "STATE", "ATTEMPTS",
                      "DETAIL"],
                     [[d.id[:12], _when(d.created_at), d.alert.id, d.alert.status, d.destination,
                       _state_text(d.state), str(d.attempt_count), _detail(d)] for d in found],
                     max_width=70))


@outbox.command("show")
@click.argument("delivery_id", metavar="ID")
@json_option
@state_dir_option
@click.pass_context
def outbox_show(ctx: click.Context, delivery_id: str, as_json: bool, state_dir: str | None) -> None:
    """Show one delivery (an id or a unique prefix of 6+ characters) with its attempts."""
    _json_flag(ctx, as_json)
    with _open_outbox(state_dir) as box:
        found = box.get(delivery_id)
    if found is None:
        raise ArmorNotifyError(f"no delivery with id '{delivery_id}' in the outbox (or the "
                               "prefix is ambiguous)")
    data = found.as_dict()
    if as_json:
        _emit(data)
        return
    for key in ("id", "alert_id", "alert_title", "status", "destination", "destination_type",
                "rule", "dedup_key", "state", "attempts", "reason", "hint", "accepted_at",
                "next_attempt_at"):
        if data.get(key) not in (None, ""):
            click.echo(f"{key + ':':<18}{data[key]}")
    for attempt in data["history"]:
        click.echo(f"  attempt {attempt['number']}: {attempt['started_at']} "
                   f"{attempt['status']} ({attempt['duration_ms']} ms) {attempt['reason']}")


@outbox.command("retry")
@click.argument("ids", nargs=-1, metavar="[ID]...")
@click.option("--failed", "include_failed", is_flag=True,
              help="Also requeue failed and dead deliveries, with a fresh retry budget.")
@json_option
@state_dir_option
@click.pass_context
def outbox_retry(ctx: click.Context, ids: tuple[str, ...], include_failed: bool, as_json: bool,
                 state_dir: str | None) -> None:
    """Make queued deliveries (all, or these ids) due now; the next worker run sends them."""
    _json_flag(ctx, as_json)
    with _open_outbox(state_dir) as box:
        full_ids = []
        for i in ids:
            found = box.get(i)
            if found is None:
                raise ArmorNotifyError(f"no delivery with id '{i}' in the outbox")
            full_ids.append(found.id)
        count = box.retry(full_ids, include_failed=include_failed, now=time.time())
    if as_json:
        _emit({"requeued": count})
    else:
        click.echo(f"{count} deliver{'y' if count == 1 else 'ies'} due now; run "
                   "`armor-notify worker` to send them")


@outbox.command("purge")
@click.option("--older-than", "older_than", default="7d", show_default=True, metavar="DURATION",
              help="Delete finished deliveries finalized longer ago than this (30m, 12h, 7d, 0).")
@json_option
@state_dir_option
@click.pass_context
def outbox_purge(ctx: click.Context, older_than: str, as_json: bool, state_dir: str | None) -> None:
    """Delete finished deliveries (delivered, failed, dead, suppressed); never queued ones."""
    _json_flag(ctx, as_json)
    age = _duration(older_than)
    with _open_outbox(state_dir) as box:
        count = box.purge(older_than=age, now=time.time())
    if as_json:
        _emit({"purged": count})
    else:
        click.echo(f"purged {count} finished deliver{'y' if count == 1 else 'ies'}")


# -- plugins ----------------------------------------------------------------------------------------
@cli.command()
@json_option
def plugins(as_json: bool) -> None:
    """List installed plugins: name, version, destination types and hooks."""
    pm = load_plugins()
    infos = sorted(pm.plugins.values(), key=lambda i: (not i.builtin, i.name))
    if as_json:
        _emit({"plugins": [i.as_dict() for i in infos]})
        return
    rows: Sequence[Sequence[str]] = [
        [i.name, i.distribution, i.version, "built-in" if i.builtin else "third-party",
         ", ".join(i.destination_types) or "-", ", ".join(i.hooks) or "-",
         f"error: {i.error}" if i.error else "ok"] for i in infos]
    click.echo(table(["PLUGIN", "DISTRIBUTION", "VERSION", "KIND", "DESTINATION TYPES", "HOOKS",
                      "STATUS"], rows, max_width=70))


def main() -> None:
    cli(prog_name="armor-notify")


if __name__ == "__main__":
    main()
