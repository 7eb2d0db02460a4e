"""The email itself: subject, a text/plain and a text/html part, and the headers.

The words come from :mod:`armor_notify.message`, as in every destination; this module lays them
out for mail and escapes every piece of alert text for HTML.
"""

from __future__ import annotations

import html
from datetime import datetime, timezone
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import format_datetime, make_msgid

from armor_notify import Notification
from armor_notify.message import DigestMessage, Message, and_more, build_digest, build_message
from armor_notify.templates import render_named, template_context

from .addresses import header_text, parse_address
from .config import DEFAULT_SUBJECT_PREFIX, SUBJECT_MAX_CHARS, EmailConfig

__all__ = [
    "SUBJECT_MAX_CHARS",
    "build_email",
    "email_subject",
    "render_digest_html",
    "render_digest_text",
    "render_html",
    "render_text",
]


def email_subject(notification: Notification, prefix: str = DEFAULT_SUBJECT_PREFIX) -> str:
    """``[AnomalyArmor] CRITICAL: <title> (<asset>)``; ``RESOLVED:`` and ``Test Alert:`` forms."""
    alert = notification.alert
    if alert.status == "triggered":
        label = "Test Alert" if notification.test else alert.severity.value.upper()
    else:
        label = alert.status.upper() + (" Test Alert" if notification.test else "")
    title = header_text(alert.title)
    asset = header_text(alert.asset.name)
    subject = f"{header_text(prefix)} {label}: {title} ({asset})".strip()
    if len(subject) > SUBJECT_MAX_CHARS:
        subject = subject[: SUBJECT_MAX_CHARS - 1].rstrip() + "…"
    return subject


def _paragraphs(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]


def render_text(message: Message) -> str:
    """The text/plain part: the same content as the Slack message, as plain lines."""
    lines: list[str] = []
    if message.test_notice:
        lines += [message.test_notice, ""]
    lines += [message.headline, message.title, ""]
    lines += [f"{field.label}: {field.value}" for field in message.fields]
    if message.description:
        lines += ["", *_paragraphs(message.description)]
    if message.freshness:
        lines += ["", message.freshness]
    if message.changes or message.more_changes:
        lines += ["", f"Changes: {message.changes_summary}" if message.changes_summary else ""]
        lines += [f"- {line}" for line in message.change_lines()]
    if message.link:
        lines += ["", f"{message.link_text}: {message.link}"]
    lines += ["", f"Occurred: {message.time_text} · Alert ID: {message.alert_id}"]
    return "\n".join(lines) + "\n"


_STATE_COLOURS = {"critical": "#d32f2f", "warning": "#f9a825", "info": "#1976d2"}
_RESOLVED_COLOUR = "#2e7d32"
_ACKNOWLEDGED_COLOUR = "#757575"


def _esc(text: str) -> str:
    """Alert text as HTML text or attribute value: ``&``, ``<``, ``>`` and both quotes escaped."""
    return html.escape(text, quote=True)


def render_html(message: Message) -> str:
    """The text/html part. Every piece of alert text goes through :func:`html.escape`."""

    def block(text: str) -> str:
        return "<br>\n".join(_esc(line) for line in _paragraphs(text))

    if message.state == "resolved":
        colour = _RESOLVED_COLOUR
    elif message.state == "acknowledged":
        colour = _ACKNOWLEDGED_COLOUR
    else:
        colour = _STATE_COLOURS.get(message.severity, _STATE_COLOURS["warning"])

    parts: list[str] = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8"><title>' + _esc(message.summary) + "</title></head>",
        '<body style="font-family:Helvetica,Arial,sans-serif;font-size:14px;color:#212121">',
        f'<div style="border-left:6px solid {colour};padding:4px 12px">',
    ]
    if message.test_notice:
        parts.append(
            '<p style="background:#fff8e1;padding:8px;margin:0 0 8px 0">'
            f"{_esc(message.test_notice)}</p>"
        )
    parts += [
        f'<p style="margin:0;color:{colour};font-weight:bold">{_esc(message.headline)}</p>',
        f'<h2 style="margin:4px 0 12px 0;font-size:18px">{_esc(message.title)}</h2>',
        '<table style="border-collapse:collapse;margin-bottom:12px">',
    ]
    parts += [
        f'<tr><td style="padding:2px 12px 2px 0;color:#616161">{_esc(field.label)}</td>'
        f"<td>{_esc(field.value)}</td></tr>"
        for field in message.fields
    ]
    parts.append("</table>")
    if message.description:
        parts.append(f"<p>{block(message.description)}</p>")
    if message.freshness:
        parts.append(f"<p>{_esc(message.freshness)}</p>")
    if message.changes or message.more_changes:
        if message.changes_summary:
            parts.append(f"<p><b>Changes:</b> {_esc(message.changes_summary)}</p>")
        parts.append("<ul>")
        parts += [f"<li>{_esc(change.text)}</li>" for change in message.changes]
        if message.more_changes:
            parts.append(f"<li><i>{_esc(message.change_lines()[-1])}</i></li>")
        parts.append("</ul>")
    if message.link:
        parts.append(f'<p><a href="{_esc(message.link)}">{_esc(message.link_text)}</a></p>')
    parts += [
        f'<p style="color:#757575;font-size:12px">Occurred: {_esc(message.time_text)} · '
        f"Alert ID: {_esc(message.alert_id)}</p>",
        "</div>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def render_digest_text(digest: DigestMessage) -> str:
    """A digest's text/plain part: the headline, then each asset's alerts with their links."""
    lines = [f"Digest: {digest.headline}", ""]
    for group in digest.groups:
        lines.append(group.asset)
        for item in group.items:
            lines.append(f"- {item.text}" + (f" ({item.link})" if item.link else ""))
        lines.append("")
    if digest.left_out:
        lines += [f"{and_more(digest.left_out)} not listed here", ""]
    lines.append(f"{digest.total} alerts · {digest.time_text}")
    return "\n".join(lines) + "\n"


def render_digest_html(digest: DigestMessage) -> str:
    """A digest's text/html part; every piece of alert text goes through :func:`html.escape`."""

    parts = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8"><title>' + _esc(digest.headline) + "</title></head>",
        '<body style="font-family:Helvetica,Arial,sans-serif;font-size:14px;color:#212121">',
        f'<h2 style="font-size:18px">Digest: {_esc(digest.headline)}</h2>',
    ]
    for group in digest.groups:
        parts += [f"<h3 style=\"font-size:15px;margin-bottom:4px\">{_esc(group.asset)}</h3>",
                  "<ul>"]
        for item in group.items:
            link = (f' · <a href="{_esc(item.link)}">{_esc(digest.link_text)}</a>'
                    if item.link else "")
            parts.append(f"<li>{_esc(item.text)}{link}</li>")
        parts.append("</ul>")
    if digest.left_out:
        parts.append(f"<p><i>{_esc(and_more(digest.left_out))} not listed here</i></p>")
    parts += [f'<p style="color:#757575;font-size:12px">{digest.total} alerts · '
              f"{_esc(digest.time_text)}</p>", "</body></html>"]
    return "\n".join(parts) + "\n"


def build_email(config: EmailConfig, notification: Notification) -> EmailMessage:
    """The complete message: headers plus a multipart/alternative text + HTML body."""
    sender = parse_address(config.from_)
    msg = EmailMessage(policy=default_policy)
    if notification.digest:
        digest = build_digest(notification)
        subject = f"{header_text(config.subject_prefix)} Digest: {header_text(digest.headline)}"
        msg["Subject"] = subject.strip()[:SUBJECT_MAX_CHARS]
        text, html_part = render_digest_text(digest), render_digest_html(digest)
    else:
        content = build_message(notification)
        msg["Subject"] = email_subject(notification, config.subject_prefix)
        text, html_part = render_text(content), render_html(content)
        if config.template is not None:  # what it gives replaces the built-in part
            given = {name: t for name in ("subject", "text", "html")
                     if (t := getattr(config.template, name)) is not None}
            shown = render_named(given, template_context(notification))
            if shown.get("subject", "").strip():
                msg.replace_header("Subject", header_text(shown["subject"]))
            text, html_part = shown.get("text", text), shown.get("html", html_part)
    msg["From"] = sender
    msg["To"] = tuple(parse_address(a) for a in config.to)
    if config.cc:
        msg["Cc"] = tuple(parse_address(a) for a in config.cc)
    msg["Date"] = format_datetime(datetime.now(timezone.utc))
    # An explicit domain avoids make_msgid's socket.getfqdn(), a DNS lookup that can hang.
    msg["Message-ID"] = make_msgid(domain=sender.domain.strip("[]") or "localhost")
    # RFC 3834: tells vacation responders and ticket systems not to answer automatically.
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(text)
    msg.add_alternative(html_part, subtype="html")
    return msg
