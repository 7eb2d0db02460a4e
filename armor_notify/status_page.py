"""The status page of ``armor-notify serve`` (``GET /``): server-rendered HTML, no build step.

What a person on call needs at a glance: the outbox by state, the last hour, the newest failed
and dead deliveries with their reasons and a retry button, the checks failing or missing, and the
mutes in force with what they hold. Every piece of text that came from an alert, a destination's
answer, a mute or the config is escaped; secrets were masked before they were stored. Forms carry
the page's CSRF token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import TYPE_CHECKING

from .times import readable

if TYPE_CHECKING:
    from .delivery import Delivery
    from .ledger import CheckState
    from .mutes import Mute
    from .outbox_core import Summary

STATES = ("queued", "in_flight", "delivered", "failed", "dead", "suppressed", "batched",
          "digested", "skipped")
CHECK_ROWS = 50
"""Failing checks shown, newest first (``armor-notify checks --failing`` lists them all)."""
STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:72rem;padding:0 1rem;
color:#1d2330}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.35rem .5rem;
border-bottom:1px solid #dde1ea;vertical-align:top}th{background:#f3f5f9}
.counts td,.counts th{text-align:right}.failed,.dead{color:#b3261e;font-weight:600}
.delivered{color:#1e7b34}.note{color:#5b6475}button{cursor:pointer}
.flash{background:#e8f3ea;border:1px solid #9ccaa6;padding:.5rem .75rem}
"""


def page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content='width=device-width,initial-scale=1'>"
            f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
            f"<body>{body}</body></html>")


def login(error: str = "") -> str:
    message = f"<p class=failed>{escape(error)}</p>" if error else ""
    return page("armor-notify: sign in", f"""<h1>armor-notify</h1>{message}
<form method=post action=/login><label>API token
<input type=password name=token autocomplete=current-password required autofocus></label>
<button type=submit>Sign in</button></form>""")


def status(summary: Summary, problems: Sequence[Delivery], *, checks: Sequence[CheckState],
           mutes: Sequence[Mute], config: str, csrf: str, flash: str = "", now: float) -> str:
    """The page; ``checks``: those failing or missing (any order), ``mutes``: those in force."""
    counts = _row(summary.counts)
    recent = _row(summary.last_hour)
    waiting = (f"the oldest waiting delivery was accepted {readable(summary.oldest_waiting_since)}"
               if summary.oldest_waiting_since is not None else "nothing is waiting")
    rows = "".join(_problem(d, csrf) for d in problems) or (
        "<tr><td colspan=7 class=note>No failed or dead deliveries.</td></tr>")
    notice = f"<p class=flash role=status>{escape(flash)}</p>" if flash else ""
    return page("armor-notify status", f"""<h1>armor-notify</h1>
<p class=note>Config {escape(config)} · {escape(readable(now, seconds=True))} · {escape(waiting)}</p>
{notice}
<h2>Outbox</h2>
<table class=counts><tr><th></th>{_heads()}</tr>
<tr><th>all</th>{counts}</tr><tr><th>last hour</th>{recent}</tr></table>
<h2>Failed and dead deliveries, newest first</h2>
<table id=problems><tr><th>Accepted</th><th>Alert</th><th>Destination</th><th>State</th>
<th>Attempts</th><th>Why</th><th></th></tr>{rows}</table>
{_checks(summary, checks)}
{_mutes(summary, mutes)}""")


def _heads() -> str:
    return "".join(f"<th>{escape(s.replace('_', ' '))}</th>" for s in STATES)


def _row(counts: Mapping[str, int]) -> str:
    return "".join(f"<td class={escape(s) if counts.get(s) else 'note'}>{counts.get(s, 0)}</td>"
                   for s in STATES)


def _problem(d: Delivery, csrf: str) -> str:
    hint = f"<br><span class=note>{escape(d.hint)}</span>" if d.hint else ""
    return (f"<tr class=delivery data-id='{escape(d.id)}'>"
            f"<td>{escape(readable(d.created_at, seconds=True))}</td>"
            f"<td>{escape(d.alert.title)}<br><span class=note>{escape(d.alert.id)}</span></td>"
            f"<td>{escape(d.destination)}</td><td class={escape(d.state.value)}>"
            f"{escape(d.state.value)}</td><td>{d.attempt_count}</td>"
            f"<td class=reason>{escape(d.reason)}{hint}</td>"
            f"<td><form method=post action='/deliveries/{escape(d.id)}/retry'>"
            f"<input type=hidden name=csrf value='{escape(csrf)}'>"
            f"<button type=submit>Retry</button></form></td></tr>")


def _checks(summary: Summary, checks: Sequence[CheckState]) -> str:
    shown = sorted(checks, key=_failing_since, reverse=True)[:CHECK_ROWS]
    rows = "".join(_check(c) for c in shown) or (
        "<tr><td colspan=6 class=note>No failing checks.</td></tr>")
    more = (f"<p class=note>{len(checks) - len(shown)} more: <code>armor-notify checks "
            "--failing</code> lists them all.</p>" if len(checks) > len(shown) else "")
    tally = (f"{summary.checks.get('failing', 0)} failing · "
             f"{summary.checks.get('passing', 0)} passing · "
             f"{summary.checks_missing} missing (stopped reporting)")
    return f"""<h2>Failing checks, newest first</h2>
<p class=note>{tally}</p>
<table id=checks><tr><th>Check</th><th>Asset</th><th>Source</th><th>Failing since</th>
<th>Last result</th><th></th></tr>{rows}</table>{more}"""


def _failing_since(c: CheckState) -> float:
    """When a check began failing, or (passing) went missing."""
    return c.since if c.state == "failing" or c.missing_since is None else c.missing_since


def _check(c: CheckState) -> str:
    asset = c.alert.asset.name if c.alert is not None else c.asset_id
    failing = c.state == "failing"
    notes = [*([f"missing since {readable(c.missing_since)}"] if c.missing_since is not None
               else []),
             *([f"folded into {c.folded_into}"] if c.folded_into is not None else [])]
    return (f"<tr class=check><td>{escape(c.check_id)}</td><td>{escape(asset)}</td>"
            f"<td>{escape(c.source)}</td><td class={'failed' if failing else 'note'}>"
            f"{escape(readable(c.since) if failing else c.state)}</td>"
            f"<td>{escape(c.last_status)} {escape(readable(c.last_run_at))}</td>"
            f"<td class=note>{escape('; '.join(notes))}</td></tr>")


def _mutes(summary: Summary, mutes: Sequence[Mute]) -> str:
    rows = "".join(
        f"<tr class=mute><td>#{m.id}</td><td>{escape(m.scope.describe())}</td>"
        f"<td>{escape(m.reason)}</td><td>{escape(m.author)}</td>"
        f"<td>{escape(readable(m.ends_at))}</td><td>{m.held}</td></tr>" for m in mutes) or (
        "<tr><td colspan=6 class=note>No mutes in force.</td></tr>")
    held = f"{summary.held} deliver{'y' if summary.held == 1 else 'ies'}"
    return f"""<h2>Mutes in force</h2>
<p class=note>{summary.mutes} in force, holding {held} until they end</p>
<table id=mutes><tr><th>Mute</th><th>Covers</th><th>Reason</th><th>By</th><th>Until</th>
<th>Held</th></tr>{rows}</table>"""
