"""``armor-notify serve``: alerts over HTTP, delivered by in-process workers (SPEC §6, issue 17).

A Starlette application served by uvicorn (the ``serve`` extra). Requests are handled on
threads, since the notifier and its outbox are thread-safe and synchronous. The answer to an
intake is sent once the alerts are durably in the outbox; the workers are woken and deliver.

- ``POST /v1/alerts``: native alert JSON (an object, an array, or JSON lines);
  ``POST /v1/sources/{name}``: what an installed source reads (Alertmanager's webhook…).
  202 with the accepted alerts and their deliveries (repeats marked); 400 with every problem at
  its place; 401 without a valid token; 404 for an unknown source; 413 above ``serve.max_body``;
  415 for a body that is not JSON; 429 with ``Retry-After`` above ``serve.max_backlog``; 503
  when the outbox cannot be written.
- ``GET /healthz``, ``GET /readyz``, ``GET /metrics`` (Prometheus), ``GET /`` (the status page;
  ``POST /login`` signs a browser in with a token, ``POST /deliveries/{id}/retry`` retries).

Tokens (``Authorization: Bearer``) come from ``$ARMOR_NOTIFY_API_TOKENS`` (comma-separated) and
the config's ``serve.tokens``; they are compared in constant time and never logged. Without any,
the service answers everyone, so it refuses to listen anywhere but on loopback.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse
from starlette.responses import Response as HttpResponse
from starlette.routing import Route

from . import status_page
from .api import Notifier
from .delivery import Delivery, State
from .errors import AlertError, ArmorNotifyError, Problem
from .intake import parse_alerts_text
from .metrics import CONTENT_TYPE, Metrics
from .outbox_core import OutboxError
from .sources import SourceInput

TOKENS_ENV = "ARMOR_NOTIFY_API_TOKENS"
JSON_TYPES = ("application/json", "application/x-ndjson", "application/jsonl",
              "application/json-lines", "text/plain")
SESSION_COOKIE = "armor_notify_session"
log = logging.getLogger("armor_notify.serve")


def api_tokens(configured: Sequence[str]) -> list[str]:
    """The tokens that may use the service: ``$ARMOR_NOTIFY_API_TOKENS`` and the config's."""
    from_env = [t.strip() for t in os.environ.get(TOKENS_ENV, "").split(",") if t.strip()]
    return [*from_env, *configured]


class _Committer:
    """Group commit: requests that arrive while an intake is being written wait, and are then
    written together, in one durable transaction (one sync for many requests). The first request
    to find no write running writes everything pending; each request gets its own deliveries,
    or the error of the write it was part of."""

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier
        self.ready = threading.Condition()
        self.pending: list[_Intake] = []
        self.writing = False

    def enqueue(self, alerts: list[Any]) -> tuple[list[Delivery], dict[str, str]]:
        item = _Intake(alerts)
        with self.ready:
            self.pending.append(item)
            while not item.done:
                if self.writing:
                    self.ready.wait()
                    continue
                self.writing, batch, self.pending = True, self.pending, []
                self.ready.release()
                try:
                    self._write(batch)
                finally:
                    self.ready.acquire()
                    self.writing = False
                    self.ready.notify_all()
        if item.error is not None:
            raise item.error
        return item.deliveries, item.notes

    def _write(self, batch: list[_Intake]) -> None:
        try:
            written, notes = self.notifier.accept([a for item in batch for a in item.alerts])
        except Exception as exc:  # every request of this write gets the error
            for item in batch:
                item.error, item.done = exc, True
            return
        # Each request gets the deliveries of its alerts (the check ledger may write more or
        # fewer than routing planned: a resolve, or nothing).
        by_alert: dict[str, list[Delivery]] = {}
        for d in written:
            by_alert.setdefault(d.alert.id, []).append(d)
        for item in batch:
            ids = list(dict.fromkeys(a.id for a in item.alerts))  # in order, once each
            item.deliveries = [d for i in ids for d in by_alert.get(i, [])]
            item.notes = {i: notes[i] for i in ids if i in notes}
            item.done = True


@dataclass
class _Intake:
    alerts: list[Any]
    deliveries: list[Delivery] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)
    error: Exception | None = None
    done: bool = False


@dataclass
class Service:
    """One running service: the notifier, its workers, its metrics and its sessions."""

    notifier: Notifier
    tokens: list[str]
    workers: int | None = 32
    """Concurrent deliveries of the in-process workers; ``None``: no workers (``--no-worker``)."""
    poll: float = 1.0
    grace: float = 30.0
    metrics: Metrics = field(init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _worker: threading.Thread | None = field(default=None, init=False)
    _secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), init=False)
    _sessions: set[str] = field(default_factory=set, init=False)
    _queued: int = field(default=0, init=False)
    _counted_at: float = field(default=-1e9, init=False)

    def __post_init__(self) -> None:
        outbox = self.notifier.outbox
        self.metrics = Metrics(outbox.summary, lambda: outbox.rate_waits)
        self._committer = _Committer(self.notifier)

    # -- the workers ------------------------------------------------------------------------------
    def start(self) -> None:
        if self.workers is None:
            return
        self._worker = threading.Thread(target=self._work, name="armor-notify worker",
                                        daemon=True)
        self._worker.start()

    def _work(self) -> None:
        try:
            self.notifier.drain(stop_when_idle=False, poll=self.poll, on_final=self.metrics.final,
                                retention=self.notifier.config.state.retention,
                                on_outbox_error=self._outbox_trouble, stop=self._stop)
        except Exception:  # a bug: said, and the service goes on taking alerts for `worker`
            log.exception("the in-process worker stopped; queued deliveries wait for a worker")

    @staticmethod
    def _outbox_trouble(exc: Exception, retry_in: float) -> None:
        log.warning("outbox: %s; trying again in %gs", exc, retry_in)

    def stop(self) -> None:
        """Stop the workers: attempts running finish (within ``grace``), the rest stays queued."""
        self._stop.set()
        self.notifier.wake()
        if self._worker is not None:
            self._worker.join(self.grace)
            if self._worker.is_alive():
                log.warning("attempts still running after %gs: their deliveries are sent again "
                            "when their leases expire", self.grace)

    # -- auth -------------------------------------------------------------------------------------
    def token_ok(self, given: str | None) -> bool:
        if not self.tokens:
            return True
        found = False
        for token in self.tokens:  # every one compared, in constant time
            found |= given is not None and hmac.compare_digest(given.encode(), token.encode())
        return found

    def authorised(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        return self.token_ok(value.strip() if scheme.lower() == "bearer" else None)

    def signed_in(self, request: Request) -> bool:
        return not self.tokens or request.cookies.get(SESSION_COOKIE) in self._sessions

    def new_session(self) -> str:
        session = secrets.token_urlsafe(32)
        self._sessions.add(session)
        return session

    def csrf(self, request: Request) -> str:
        key = request.cookies.get(SESSION_COOKIE) or "anonymous"
        return hmac.new(self._secret, key.encode(), hashlib.sha256).hexdigest()

    # -- intake -----------------------------------------------------------------------------------
    def accept(self, source: str, read: Callable[[], list[Any]]) -> HttpResponse:
        """Read the alerts, write them to the outbox, wake the workers: 202, or why not."""
        try:
            if self.backlogged():
                return JSONResponse({"error": "the outbox is over its backlog limit "
                                              f"({self.notifier.config.serve.max_backlog} queued "
                                              "deliveries): try again later"}, 429,
                                    headers={"Retry-After": "30"})
            alerts = read()
            deliveries, notes = self._committer.enqueue(alerts) if alerts else ([], {})
        except AlertError as exc:
            return JSONResponse(_problems(exc), 400)
        except OutboxError as exc:
            log.error("intake: %s", exc)
            return JSONResponse({"error": str(exc)}, 503, headers={"Retry-After": "10"})
        fresh = sum(1 for d in deliveries if not d.repeat)
        self._queued += fresh  # until the next count (backlogged)
        self.metrics.accepted_alerts(source, len(alerts), sum(1 for d in deliveries if d.repeat))
        if fresh:
            self.notifier.wake()
        log.info("accepted %d alert(s) from %s: %d deliveries, %d repeats", len(alerts), source,
                 fresh, len(deliveries) - fresh)
        return JSONResponse({"accepted": _accepted(alerts, deliveries, notes)}, 202)

    def backlogged(self) -> bool:
        """Whether the queue is over ``serve.max_backlog``, counted at most once a second (a
        count for every request would cost more than the intake it guards)."""
        now = time.monotonic()
        if now - self._counted_at >= 1.0:
            summary = self.notifier.outbox.summary(time.time())
            self._queued = summary.counts.get(State.queued.value, 0)
            self._counted_at = now
        return self._queued >= self.notifier.config.serve.max_backlog

    def signature_ok(self, source: str, body: bytes, request: Request) -> bool:
        wanted = self.notifier.config.serve.signatures.get(source)
        if wanted is None:
            return True
        given = request.headers.get(wanted.header, "").strip().removeprefix("sha256=")
        expected = hmac.new(wanted.secret.get_secret_value().encode(), body,
                            hashlib.sha256).hexdigest()
        return hmac.compare_digest(given.lower().encode(), expected.encode())


def _problems(exc: ArmorNotifyError) -> dict[str, Any]:
    problems = getattr(exc, "problems", [])
    return {"error": str(exc).split("\n", 1)[0],
            "problems": [{"where": p.file, "path": p.path, "line": p.line, "message": p.message,
                          "text": str(p)} for p in problems]}


def _accepted(alerts: Sequence[Any], deliveries: Sequence[Delivery],
              notes: Mapping[str, str]) -> list[dict[str, Any]]:
    by_alert: dict[str, list[dict[str, Any]]] = {a.id: [] for a in alerts}
    for d in deliveries:
        by_alert.setdefault(d.alert.id, []).append(
            {"id": d.id, "destination": d.destination, "state": d.state.value,
             "repeat": d.repeat})
    return [{"alert_id": alert_id, "deliveries": items,
             **({"check": notes[alert_id]} if alert_id in notes else {})}
            for alert_id, items in by_alert.items()]


async def _body(request: Request, limit: int) -> bytes | HttpResponse:
    """The request body, or the answer that refuses it (413, 415)."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind not in JSON_TYPES:
        return JSONResponse({"error": f"content type {kind or 'none'!r}: send JSON "
                                      "(application/json, or application/x-ndjson for JSON "
                                      "lines)"}, 415)
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        return JSONResponse({"error": f"the body is larger than {limit} bytes"}, 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return JSONResponse({"error": f"the body is larger than {limit} bytes"}, 413)
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(service: Service) -> Starlette:
    notifier = service.notifier
    serve = notifier.config.serve
    unauthorised = JSONResponse({"error": "a valid token is needed: Authorization: Bearer "
                                          "<token>"}, 401,
                                headers={"WWW-Authenticate": 'Bearer realm="armor-notify"'})

    async def post_alerts(request: Request) -> HttpResponse:
        if not service.authorised(request):
            return unauthorised
        body = await _body(request, serve.max_body)
        if isinstance(body, HttpResponse):
            return body

        def read() -> list[Any]:
            try:
                text = body.decode("utf-8-sig")
            except UnicodeDecodeError:
                raise AlertError([Problem("request body", "", "not UTF-8 text")]) from None
            return parse_alerts_text(text, notifier.plugins.registry.event_types,
                                     source="request body")

        return await run_in_threadpool(service.accept, "native", read)

    async def post_source(request: Request) -> HttpResponse:
        if not service.authorised(request):
            return unauthorised
        name = request.path_params["name"]
        if name not in notifier.plugins.registry.sources:
            return JSONResponse({"error": f"no source named '{name}'; installed: "
                                          f"{', '.join(sorted(notifier.plugins.registry.sources))}"},
                                404)
        body = await _body(request, serve.max_body)
        if isinstance(body, HttpResponse):
            return body
        if not service.signature_ok(name, body, request):
            return JSONResponse({"error": "the body's signature is missing or wrong"}, 401)

        def read() -> list[Any]:
            return notifier.read_source(name, SourceInput.from_bytes(body, f"POST /v1/sources/{name}"))

        return await run_in_threadpool(service.accept, name, read)

    async def healthz(request: Request) -> HttpResponse:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> HttpResponse:
        def check() -> dict[str, Any]:
            notifier.outbox.summary(time.time())
            return {"outbox": "ok", "config": notifier.config.path,
                    "plugins": notifier.plugins.plugin_errors() or "ok",
                    "workers": "running" if service._worker is not None and
                    service._worker.is_alive() else ("off" if service.workers is None
                                                     else "stopped")}
        try:
            found = await run_in_threadpool(check)
        except ArmorNotifyError as exc:
            return JSONResponse({"ready": False, "error": str(exc)}, 503)
        ready = found["workers"] != "stopped"
        return JSONResponse({"ready": ready, **found}, 200 if ready else 503)

    async def metrics(request: Request) -> HttpResponse:
        text = await run_in_threadpool(service.metrics.text)
        return HttpResponse(text, media_type=CONTENT_TYPE)

    async def index(request: Request) -> HttpResponse:
        if not service.signed_in(request):
            return HTMLResponse(status_page.login())

        def render() -> str:
            now = time.time()
            problems = notifier.inspect([State.failed, State.dead], limit=50)
            return status_page.status(notifier.outbox.summary(now), problems,
                                      checks=notifier.outbox.checks(failing=True),
                                      mutes=notifier.outbox.mutes(now),
                                      config=notifier.config.path, csrf=service.csrf(request),
                                      flash=request.query_params.get("flash", ""), now=now)

        return HTMLResponse(await run_in_threadpool(render),
                            headers={"Cache-Control": "no-store"})

    async def sign_in(request: Request) -> HttpResponse:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        if not service.token_ok((form.get("token") or [""])[0]):
            return HTMLResponse(status_page.login("That token is not valid."), 401)
        response = RedirectResponse("/", 303)
        response.set_cookie(SESSION_COOKIE, service.new_session(), httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")
        return response

    async def retry(request: Request) -> HttpResponse:
        if not service.signed_in(request):
            return HTMLResponse(status_page.login("Sign in to retry deliveries."), 401)
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        if not hmac.compare_digest((form.get("csrf") or [""])[0].encode(),
                                   service.csrf(request).encode()):
            return PlainTextResponse("the form is stale or forged (CSRF); reload the page", 403)
        delivery_id = request.path_params["delivery_id"]

        def requeue() -> int:
            count = notifier.outbox.retry([delivery_id], include_failed=True, now=time.time())
            notifier.wake()
            return count

        count = await run_in_threadpool(requeue)
        flash = "Queued again: the worker sends it now." if count else "Nothing to retry."
        return RedirectResponse(f"/?flash={flash.replace(' ', '+')}", 303)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        service.start()
        log.info("serving; workers: %s", service.workers or "off")
        yield
        log.info("stopping: no new requests; attempts running finish, the rest stays queued")
        await run_in_threadpool(service.stop)

    return Starlette(routes=[
        Route("/v1/alerts", post_alerts, methods=["POST"]),
        Route("/v1/sources/{name}", post_source, methods=["POST"]),
        Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics),
        Route("/", index), Route("/login", sign_in, methods=["POST"]),
        Route("/deliveries/{delivery_id}/retry", retry, methods=["POST"]),
    ], lifespan=lifespan)


def log_setup(fmt: str, level: int) -> None:
    """Log lines on stderr: readable, or one JSON object a line (``--log-format json``)."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("armor_notify", "uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
                           "level": record.levelname.lower(), "logger": record.name,
                           "message": record.getMessage()}, ensure_ascii=False)
