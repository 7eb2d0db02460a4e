"""The ``armor-notify`` command line (SPEC §6)."""

from __future__ import annotations

import contextlib
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import click

# Only what every command needs is imported here, so `--version`, `--help` and shell completion
# start fast; a command imports the rest (pydantic models, the config, plugins) when it runs.
from . import __version__
from .delivery import Delivery, State
from .errors import (
    EXIT_FAILED,
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_QUEUED,
    EXIT_USAGE,
    ArmorNotifyError,
    ProblemsError,
)
from .output import clean, echo, echo_json, safe, stdout_closed, table
from .times import readable, zone

if TYPE_CHECKING:
    from .alert import Alert
    from .api import Notifier, SendReport
    from .config import Config, StateSettings
    from .history import History
    from .outbox import Outbox
    from .plugins import PluginManager

CONFIG_HELP = "Config file (default: $ARMOR_NOTIFY_CONFIG, else ./armor-notify.yaml)."
STATE_DIR_HELP = ("Where the outbox lives (default: $ARMOR_NOTIFY_STATE_DIR, else "
                  "$XDG_STATE_HOME/armor-notify, else ~/.local/state/armor-notify).")
STATE_HELP = ("The outbox as a postgresql://user@host/db URL, one outbox for workers on any "
              "number of machines (default: $ARMOR_NOTIFY_STATE, else the config's state.url).")
json_option = click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
config_option = click.option("--config", "-c", "config", metavar="F", help=CONFIG_HELP)
state_dir_option = click.option("--state-dir", metavar="DIR", help=STATE_DIR_HELP)
state_option = click.option("--state", "state", metavar="URL", help=STATE_HELP)
source_option = click.option(
    "--source", "source", metavar="NAME",
    help="Read EVENT with this alert source (dbt, great_expectations, alertmanager, plugins: "
         "`armor-notify plugins`); default: armor-notify's own JSON alerts.")


def _duration(minimum: float = 0.0, maximum: float | None = None) -> Any:
    """A callback for duration options, read by the one parser the config uses (``90``, ``30s``,
    ``1h30m``): finite, bounded (by ``maximum`` too), and at least ``minimum`` seconds; ``None``
    stays ``None``."""

    def convert(ctx: click.Context, param: click.Parameter, value: Any) -> float | None:
        from .durations import parse_duration

        if value is None:
            return None
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None
        if seconds < minimum:
            raise click.BadParameter(f"must be at least {minimum:g} seconds", ctx, param)
        if maximum is not None and seconds > maximum:
            raise click.BadParameter(f"must be at most {maximum / 86400:g} days", ctx, param)
        return seconds

    return convert


class _Group(click.Group):
    """Turns user errors into a message on stderr and exit code 2, never a traceback; a bug into
    exit code 4. Messages quoting user input show its control characters as escapes."""

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.ClickException as exc:  # a bad option before the command: may quote input
            shown = _safe_usage(exc)
            if shown is exc:
                raise
            raise shown from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ArmorNotifyError as exc:
            _report_error(ctx, exc)
            ctx.exit(EXIT_USAGE)
        except click.ClickException as exc:  # a usage error: click prints it, exit code 2
            shown = _safe_usage(exc)
            if shown is exc:
                raise
            raise shown from None
        except (click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            if ctx.find_root().params.get("debug"):
                import traceback

                echo(traceback.format_exc(), err=True, nl=False)
            else:
                echo(f"armor-notify: internal error: {type(exc).__name__}: {clean(exc)}\n"
                     "Run again with --debug for a traceback, and please report it.", err=True)
            ctx.exit(EXIT_INTERNAL)


def _safe_usage(exc: click.ClickException) -> click.ClickException:
    """``exc``, or the same message with the control characters of the input it quotes shown as
    escapes (click prints usage errors itself)."""
    message = exc.format_message()
    if isinstance(exc, click.exceptions.NoArgsIsHelpError) or clean(message) == message:
        return exc
    if isinstance(exc, click.UsageError):
        return click.UsageError(clean(message), exc.ctx)
    return click.ClickException(clean(message))


def _report_error(ctx: click.Context, exc: ArmorNotifyError) -> None:
    import json

    sub = ctx.invoked_subcommand
    as_json = bool(sub and ctx.obj and ctx.obj.get("json"))
    if as_json:
        problems = [p.__dict__ for p in exc.problems] if isinstance(exc, ProblemsError) else []
        echo_json(json.dumps({"error": str(exc), "problems": problems}, indent=2))
    if isinstance(exc, ProblemsError):  # a heading, then one line per problem
        text = "\n".join([str(exc).split("\n", 1)[0], *(f"  {clean(p)}" for p in exc.problems)])
    else:
        text = clean(exc)
    echo(f"armor-notify: {text}", err=True)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="armor-notify")
@click.option("--debug", is_flag=True, help="Show tracebacks for internal errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Route data-observability alerts to PagerDuty, Slack, email and plugin destinations."""
    ctx.obj = {"debug": debug}


def _plugins() -> PluginManager:
    from .plugins import load_plugins

    pm = load_plugins()
    for line in pm.plugin_errors():
        echo(f"armor-notify: warning: {clean(line)}", err=True)
    return pm


def _configured(config: str | None) -> tuple[PluginManager, Config]:
    """The plugins and the validated config: the end of a command's start-up."""
    from .config import load_config

    pm = _plugins()
    cfg = load_config(config, pm.registry)
    _started()
    return pm, cfg


def _notifier(config: str | None) -> Notifier:
    from .api import Notifier

    pm, cfg = _configured(config)
    return Notifier(cfg, pm)


def _started() -> None:
    """Start-up allocates many objects (modules, classes, pydantic's validators) and frees few,
    so :func:`main` holds the cyclic garbage collector off until here, where they are frozen out
    of its way (``gc.freeze``): collecting them would cost time now and on every full collection
    later. Idempotent."""
    import gc

    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def _json_flag(ctx: click.Context, as_json: bool) -> None:
    ctx.find_root().obj["json"] = as_json


def _emit(data: Any) -> None:
    import json

    echo_json(json.dumps(data, indent=2, default=str))


def _emit_list(key: str, items: Iterable[Any]) -> None:
    """``_emit({key: list(items)})``, written item by item (the same text, in flat memory); stops
    when standard output is closed."""
    import json

    echo_json(f'{{\n  "{key}": [', nl=False)
    count = 0
    for item in items:
        if stdout_closed():
            return
        text = json.dumps(item, indent=2, default=str).replace("\n", "\n    ")
        echo_json(f'{"," if count else ""}\n    {text}', nl=False)
        count += 1
    echo_json("\n  ]\n}" if count else "]\n}")


# -- send -------------------------------------------------------------------------------------------
DEFAULT_WAIT = 30.0
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
SUMMARY_OVER = 20
"""A send of more alerts than this shows a progress bar (on a terminal's stderr) and prints a
summary table instead of one block per alert."""
SUMMARY_REASONS = 10
MAX_MUTE = 30 * 86400.0
"""The longest mute (armor_notify.mutes.MAX_MUTE, not imported here: --help stays fast)."""
"""How many distinct failure reasons the summary lists."""


def _open_outbox(state: str | None, state_dir: str | None,
                 settings: StateSettings | None = None) -> Outbox:
    """The outbox that ``--state``, ``--state-dir``, the environment or the config's ``state:``
    names (:func:`armor_notify.api.state_location`), created when missing."""
    from .api import open_outbox, state_location

    box = open_outbox(state_location(state, state_dir, settings))
    assert box is not None  # created when missing
    _started()
    return box


def _state_settings(config: str | None) -> StateSettings:
    from .config import read_state_settings

    return read_state_settings(config)


@cli.command()
@click.argument("event", metavar="EVENT")
@click.option("--config", "-c", "config", metavar="F", help=CONFIG_HELP)
@json_option
@click.option("--dry-run", is_flag=True, help="Route and show what would be sent; send nothing.")
@click.option("--wait", "wait", type=str, callback=_duration(), default=DEFAULT_WAIT,
              show_default=True, metavar="DURATION",
              help="How long to keep delivering; what is still retrying then stays queued for "
                   "`armor-notify worker`. 0 accepts and queues without sending.")
@source_option
@state_option
@state_dir_option
@click.pass_context
def send(ctx: click.Context, event: str, config: str | None, as_json: bool, dry_run: bool,
         wait: float, source: str | None, state: str | None, state_dir: str | None) -> None:
    """Route and deliver the alert(s) in EVENT, a JSON file (- for stdin).

    Every delivery is written to the outbox before it is attempted. Past 20 alerts a summary
    table replaces the block per alert (every delivery: --json, or `armor-notify outbox list`).
    Exit codes: 0 all delivered (or suppressed/skipped), 1 some failed, 2 bad config or input,
    3 some still queued for retry, 4 internal error.
    """
    from .api import Notifier

    _json_flag(ctx, as_json)
    pm, cfg = _configured(config)
    outbox = None if dry_run else _open_outbox(state, state_dir, cfg.state)
    with Notifier(cfg, pm, outbox=outbox) as notifier:
        alerts = notifier.read_alerts(event, source=source)
        show_progress = not dry_run and wait > 0 and len(alerts) > SUMMARY_OVER
        try:
            with _progress(notifier, alerts, show_progress) as progress:
                report = notifier.send(alerts, dry_run=dry_run, wait=wait,
                                       on_final=progress.step if progress else None,
                                       payloads=as_json)
                if progress and not report.count(State.queued) + report.count(State.in_flight):
                    progress.complete()  # every delivery is final (repeats were not sent again)
        except KeyboardInterrupt:
            echo("armor-notify send: interrupted; what the outbox accepted stays there and "
                 "`armor-notify worker` delivers it", err=True)
            ctx.exit(EXIT_INTERRUPTED)
    if as_json:
        _emit(report.as_dict())
    else:
        if len(report.alerts) > SUMMARY_OVER:
            _print_summary(report)
        else:
            _print_report(report)
        batched = report.count(State.batched)
        if batched:
            echo(f"{batched} collected for a digest: `armor-notify worker` sends it when "
                 "its window closes or fills.")
        held = sum(1 for d in report.deliveries if _is_held(d))
        queued = report.count(State.queued) + report.count(State.in_flight) - held
        if queued:
            echo(f"{queued} deliver{'ies are' if queued != 1 else 'y is'} still queued in "
                 f"the outbox: `armor-notify worker` delivers {'them' if queued != 1 else 'it'}.")
        if held:
            echo(f"{held} held (a mute, or a schedule with hold: true): `armor-notify worker` "
                 f"delivers {'them' if held != 1 else 'it'} when {'they are' if held != 1 else 'it is'} "
                 "let go.")
    ctx.exit(report.exit_code)


class _Progress:
    """A progress bar on stderr: one step per delivery as it becomes final."""

    def __init__(self, bar: Any, total: int) -> None:
        self._bar = bar
        self._left = total

    def step(self, delivery: Delivery) -> None:
        self._left -= 1
        self._bar.update(1)

    def complete(self) -> None:
        self._bar.update(max(0, self._left))


@contextlib.contextmanager
def _progress(notifier: Notifier, alerts: Sequence[Alert], wanted: bool) -> Iterator[_Progress | None]:
    """Progress on stderr when it is a terminal (never in a pipe or a log file)."""
    if not wanted or not sys.stderr.isatty():
        yield None
        return
    total = sum(1 for d in notifier.plan(alerts) if not d.state.final)
    with click.progressbar(length=total, label="delivering", show_pos=True,
                           file=sys.stderr) as bar:
        yield _Progress(bar, total)


def _print_report(report: SendReport) -> None:
    by_alert: dict[str, list[Delivery]] = {a.id: [] for a in report.alerts}
    for d in report.deliveries:
        by_alert[d.alert.id].append(d)
    for alert in report.alerts:
        echo(f"Alert {clean(alert.id)}: {clean(alert.event_type)} {clean(alert.status)} — "
             f"{clean(alert.title)} ({clean(alert.asset.name)})")
        items = by_alert[alert.id]
        note = report.notes.get(alert.id)
        if note:
            echo(f"  {clean(note)}")
        if not items:
            echo("" if note else "  no rule matched: nothing to send\n")
            continue
        rows = [[d.destination, d.destination_type, d.rule,
                 _state_text(d.state, _is_held(d)),
                 str(d.attempt_count), _detail(d)] for d in items]
        echo(_indent(table(["DESTINATION", "TYPE", "RULE", "STATE", "ATTEMPTS", "DETAIL"],
                           rows, max_width=90)))
        for d in items:
            if d.state in (State.failed, State.dead) and (d.reason or d.hint):
                echo(f"  {clean(d.destination)}: {clean(d.reason)}")
                if d.hint:
                    echo(f"    hint: {clean(d.hint)}")
        echo("")
    _print_counts(report)


def _print_counts(report: SendReport) -> None:
    held = sum(1 for d in report.deliveries if _is_held(d))
    counts = [f"{report.count(s) - (held if s is State.queued else 0)} {s.value}" for s in State
              if report.count(s) - (held if s is State.queued else 0)]
    counts += [f"{held} held"] if held else []
    echo(", ".join(counts) if counts else "nothing to deliver")


def _print_summary(report: SendReport) -> None:
    """Counts per destination and state, and the distinct reasons of what failed."""
    states = [s for s in State if report.count(s)]
    per_dest: dict[tuple[str, str], Counter[State]] = {}
    failures: dict[tuple[str, str, str, str], list[str]] = {}
    for d in report.deliveries:
        per_dest.setdefault((d.destination, d.destination_type), Counter())[d.state] += 1
        if d.state in (State.failed, State.dead):
            key = (d.destination, d.state.value, d.reason, d.hint or "")
            failures.setdefault(key, []).append(d.alert.id)
    routed = {d.alert.id for d in report.deliveries}
    echo(f"{len(report.alerts)} alerts, {len(report.deliveries)} deliveries "
         "(every delivery: --json, or `armor-notify outbox list`)")
    if per_dest:
        rows = [[name, kind, *(str(counts[s]) for s in states)]
                for (name, kind), counts in per_dest.items()]
        echo(_indent(table(["DESTINATION", "TYPE", *(s.value.replace("_", " ").upper()
                                                     for s in states)], rows, max_width=60)))
    unmatched = sum(1 for a in report.alerts if a.id not in routed and a.id not in report.notes)
    if unmatched:
        echo(f"  {unmatched} alert{'s' * (unmatched != 1)} matched no rule: nothing to send")
    if report.notes:  # what the check ledger did, most frequent first
        said = Counter(report.notes.values()).most_common()
        echo(f"  {len(report.notes)} check result{'s' * (len(report.notes) != 1)}:")
        for note, count in said[:SUMMARY_REASONS]:
            echo(f"    {count}× {clean(note)}")
        if len(said) > SUMMARY_REASONS:
            echo(f"    … and {len(said) - SUMMARY_REASONS} more (every one: --json)")
    repeats = sum(1 for d in report.deliveries if d.repeat)
    if repeats:
        echo(f"  {repeats} already accepted within the repeat window: not sent again")
    if failures:
        total = sum(len(ids) for ids in failures.values())
        echo(f"\nFailed or dead: {total} deliver{'y' if total == 1 else 'ies'}, "
             f"{len(failures)} reason{'s' * (len(failures) != 1)}")
        for (dest, state, reason, hint), ids in list(failures.items())[:SUMMARY_REASONS]:
            sample = ", ".join(clean(i) for i in ids[:3]) + (", …" if len(ids) > 3 else "")
            echo(f"  {clean(dest)} ({state}, {len(ids)}: {sample}): {clean(reason)}")
            if hint:
                echo(f"    hint: {clean(hint)}")
        if len(failures) > SUMMARY_REASONS:
            echo(f"  … and {len(failures) - SUMMARY_REASONS} more reasons: "
                 "`armor-notify outbox list --state failed --state dead`")
    echo("")
    _print_counts(report)


def _is_held(d: Delivery) -> bool:
    """Written to wait for a mute or a schedule, not yet attempted."""
    return d.state is State.queued and not d.attempts and d.next_attempt_at > d.created_at + 1


def _state_text(state: State, held: bool = False) -> str:
    if held:
        return "held"
    return {State.queued: "queued (retrying)", State.in_flight: "in flight",
            State.batched: "digest"}.get(state, state.value)


def _detail(d: Delivery) -> str:
    if d.repeat:
        return f"already accepted at {readable(d.created_at, seconds=True)}: not sent again"
    if _is_held(d):
        return d.reason  # by a mute or a schedule: until when and why
    if d.state is State.queued:
        return f"next attempt {readable(d.next_attempt_at, seconds=True)}; last: {d.reason}"
    if d.state is State.delivered and d.details.get("dedup_key"):
        return f"dedup key {d.details['dedup_key']}"
    return d.reason




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
@source_option
@state_option
@click.option("--state-dir", metavar="DIR", help=STATE_DIR_HELP + " Read for cooldowns and "
              "daily limits; never written.")
@click.pass_context
def route(ctx: click.Context, event: str, config: str | None, as_json: bool, at: str | None,
          source: str | None, state: str | None, state_dir: str | None) -> None:
    """Show which rules match EVENT and which destinations would get it; send nothing.

    JSON lines (one alert a line) are read as a stream, so files of any size route in flat
    memory; every line is checked before anything is printed."""
    from .api import open_outbox, state_location

    _json_flag(ctx, as_json)
    notifier = _notifier(config)
    where = state_location(state, state_dir, notifier.config.state)
    with notifier.open_alerts(event, source=source) as found:
        found.check()
        moment = _parse_at(at, notifier.config.defaults.timezone)
        # Cooldowns and daily limits are judged against the outbox, which route never creates.
        with contextlib.closing(open_outbox(where, create=False) or _NoOutbox()) as box:
            history = box.history()
            results = (notifier.explain(alert, at=moment, history=history) for alert in found)
            if as_json:
                _emit_list("alerts", results)
                return
            for res in results:
                if stdout_closed():  # the reader went away (`| head`): nothing more to show
                    return
                _print_route(res)


# -- preview ----------------------------------------------------------------------------------------
@cli.command()
@click.argument("event", metavar="EVENT")
@click.option("--config", "-c", "config", metavar="F", help=CONFIG_HELP)
@click.option("--destination", "-d", metavar="NAME", help="Show only this destination's.")
@json_option
@source_option
@click.pass_context
def preview(ctx: click.Context, event: str, config: str | None, destination: str | None,
            as_json: bool, source: str | None) -> None:
    """Show exactly what each destination EVENT routes to would be sent; send nothing.

    The PagerDuty event, the Slack payload, the email's headers and parts, with secrets masked.
    Templates are rendered as they would be. Routing alone decides (noise controls, mutes and
    check results are judged by `armor-notify route`)."""
    _json_flag(ctx, as_json)
    notifier = _notifier(config)
    with notifier:
        alerts = notifier.read_alerts(event, source=source)
        shown = notifier.preview(alerts, destination=destination)
    if as_json:
        _emit({"previews": shown})
        return
    by_alert: dict[str, list[dict[str, Any]]] = {}
    for entry in shown:
        by_alert.setdefault(entry["alert_id"], []).append(entry)
    for alert in alerts:
        echo(f"Alert {clean(alert.id)}: {clean(alert.event_type)} {clean(alert.status)} — "
             f"{clean(alert.title)} ({clean(alert.asset.name)})")
        entries = by_alert.get(alert.id, [])
        if not entries:
            echo("  no rule routes it" + (f" to {clean(destination)}" if destination else "")
                 + ": nothing would be sent\n")
            continue
        for entry in entries:
            echo(f"  → {clean(entry['destination'])} ({clean(entry['type'])}, rule "
                 f"{clean(entry['rule'])}, dedup key {clean(entry['dedup_key'])})")
            if "not_sent_because" in entry:
                echo(f"    not sent: {clean(entry['not_sent_because'])}")
            else:
                echo(_indent(_indent(_shown(entry["payload"]))))
            echo("")
    if any("error" in e.get("payload", {}) for e in shown):
        ctx.exit(EXIT_FAILED)


def _shown(payload: Mapping[str, Any]) -> str:
    """A preview for people: texts as they are (an email's parts), the rest as JSON."""
    import json

    lines = []
    for key, value in payload.items():
        if isinstance(value, str) and ("\n" in value or key in ("text", "html", "body")):
            lines += [f"{key}:", *("  " + safe(line) for line in value.splitlines())]
        elif isinstance(value, str):
            lines.append(f"{key}: {clean(value)}")
        else:
            dumped = json.dumps(value, indent=2, ensure_ascii=False, default=str)
            lines.append(f"{key}: " + "\n".join(safe(line) for line in dumped.splitlines()))
    return "\n".join(lines)


class _NoOutbox:
    """No outbox yet: nothing was notified."""

    @staticmethod
    def history() -> History:
        from .history import NO_HISTORY

        return NO_HISTORY

    def close(self) -> None:
        pass


def _print_route(res: dict[str, Any]) -> None:
    echo(f"Alert {clean(res['alert_id'])}: {clean(res['event_type'])} {clean(res['status'])} — "
         f"{clean(res['title'])} ({clean(res['asset'])})")
    check = res.get("check")
    if res["matching_rules"]:
        echo(f"  matching rules: {', '.join(clean(r) for r in res['matching_rules'])}")
    if check:
        echo(f"  check {clean(check['id'])} ({check['status']}): {clean(check['note'])}")
        if check.get("lineage"):
            echo(f"  lineage: {clean(check['lineage'])}")
    if not res["routes"]:
        echo("\n" if check else "  no rule matched: nothing would be sent\n", nl=False)
        return
    rows = [[r["destination"], r["type"], r["target"], _rule_text(r),
             ", ".join(r["also_matched"]) or "-", r["dedup_key"],
             "yes" if r["sent"] else f"{_OUTCOME_WORDS[r['outcome']]}: {r['not_sent_because']}"]
            for r in res["routes"]]
    echo(_indent(table(["DESTINATION", "TYPE", "TARGET", "RULE", "ALSO MATCHED",
                        "DEDUP KEY", "SENT"], rows, max_width=80)))
    echo("")


def _rule_text(route: dict[str, Any]) -> str:
    """The rule, and the owner whose destination it is (``owners`` in the rule)."""
    owner = route.get("owner")
    if owner is None:
        return str(route["rule"])
    return f"{route['rule']} (owner {owner})" if owner else f"{route['rule']} (owners fallback)"


_OUTCOME_WORDS = {"suppressed": "no", "held": "later", "digest": "in a digest", "send": "yes"}


def _parse_at(text: str | None, zone_name: str) -> float:
    from datetime import datetime

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
    name = clean(dest.type.title)
    if trigger.state is not State.delivered:
        echo(f"Test event to {name} failed: {clean(trigger.reason)}", err=True)
        if trigger.hint:
            echo(f"Hint: {clean(trigger.hint)}", err=True)
        ctx.exit(EXIT_FAILED)
    echo(f"Success! Test event sent to {name}")
    echo(f"Dedup Key: {clean(trigger.details.get('dedup_key') or trigger.dedup_key)}")
    if not resolve:
        if dest.type.test_reminder:
            echo(clean(dest.type.test_reminder))
        ctx.exit(EXIT_OK)
    resolved = results[1] if len(results) > 1 else None
    if resolved is not None and resolved.state is State.delivered:
        if resolved.details.get("skipped"):
            echo(f"Nothing to resolve: {clean(resolved.reason)}")
        else:
            echo(f"Resolved the test event in {name}.")
        ctx.exit(EXIT_OK)
    reason = resolved.reason if resolved else "not attempted"
    echo(f"Could not resolve the test event: {clean(reason)}", err=True)
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
    graph = notifier.lineage.current()
    if notifier.lineage.error is not None:
        from .errors import ConfigError, Problem

        raise ConfigError([Problem(cfg.path, "lineage", notifier.lineage.error)])
    dests: list[dict[str, Any]] = [{"name": d.name, "type": d.type.name, "target": d.describe(),
              "send_resolved": d.send_resolved,
              "rate_limit": str(d.rate_limit) if d.rate_limit else "none",
              "rate_burst": d.rate_limit.burst if d.rate_limit else None}
             for d in cfg.destinations.values()]
    rules = [{"name": r.name, "event": list(r.model.event), "enabled": r.model.enabled,
              "destinations": list(r.destinations)} for r in cfg.rules]
    lineage = {"assets": len(graph), "edges": graph.edges, "files": graph.sources} \
        if graph is not None else None
    if as_json:
        _emit({"valid": True, "config": cfg.path, "destinations": dests, "rules": rules,
               "lineage": lineage})
        return
    echo(f"{clean(cfg.path)}: valid — {len(dests)} destination{'s' * (len(dests) != 1)}, "
         f"{len(rules)} rule{'s' * (len(rules) != 1)}")
    echo(_indent(table(["DESTINATION", "TYPE", "TARGET", "SEND RESOLVED", "RATE LIMIT"],
                       [[d["name"], d["type"], d["target"],
                         "yes" if d["send_resolved"] else "no",
                         f"{d['rate_limit']}, burst {d['rate_burst']}" if d["rate_burst"]
                         else d["rate_limit"]]
                        for d in dests], max_width=80)))
    if graph is not None:
        echo(f"  lineage: {len(graph):,} assets, {graph.edges:,} edges from "
             f"{', '.join(clean(s) for s in graph.sources)}")
    from .matching import OWNERS

    uses_owners = any(OWNERS in r.destinations for r in cfg.rules)
    used = {n for r in cfg.rules for n in r.destinations}
    if uses_owners:
        used |= {n for dests in cfg.owners.values() for n in dests}
        for owner, count in _unmapped_owners(cfg, graph):
            fallback = cfg.owners.get("fallback")
            echo(f"  note: owner '{clean(owner)}' ({count} asset{'s' * (count != 1)} in the "
                 "lineage) has no destinations in owners: its alerts go to "
                 + (f"the fallback ({', '.join(fallback)})" if fallback else
                    "no one (add it, or a fallback)"))
    unused = set(cfg.destinations) - used
    for name in sorted(unused):
        echo(f"  note: destination '{clean(name)}' is not used by any rule")


def _unmapped_owners(cfg: Any, graph: Any) -> list[tuple[str, int]]:
    """Owners the lineage knows that the config's ``owners:`` does not, with their asset
    counts."""
    if graph is None:
        return []
    known = {k.lower() for k in cfg.owners}
    return sorted((o, len(nodes)) for o, nodes in graph.owners.items() if o.lower() not in known)


# -- worker -----------------------------------------------------------------------------------------
@cli.command()
@click.option("--config", "-c", "config", metavar="F", help=CONFIG_HELP)
@click.option("--once", is_flag=True,
              help="Deliver what is queued, then exit (retries are bounded by each "
                   "destination's retry_deadline).")
@click.option("--wait", "wait", callback=_duration(), default=None, metavar="DURATION",
              help="With --once: stop after this long even if deliveries are still retrying.")
@click.option("--poll", type=str, callback=_duration(minimum=0.05), default="1s", show_default=True,
              metavar="DURATION", help="How often an idle worker looks for new deliveries.")
@click.option("--threads", type=click.IntRange(min=1, max=1024), default=32, show_default=True,
              help="How many deliveries this worker runs at once (its I/O threads).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per finished delivery.")
@state_option
@state_dir_option
@click.pass_context
def worker(ctx: click.Context, config: str | None, once: bool, wait: float | None, poll: float,
           threads: int, as_json: bool, state: str | None, state_dir: str | None) -> None:
    """Deliver queued deliveries from the outbox as they fall due.

    Several workers may share one outbox: each delivery is leased to one worker at a time, and a
    delivery whose worker died is picked up again when its lease expires.
    """
    import json
    import signal

    from .api import Notifier

    _json_flag(ctx, as_json)
    pm, cfg = _configured(config)
    finished: list[Delivery] = []

    def report(d: Delivery) -> None:
        # Printing never stops delivery: a closed stdout (`| head`) discards the rest.
        finished.append(d)
        if as_json:
            echo_json(json.dumps(d.as_dict(), default=str))
        else:
            detail = f": {clean(d.reason)}" if d.state is not State.delivered and d.reason else ""
            echo(f"{d.state.value:<10} {clean(d.destination)}  {clean(d.alert.id)}  "
                 f"({d.attempt_count} attempt{'s' * (d.attempt_count != 1)}){detail}")

    signal.signal(signal.SIGTERM, _raise_interrupt)
    with Notifier(cfg, pm, outbox=_open_outbox(state, state_dir, cfg.state),
                  max_workers=threads) as notifier:
        _reload_lineage_on_sighup(notifier)
        try:
            notifier.drain(wait=wait if once else None, stop_when_idle=once, on_final=report,
                           poll=poll, retention=cfg.state.retention,
                           on_outbox_error=None if once else _outbox_trouble)
        except KeyboardInterrupt:
            echo("armor-notify worker: stopped; deliveries in flight are picked up again "
                 "when their lease expires", err=True)
            ctx.exit(EXIT_OK)
        left = len(notifier.inspect([State.queued, State.in_flight], limit=1))
    if any(d.state in (State.failed, State.dead) for d in finished):
        ctx.exit(EXIT_FAILED)
    ctx.exit(EXIT_QUEUED if left else EXIT_OK)


class _StateOrUrl(click.ParamType[str]):
    """A delivery state, or (for ``outbox list``, whose ``--state`` filters) the outbox's URL."""

    name = "state"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        if "://" in text or text in {s.value for s in State}:
            return text
        self.fail(f"'{text}' is not a delivery state ({', '.join(s.value for s in State)}) "
                  "nor a postgresql:// URL", param, ctx)


def _outbox_trouble(exc: Exception, retry_in: float) -> None:
    """A worker whose outbox fails (its database went away) says so and keeps going."""
    echo(f"armor-notify worker: {clean(exc)}; trying again in {retry_in:g}s (what was accepted "
         "stays in the outbox)", err=True)


def _stopped_already(signum: int, frame: Any) -> None:
    """The signal uvicorn raises again after its graceful shutdown: nothing more to do."""


def _reload_lineage_on_sighup(notifier: Notifier) -> None:
    """``kill -HUP`` makes a long-running process read the config's lineage files again (they
    are also read again when one changes)."""
    import signal

    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda signum, frame: notifier.lineage.reload())


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


# -- outbox -----------------------------------------------------------------------------------------
@cli.group()
def outbox() -> None:
    """See and act on what is queued, failed or dead in the outbox."""


@outbox.command("list")
@click.option("--state", "states", multiple=True, type=_StateOrUrl(),
              metavar="[" + "|".join(s.value for s in State) + "|URL]",
              help="Only these states (repeatable); a postgresql:// URL names the outbox, as "
                   "--state does for every other command.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@config_option
@json_option
@state_dir_option
@click.pass_context
def outbox_list(ctx: click.Context, states: tuple[str, ...], limit: int, config: str | None,
                as_json: bool, state_dir: str | None) -> None:
    """List deliveries, newest first."""
    _json_flag(ctx, as_json)
    urls = [s for s in states if "://" in s]
    states = tuple(s for s in states if "://" not in s)
    if len(urls) > 1:
        raise click.UsageError("give at most one outbox URL")
    with _open_outbox(urls[0] if urls else None, state_dir, _state_settings(config)) as box:
        found = box.find(states, limit)
    if as_json:
        _emit({"deliveries": [d.as_dict() for d in found]})
        return
    if not found:
        echo("the outbox is empty" if not states else "no deliveries in those states")
        return
    echo(table(["ID", "ACCEPTED", "ALERT", "STATUS", "DESTINATION", "STATE", "ATTEMPTS",
                "DETAIL"],
               [[d.id[:12], readable(d.created_at, seconds=True), d.alert.id, d.alert.status, d.destination,
                 _state_text(d.state, _is_held(d)), str(d.attempt_count), _detail(d)]
                for d in found],
               max_width=70))


@outbox.command("show")
@click.argument("delivery_id", metavar="ID")
@config_option
@json_option
@state_option
@state_dir_option
@click.pass_context
def outbox_show(ctx: click.Context, delivery_id: str, config: str | None, as_json: bool,
                state: str | None, state_dir: str | None) -> None:
    """Show one delivery (an id or a unique prefix of 6+ characters) with its attempts."""
    _json_flag(ctx, as_json)
    with _open_outbox(state, state_dir, _state_settings(config)) as box:
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
            echo(f"{key + ':':<18}{clean(data[key])}")
    for attempt in data["history"]:
        echo(f"  attempt {attempt['number']}: {clean(attempt['started_at'])} "
             f"{clean(attempt['status'])} ({attempt['duration_ms']} ms) {clean(attempt['reason'])}")


@outbox.command("retry")
@click.argument("ids", nargs=-1, metavar="[ID]...")
@click.option("--failed", "include_failed", is_flag=True,
              help="Also requeue failed and dead deliveries, with a fresh retry budget.")
@config_option
@json_option
@state_option
@state_dir_option
@click.pass_context
def outbox_retry(ctx: click.Context, ids: tuple[str, ...], include_failed: bool,
                 config: str | None, as_json: bool, state: str | None,
                 state_dir: str | None) -> None:
    """Make queued deliveries (all, or these ids) due now; the next worker run sends them."""
    _json_flag(ctx, as_json)
    with _open_outbox(state, state_dir, _state_settings(config)) as box:
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
        echo(f"{count} deliver{'y' if count == 1 else 'ies'} due now; run "
             "`armor-notify worker` to send them")


@outbox.command("purge")
@click.option("--older-than", "older_than", callback=_duration(), default="7d", show_default=True,
              metavar="DURATION",
              help="Delete finished deliveries finalized longer ago than this (30m, 12h, 7d, 0).")
@config_option
@json_option
@state_option
@state_dir_option
@click.pass_context
def outbox_purge(ctx: click.Context, older_than: float, config: str | None, as_json: bool,
                 state: str | None, state_dir: str | None) -> None:
    """Delete finished deliveries (delivered, failed, dead, suppressed); never queued ones.
    `armor-notify worker` does this by itself for what is older than the config's
    state.retention (30 days unless set)."""
    _json_flag(ctx, as_json)
    with _open_outbox(state, state_dir, _state_settings(config)) as box:
        count = box.purge(older_than=older_than, now=time.time())
    if as_json:
        _emit({"purged": count})
    else:
        echo(f"purged {count} finished deliver{'y' if count == 1 else 'ies'}")


# -- serve ------------------------------------------------------------------------------------------
@cli.command()
@config_option
@click.option("--listen", default="127.0.0.1:8686", show_default=True, metavar="HOST:PORT",
              help="Where to take requests. Anywhere but loopback needs an API token.")
@click.option("--workers", type=click.IntRange(min=1, max=1024), default=32, show_default=True,
              help="Deliveries the in-process workers run at once.")
@click.option("--no-worker", is_flag=True,
              help="Only take alerts; separate `armor-notify worker` processes deliver them.")
@click.option("--grace", callback=_duration(), default="30s", show_default=True,
              metavar="DURATION", help="On SIGTERM, how long attempts running may finish.")
@click.option("--poll", type=str, callback=_duration(minimum=0.05), default="1s",
              show_default=True, metavar="DURATION",
              help="How often the workers look for work that others queued (what this service "
                   "accepts wakes them at once).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Log lines as text, or one JSON object a line.")
@click.option("-v", "--verbose", count=True, help="More log lines (-vv: debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@state_option
@state_dir_option
def serve(config: str | None, listen: str, workers: int, no_worker: bool, grace: float,
          poll: float, log_format: str, verbose: int, quiet: bool, state: str | None,
          state_dir: str | None) -> None:
    """Take alerts over HTTP and deliver them: intake, workers, /metrics and a status page.

    POST /v1/alerts (native JSON) or /v1/sources/NAME (an installed source, e.g. an
    Alertmanager webhook) with Authorization: Bearer TOKEN; tokens come from
    $ARMOR_NOTIFY_API_TOKENS or the config's serve.tokens. SIGTERM stops taking requests,
    lets running attempts finish and leaves the rest queued.
    """
    import logging
    import signal

    try:
        import uvicorn

        from .server import Service, api_tokens, create_app, log_setup
    except ImportError as exc:
        raise ArmorNotifyError(f"armor-notify serve needs its extra ({exc.name} is missing): "
                               "pip install 'armor-notify[serve]'") from None
    from .api import Notifier

    host, sep, port_text = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536 or not host:
        raise click.BadParameter("expected HOST:PORT, e.g. 127.0.0.1:8686", param_hint="--listen")
    pm, cfg = _configured(config)
    tokens = api_tokens([t.get_secret_value() for t in cfg.serve.tokens])
    from .destinations import is_loopback_host

    if not tokens and not is_loopback_host(host):
        raise ArmorNotifyError(f"no API token: serving on {host} would take alerts from anyone. "
                               "Set $ARMOR_NOTIFY_API_TOKENS (or serve.tokens in the config), or "
                               "listen on loopback (127.0.0.1)")
    log_setup(log_format, logging.WARNING if quiet else
              (logging.DEBUG if verbose > 1 else logging.INFO))
    outbox = _open_outbox(state, state_dir, cfg.state)
    notifier = Notifier(cfg, pm, outbox=outbox, max_workers=workers)
    service = Service(notifier, tokens, workers=None if no_worker else workers, grace=grace,
                      poll=poll)
    server = uvicorn.Server(uvicorn.Config(
        create_app(service), host=host, port=int(port_text), log_config=None,
        timeout_graceful_shutdown=int(grace) + 1, server_header=False))
    # uvicorn handles SIGTERM and SIGINT itself (stop taking requests, finish, shut down), then
    # raises the signal again once done; a no-op handler makes that the end of a clean exit 0.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stopped_already)
    _reload_lineage_on_sighup(notifier)
    try:
        server.run()
    finally:
        notifier.close()
    if not server.started:
        raise ArmorNotifyError(f"could not listen on {listen} (in use, or not this machine's "
                               "address)")


# -- db ---------------------------------------------------------------------------------------------
@cli.group()
def db() -> None:
    """The outbox's storage: create or upgrade its schema."""


@db.command("upgrade")
@config_option
@json_option
@state_option
@state_dir_option
@click.pass_context
def db_upgrade(ctx: click.Context, config: str | None, as_json: bool, state: str | None,
               state_dir: str | None) -> None:
    """Create the outbox's tables, or bring them to this version's schema.

    Every command that opens the outbox does this by itself (under a lock, so workers starting
    at once do not race); run it to do it ahead of a deploy. A schema newer than this version
    knows is refused: upgrade armor-notify instead."""
    from pathlib import Path

    from .api import is_postgres_url, state_location

    _json_flag(ctx, as_json)
    where = state_location(state, state_dir, _state_settings(config))
    with _open_outbox(state, state_dir, _state_settings(config)) as box:
        version = box.schema_version
    if where is not None and is_postgres_url(where):
        from .outbox_postgres import shown_url

        shown = shown_url(str(where))  # user, host and database; never the password
    else:
        from .outbox import FILE_NAME, default_state_dir

        shown = str(Path(where or default_state_dir()) / FILE_NAME)
    if as_json:
        _emit({"outbox": shown, "schema_version": version})
    else:
        echo(f"{clean(shown)}: schema version {version}, up to date")


# -- checks and mutes ------------------------------------------------------------------------------
def _ledger_notifier(config: str | None, state: str | None, state_dir: str | None) -> Notifier:
    """A notifier on the outbox the options name (for ``checks``, ``mute``, ``run``)."""
    from .api import Notifier

    pm, cfg = _configured(config)
    return Notifier(cfg, pm, outbox=_open_outbox(state, state_dir, cfg.state))


@cli.command("checks")
@click.option("--failing", is_flag=True, help="Only checks failing or missing now.")
@config_option
@json_option
@state_option
@state_dir_option
@click.pass_context
def checks_command(ctx: click.Context, failing: bool, config: str | None, as_json: bool,
                   state: str | None, state_dir: str | None) -> None:
    """List the check-state ledger: every check seen, its state and since when, its last run
    and its incident's dedup key (failing and missing checks first)."""
    _json_flag(ctx, as_json)
    with _ledger_notifier(config, state, state_dir) as notifier:
        found = notifier.checks(failing=failing)
        zone_name = notifier.config.defaults.timezone
    if as_json:
        _emit({"checks": [c.as_dict() for c in found]})
        return
    if not found:
        echo("no failing checks" if failing else "no check results recorded yet")
        return
    rows = []
    for c in found:
        shown = c.state if c.missing_since is None else f"{c.state}, missing"
        since = c.since if c.missing_since is None else c.missing_since
        rows.append([f"{c.source}:{c.check_id}", c.alert.asset.name if c.alert else c.asset_id,
                     shown, readable(since, zone_name),
                     f"{c.last_status} {readable(c.last_run_at, zone_name)}",
                     ", ".join(c.dedup_keys) or "-"])
    echo(table(["CHECK", "ASSET", "STATE", "SINCE", "LAST RUN", "INCIDENT"], rows, max_width=60))


@cli.group("mute", invoke_without_command=True)
@click.option("--asset", "assets", multiple=True, metavar="GLOB",
              help="Assets to mute: a glob on the qualified name when it has a dot "
                   "('analytics.marts.*'), else on the table's name. Repeatable.")
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="Assets with this tag. "
              "Repeatable (any of them).")
@click.option("--rule", "rules", multiple=True, metavar="NAME", help="Alerts of this rule. "
              "Repeatable.")
@click.option("--for", "length", callback=_duration(minimum=1, maximum=MAX_MUTE),
              metavar="DURATION",
              help="How long (2h, 30m; at most 30d): every mute ends.")
@click.option("--reason", metavar="TEXT", help="Why (shown with every alert it holds).")
@config_option
@json_option
@state_option
@state_dir_option
@click.pass_context
def mute(ctx: click.Context, assets: tuple[str, ...], tags: tuple[str, ...],
         rules: tuple[str, ...], length: float | None, reason: str | None, config: str | None,
         as_json: bool, state: str | None, state_dir: str | None) -> None:
    """Hold alerts about these assets (tags, rules) while work is under way: they wait in the
    outbox, and those still failing when the mute ends are delivered. Resolves and
    acknowledgements always go through. `mute list` shows mutes, `unmute ID` ends one."""
    if ctx.invoked_subcommand is not None:
        return
    _json_flag(ctx, as_json)
    if length is None:
        raise click.UsageError("say how long: --for DURATION (e.g. 2h); every mute ends", ctx)
    if reason is None:
        raise click.UsageError("say why: --reason TEXT", ctx)
    with _ledger_notifier(config, state, state_dir) as notifier:
        made = notifier.mute(assets=assets, tags=tags, rules=rules, reason=reason,
                             seconds=length)
        zone_name = notifier.config.defaults.timezone
    if as_json:
        _emit(made.as_dict(time.time()))
        return
    echo(f"mute #{made.id}: {clean(made.scope.describe())} until "
         f"{readable(made.expires_at, zone_name)} ({clean(made.reason)}); "
         f"`armor-notify unmute {made.id}` ends it sooner")


@mute.command("list")
@click.option("--all", "everything", is_flag=True, help="Also mutes that ended.")
@config_option
@json_option
@state_option
@state_dir_option
@click.pass_context
def mute_list(ctx: click.Context, everything: bool, config: str | None, as_json: bool,
              state: str | None, state_dir: str | None) -> None:
    """List mutes in force (--all: also those lifted or expired), newest first."""
    _json_flag(ctx, as_json)
    with _ledger_notifier(config, state, state_dir) as notifier:
        found = notifier.mutes(ended=everything)
        zone_name = notifier.config.defaults.timezone
    now = time.time()
    if as_json:
        _emit({"mutes": [m.as_dict(now) for m in found]})
        return
    if not found:
        echo("no mutes in force" if not everything else "no mutes")
        return
    echo(table(["ID", "SCOPE", "STATE", "UNTIL", "HELD", "BY", "REASON"],
               [[f"#{m.id}", m.scope.describe(), m.state(now), readable(m.ends_at, zone_name),
                 str(m.held), m.author, m.reason] for m in found], max_width=60))


@cli.command()
@click.argument("mute_id", metavar="ID", type=str)
@config_option
@json_option
@state_option
@state_dir_option
@click.pass_context
def unmute(ctx: click.Context, mute_id: str, config: str | None, as_json: bool,
           state: str | None, state_dir: str | None) -> None:
    """End mute ID now: what it held is due at once (a worker delivers it)."""
    _json_flag(ctx, as_json)
    number = mute_id.removeprefix("#")
    if not number.isdigit():
        raise click.BadParameter(f"'{mute_id}' is not a mute id (a number, as `armor-notify "
                                 "mute list` shows)", param_hint="ID")
    with _ledger_notifier(config, state, state_dir) as notifier:
        lifted, released = notifier.unmute(int(number))
    if as_json:
        _emit({"mute": lifted.as_dict(time.time()), "released": released})
        return
    echo(f"mute #{lifted.id} ended; {len(released)} held deliver"
         f"{'y is' if len(released) == 1 else 'ies are'} due now"
         + (": `armor-notify worker` delivers them" if released else ""))


@cli.command(context_settings={"ignore_unknown_options": True})
@click.option("--mute", "assets", multiple=True, metavar="GLOB", required=True,
              help="Assets to mute while CMD runs (as `mute --asset`). Repeatable.")
@click.option("--tag", "tags", multiple=True, metavar="TAG",
              help="Narrow the mute to assets with this tag (any of those given).")
@click.option("--reason", metavar="TEXT", help="Why (default: the command line).")
@click.option("--max", "longest", callback=_duration(minimum=1, maximum=MAX_MUTE),
              default="12h",
              show_default=True, metavar="DURATION",
              help="The mute ends by then even if CMD is still running (or this process was "
                   "killed).")
@click.option("--wait", "wait", type=str, callback=_duration(), default=DEFAULT_WAIT,
              show_default=True, metavar="DURATION",
              help="After CMD: how long to deliver what the mute held.")
@config_option
@state_option
@state_dir_option
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED, metavar="-- CMD...")
@click.pass_context
def run(ctx: click.Context, assets: tuple[str, ...], tags: tuple[str, ...], reason: str | None,
        longest: float, wait: float, config: str | None, state: str | None,
        state_dir: str | None, command: tuple[str, ...]) -> None:
    """Run CMD with these assets muted: the mute ends when CMD exits (also on Ctrl-C or a
    crash of CMD), what it held that still fails is delivered, and the exit code is CMD's.

    armor-notify run --mute 'analytics.*' --reason backfill -- dbt build --full-refresh
    """
    import shlex
    import subprocess

    notifier = _ledger_notifier(config, state, state_dir)
    with notifier:
        made = notifier.mute(assets=assets, tags=tags, seconds=longest,
                             reason=reason or shlex.join(command))
        echo(f"armor-notify run: mute #{made.id} on {clean(made.scope.describe())} while "
             f"{clean(shlex.join(command))} runs", err=True)
        code = EXIT_INTERNAL
        try:
            code = _run_child(command, subprocess)
        finally:
            _, released = notifier.unmute(made.id)
            if released and wait > 0:
                echo(f"armor-notify run: mute #{made.id} ended; delivering {len(released)} "
                     "held deliver" + ("y" if len(released) == 1 else "ies"), err=True)
                notifier.drain(ids=released, wait=wait)
            else:
                echo(f"armor-notify run: mute #{made.id} ended; {len(released)} held", err=True)
    ctx.exit(code)


def _run_child(command: Sequence[str], subprocess: Any) -> int:
    """Run ``command``; its exit code (a signal: 128 + its number, as shells say). SIGTERM and
    SIGINT sent to this process are passed on to it, and its end is waited for."""
    import signal

    try:
        child = subprocess.Popen(list(command))
    except FileNotFoundError:
        echo(f"armor-notify run: command not found: {clean(command[0])}", err=True)
        return 127
    except PermissionError:
        echo(f"armor-notify run: cannot run {clean(command[0])}: permission denied", err=True)
        return 126

    def forward(signum: int, frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = int(child.wait())
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code


# -- lineage ----------------------------------------------------------------------------------------
@cli.group("lineage")
def lineage_group() -> None:
    """The graph of assets the config's `lineage:` names (a dbt manifest, edges files)."""


@lineage_group.command("show")
@click.argument("asset")
@click.option("--depth", type=click.IntRange(min=1, max=100), default=None,
              help="How many steps up and down (default: the config's lineage.depth).")
@config_option
@json_option
@click.pass_context
def lineage_show(ctx: click.Context, asset: str, depth: int | None, config: str | None,
                 as_json: bool) -> None:
    """Show what ASSET (a qualified name, or a dbt unique_id) is built from and what is built
    from it, nearest first."""
    from .validation import suggest

    _json_flag(ctx, as_json)
    notifier = _notifier(config)
    files = notifier.lineage
    graph = files.current()
    if graph is None:
        raise ArmorNotifyError(f"the lineage cannot be read: {files.error}" if files.error else
                               "no lineage configured: add `lineage: {dbt_manifest: PATH}` or "
                               "`lineage: {edges: PATH}` to the config")
    node = graph.find(asset, asset)
    if node is None:
        raise ArmorNotifyError(f"'{asset}' is not in the lineage{suggest(asset, graph.names)} "
                               f"({len(graph):,} assets from {', '.join(graph.sources)})")
    steps = depth or notifier.config.lineage.depth
    name = graph.names[node]
    up = graph.upstream(name, depth=steps)
    down = graph.downstream(name, depth=steps)
    if as_json:
        _emit({"asset": name, "depth": steps,
               "upstream": [{"asset": a, "distance": d} for a, d in up],
               "downstream": [{"asset": a, "distance": d} for a, d in down]})
        return
    echo(f"{clean(name)} ({len(graph):,} assets in the lineage)")
    for title, items in (("upstream", up), ("downstream", down)):
        echo(f"  {title}: {len(items) or 'none'}")
        for other, distance in items:
            echo(f"    {distance}  {clean(other)}")


# -- plugins ----------------------------------------------------------------------------------------
@cli.command()
@json_option
def plugins(as_json: bool) -> None:
    """List installed plugins: name, version, destination types, sources and hooks."""
    from .plugins import load_plugins

    pm = load_plugins()
    infos = sorted(pm.plugins.values(), key=lambda i: (not i.builtin, i.name))
    if as_json:
        _emit({"plugins": [i.as_dict() for i in infos]})
        return
    rows: Sequence[Sequence[str]] = [
        [i.name, i.distribution, i.version, "built-in" if i.builtin else "third-party",
         ", ".join(i.destination_types) or "-", ", ".join(i.sources) or "-",
         ", ".join(i.hooks) or "-", f"error: {i.error}" if i.error else "ok"] for i in infos]
    echo(table(["PLUGIN", "DISTRIBUTION", "VERSION", "KIND", "DESTINATION TYPES", "SOURCES",
                "HOOKS", "STATUS"], rows, max_width=70))


def main() -> None:
    import gc

    gc.disable()  # until the command's start-up is done (see _started)
    try:
        cli(prog_name="armor-notify")
    finally:
        gc.enable()


if __name__ == "__main__":
    main()
