"""HTTP for destination plugins: post bytes, get the answer or one plain-worded network error.

:class:`HttpClient` is what the PagerDuty and Slack senders (and the example webhook plugin) post
with. It is built on ``requests``: each client has one ``requests.Session`` with a pooled
``HTTPAdapter``, which serves every I/O thread and keeps its connections alive between posts.
Proxy and CA settings are read from the environment once, when the client is made, with the
variables ``requests`` reads (``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY``, ``NO_PROXY``,
``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``; certifi's bundle otherwise), and handed to the session
(``trust_env`` off), so that requests does not scan the environment again on every post. A post
goes out as a prepared request with only the client's headers: no session defaults merged in, no
cookies kept, no credentials taken from the URL.

Nothing is retried or redirected here: the dispatcher owns retries, and a redirect from an alert
endpoint is a misconfiguration the plugin reports.

A post's ``timeout`` bounds the whole attempt (connecting, the TLS handshake, sending, the status
line, the headers and the body), not each socket wait: a server that answers a byte at a time
cannot keep a post longer than its timeout. requests (through urllib3) bounds each read only, so
the adapter's connections put their sockets under a watchdog thread that shuts down the socket of
a post still under way at its deadline (one thread for the process; a post that ends in time
costs a heap push and two lock round trips).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import heapq
import itertools
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, urlsplit

if TYPE_CHECKING:
    import ssl

    import requests
    import requests.adapters

from .outcome import Outcome
from .secrets import mask_secret, mask_url

NetworkFailure = Literal["timeout", "certificate", "tls", "connect", "other"]
CERTIFICATE_HINT = ("If a proxy with its own certificate authority sits in between, or the "
                    "service uses a private one, point REQUESTS_CA_BUNDLE at that authority's "
                    "certificate.")


class NetworkError(Exception):
    """A post that got no HTTP answer.

    ``kind`` says what went wrong, for choosing between a retry and a permanent failure:
    ``timeout`` (no answer in time), ``certificate`` (the server's certificate is not trusted),
    ``tls`` (another TLS failure), ``connect`` (refused, reset, unresolvable, proxy trouble) or
    ``other`` (the request could not be made, e.g. a malformed URL). ``str()`` gives the innermost
    cause's words (``[Errno 111] Connection refused``) without object reprs; it may name the host,
    never the URL's path.
    """

    def __init__(self, kind: NetworkFailure, detail: str) -> None:
        super().__init__(detail)
        self.kind: NetworkFailure = kind

    def outcome(self, where: str, timeout: float, *, hint: str | None = None,
                certificate_hint: str = CERTIFICATE_HINT) -> Outcome:
        """The attempt's outcome, in the same words for every destination: a timeout, TLS
        trouble and a failed connection are retried; an untrusted certificate (waiting will not
        make it trusted) and a request that cannot be made fail. ``where`` names the service
        without secrets (e.g. ``mask_url(url)``); ``hint`` goes with connection failures and
        requests that cannot be made."""
        if self.kind == "timeout":
            return Outcome.retry(f"no answer from {where} within {timeout:g} s")
        if self.kind == "certificate":
            return Outcome.failed(f"TLS certificate of {where} could not be verified: {self}",
                                  hint=certificate_hint)
        if self.kind == "tls":
            return Outcome.retry(f"TLS error talking to {where}: {self}")
        if self.kind == "connect":
            return Outcome.retry(f"could not reach {where}: {self}", hint=hint)
        return Outcome.failed(f"could not send to {where}: {self}", hint=hint)


@dataclass(frozen=True)
class Answer:
    """An HTTP answer, read whole."""

    status: int
    reason: str
    headers: Mapping[str, str]
    """Case-insensitive."""
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json_object(self) -> dict[str, Any] | None:
        """The body as a JSON object, ``None`` when it is not one."""
        try:
            value = json.loads(self.body)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None


class HttpClient:
    """Posts to one service from any number of threads over kept-alive connections.

    ``url`` is where the posts go (its scheme and host choose the proxy); ``headers`` are sent
    with every post. At most ``max_connections`` connections per host are kept open; more
    concurrent posts open extra connections that are closed afterwards.
    """

    def __init__(self, url: str, headers: Mapping[str, str] | None = None, *,
                 max_connections: int = 32) -> None:
        self.headers = dict(headers or {})
        self.proxy = proxy_for(url)
        """The proxy URL posts to ``url`` go through, ``None`` for a direct connection."""
        self.ca_bundle = ca_bundle()
        """The CA certificates file (or directory) TLS certificates are checked against."""
        self._max_connections = max_connections
        self._https = urlsplit(url).scheme.lower() == "https"
        # What requests would look up in the environment on every post, read here once.
        self._settings: dict[str, Any] = {
            "proxies": {} if self.proxy is None else {"all": self.proxy},
            "verify": True, "cert": None, "stream": False, "allow_redirects": False,
        }
        self._lock = threading.Lock()
        self._session: requests.Session | None = None

    def post(self, url: str, body: bytes, *, timeout: float,
             headers: Mapping[str, str] | None = None) -> Answer:
        """POST ``body`` and read the whole answer within ``timeout`` seconds in all (connect,
        TLS handshake, send, status line, headers, body); raises :class:`NetworkError` when no
        complete answer comes in time (``kind`` ``timeout``) or at all."""
        import requests
        import urllib3

        attempt = _WATCHDOG.start(timeout)
        outer = getattr(_current, "attempt", None)  # a post inside a plugin's own deadline()
        _current.attempt = attempt
        try:
            session = self._session or self._make_session()
            response = session.send(_prepared(url, body, {**self.headers, **(headers or {})}),
                                    timeout=timeout, **self._settings)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise attempt.timed_out() or _classify(exc) from None
        finally:
            _current.attempt = outer
            _WATCHDOG.finish(attempt)
        cut_off = attempt.timed_out()  # an answer cut off at the deadline may look complete
        if cut_off is not None:
            raise cut_off
        return Answer(response.status_code, response.reason or "", response.headers,
                      response.content)

    def close(self) -> None:
        """Close the kept-alive connections (a later post opens new ones)."""
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            session.close()

    def _make_session(self) -> requests.Session:
        # One session for every thread: Session.send of a prepared request reads the session,
        # takes a connection from urllib3's pools (thread-safe) and locks the (empty) cookie jar.
        with self._lock:
            if self._session is None:
                # One context for every connection: its sockets put their TLS handshake under
                # the watchdog, and the bundle is loaded once, not per connection.
                tls = _watched_tls_context(self.ca_bundle) if self._https else None
                session = _session_class()()
                session.trust_env = False  # proxies and the CA bundle were read once, above
                session.headers.clear()  # no User-Agent, Accept... of requests': only ours
                from http.cookiejar import DefaultCookiePolicy

                session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))  # none kept
                adapter = _adapter_class()(self._max_connections, tls, self.ca_bundle)
                session.mount("http://", adapter)
                session.mount("https://", adapter)
                if self.proxy is not None:  # made now: the adapter's cache is not thread-safe
                    adapter.proxy_manager_for(self.proxy)
                self._session = session
            return self._session


def _prepared(url: str, body: bytes, headers: Mapping[str, str]) -> requests.PreparedRequest:
    """The request as it goes out: no cookies, no credentials taken from the URL, no session
    defaults merged in (merging them is most of requests' per-post cost), the headers as given
    (http.client refuses a line break in them; requests would also refuse leading spaces)."""
    import requests
    from requests.structures import CaseInsensitiveDict

    request = requests.PreparedRequest()
    request.prepare_method("POST")
    request.url = _prepared_url(url)
    request.headers = CaseInsensitiveDict(headers)
    request.prepare_body(body, None)
    request.prepare_hooks(None)
    return request


@functools.lru_cache(maxsize=64)
def _prepared_url(url: str) -> str:
    """``url`` checked and normalised by requests (once per URL: a client posts to one)."""
    import requests

    request = requests.PreparedRequest()
    request.prepare_url(url, None)
    return str(request.url)


@functools.cache
def _session_class() -> type[requests.Session]:
    import requests

    class Session(requests.Session):
        """A session that never follows a redirect: a redirect is an answer to report."""

        def get_redirect_target(self, resp: requests.Response) -> None:
            return None

    return Session


@functools.cache
def _adapter_class() -> Callable[[int, ssl.SSLContext | None, str],
                                  requests.adapters.HTTPAdapter]:
    import requests.adapters

    class WatchedAdapter(requests.adapters.HTTPAdapter):
        """requests' pooled adapter, posting through connections the watchdog can cut off,
        verifying certificates against ``bundle`` (for an HTTPS client, through one shared TLS
        context that holds it); nothing is retried."""

        def __init__(self, max_connections: int, tls: ssl.SSLContext | None, bundle: str) -> None:
            self._tls = tls  # before super().__init__, which makes the pool manager
            self._bundle = bundle
            super().__init__(pool_maxsize=max_connections, max_retries=0, pool_block=False)

        def _tls_options(self) -> dict[str, Any]:
            return {} if self._tls is None else {"ssl_context": self._tls}

        def init_poolmanager(self, connections: int, maxsize: int, block: bool = False,
                             **pool_kwargs: Any) -> None:
            super().init_poolmanager(connections, maxsize, block,
                                     **{**self._tls_options(), **pool_kwargs})
            self.poolmanager.pool_classes_by_scheme = _watched_pool_classes()

        def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
            if proxy in self.proxy_manager:
                return self.proxy_manager[proxy]
            manager = super().proxy_manager_for(proxy, **{**self._tls_options(), **proxy_kwargs})
            if not proxy.lower().startswith("socks"):
                manager.pool_classes_by_scheme = _watched_pool_classes()
            return manager

        def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
            # An HTTPS client's context already holds the bundle (loaded once, not per post);
            # an HTTP client posting to https:// after all gets it the way requests gives it.
            if self._tls is None:
                super().cert_verify(conn, url, self._bundle,  # type: ignore[no-untyped-call]
                                    cert)

    return WatchedAdapter


# -- the whole attempt within its timeout ---------------------------------------------------------


class _Attempt:
    """One post under way: its deadline and the sockets it is using."""

    __slots__ = ("deadline", "done", "fired", "sockets", "timeout")

    def __init__(self, deadline: float, timeout: float) -> None:
        self.deadline = deadline
        self.timeout = timeout
        self.sockets: list[socket.socket] = []
        self.done = False
        self.fired = False

    def timed_out(self) -> NetworkError | None:
        """The error to raise when the watchdog cut this post off, else ``None``."""
        if not self.fired:
            return None
        return NetworkError("timeout", f"timed out: no complete answer within {self.timeout:g} s")


_TICK = 0.02
"""Seconds: how late past its deadline a post may be cut off, so that the watchdog wakes at most
50 times a second however many deadlines fall close together."""


class _Watchdog:
    """Shuts down the sockets of posts still under way at their deadline.

    One daemon thread for the process waits for the earliest deadline. A socket is cut off only
    while the post that last claimed it is under way, so a kept-alive connection that has passed
    on to the next post is left alone.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # a plain lock: a Condition's with-block costs Python calls
        self._wake = threading.Event()
        self._heap: list[tuple[float, int, _Attempt]] = []
        self._owner: dict[socket.socket, _Attempt] = {}
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._under_way = 0

    def start(self, timeout: float) -> _Attempt:
        attempt = _Attempt(time.monotonic() + timeout, timeout)
        with self._lock:
            self._under_way += 1
            heapq.heappush(self._heap, (attempt.deadline, next(self._order), attempt))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="armor-notify-deadlines",
                                                daemon=True)
                self._thread.start()
            earliest = self._heap[0][2] is attempt
        if earliest:  # the thread may be waiting for a later deadline: wake it
            self._wake.set()
        return attempt

    def claim(self, sock: socket.socket | None) -> None:
        """Put ``sock`` under the deadline of the calling thread's post (if it is posting)."""
        attempt: _Attempt | None = getattr(_current, "attempt", None)
        if attempt is None or sock is None:
            return
        with self._lock:
            if self._owner.get(sock) is not attempt:
                self._owner[sock] = attempt
                attempt.sockets.append(sock)

    def finish(self, attempt: _Attempt) -> None:
        with self._lock:
            attempt.done = True
            self._under_way -= 1
            for sock in attempt.sockets:
                if self._owner.get(sock) is attempt:
                    del self._owner[sock]
            attempt.sockets.clear()
            # Finished posts stay in the heap until their deadline; with long timeouts and many
            # posts a second, drop them now and then (amortised: the heap is mostly finished).
            if len(self._heap) > 4096 and len(self._heap) > 4 * self._under_way:
                self._heap = [entry for entry in self._heap if not entry[2].done]
                heapq.heapify(self._heap)

    def _run(self) -> None:
        while True:
            self._wake.clear()  # before looking: a deadline added after this wakes the wait
            with self._lock:
                now = time.monotonic()
                # Finished posts at the top go too, whatever their deadline: the next wait is
                # then for a post still under way (about one wake-up per timeout, not per post).
                while self._heap and (self._heap[0][2].done or self._heap[0][0] <= now):
                    attempt = heapq.heappop(self._heap)[2]
                    if attempt.done:
                        continue
                    attempt.fired = True
                    for sock in attempt.sockets:
                        if self._owner.get(sock) is attempt:
                            _cut(sock)
                wait = self._heap[0][0] - now if self._heap else None
            # At most one wake-up a tick, however many deadlines fall close together.
            self._wake.wait(None if wait is None else max(wait, _TICK))


def _cut(sock: socket.socket) -> None:
    # The plain socket's shutdown, also for an SSLSocket (whose own shutdown would drop its TLS
    # state under the thread reading it): the blocked read or write returns at once.
    with contextlib.suppress(OSError):  # already closed
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


_WATCHDOG = _Watchdog()


def _after_fork() -> None:
    global _WATCHDOG  # a forked child has no watchdog thread (and maybe a held lock): start anew
    _WATCHDOG = _Watchdog()


os.register_at_fork(after_in_child=_after_fork)
_current = threading.local()
"""``attempt``: the post the calling thread is making, so its connection can claim sockets."""


@contextlib.contextmanager
def deadline(timeout: float) -> Iterator[Deadline]:
    """Bound a whole conversation by ``timeout`` seconds, for protocols other than HTTP.

    Sockets put under it with :func:`watch` (and TLS sockets of a context passed through
    :func:`watch_tls`, from their handshake on) are shut down if the ``with`` block is still
    running when the time is up: the blocked read or write then fails at once, and
    ``Deadline.passed`` says why. The email destination bounds its SMTP session with it.
    """
    attempt = _WATCHDOG.start(timeout)
    previous = getattr(_current, "attempt", None)
    _current.attempt = attempt
    try:
        yield Deadline(attempt)
    finally:
        _current.attempt = previous
        _WATCHDOG.finish(attempt)


class Deadline:
    """The handle :func:`deadline` yields."""

    def __init__(self, attempt: _Attempt) -> None:
        self._attempt = attempt

    @property
    def passed(self) -> bool:
        """True once the time was up and the watched sockets were shut down."""
        return self._attempt.fired


def watch(sock: socket.socket) -> socket.socket:
    """Put ``sock`` under the calling thread's :func:`deadline` (no-op outside one)."""
    _WATCHDOG.claim(sock)
    return sock


def watch_tls(context: ssl.SSLContext) -> ssl.SSLContext:
    """Make ``context``'s TLS sockets put themselves under the calling thread's deadline when
    their handshake starts (no-op outside one); returns ``context``."""
    context.sslsocket_class = _watched_ssl_socket()
    return context


@functools.cache
def _watched_ssl_socket() -> type[ssl.SSLSocket]:
    """A TLS socket whose handshake is under the deadline of the post that opens it (made on
    first use: ``ssl`` is imported only by what posts)."""
    import ssl

    class WatchedSSLSocket(ssl.SSLSocket):
        def do_handshake(self, block: bool = False) -> None:
            _WATCHDOG.claim(self)
            super().do_handshake(block)

    return WatchedSSLSocket


def _watched_tls_context(bundle: str) -> ssl.SSLContext:
    import ssl

    from urllib3.util.ssl_ import create_urllib3_context

    context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
    try:
        if os.path.isdir(bundle):
            context.load_verify_locations(capath=bundle)
        else:
            context.load_verify_locations(cafile=bundle)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise NetworkError("certificate",
                           f"cannot load CA certificates from {bundle}: {_words(exc)}") from None
    context.sslsocket_class = _watched_ssl_socket()
    return context


@functools.cache
def _watched_pool_classes() -> dict[str, Any]:
    """urllib3's pool classes with connections that put their sockets under the deadline."""
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class WatchedHTTPConnection(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            sock = super()._new_conn()
            _WATCHDOG.claim(sock)
            return sock

        def request(self, *args: Any, **kwargs: Any) -> None:
            _WATCHDOG.claim(self.sock)  # a kept-alive connection: its socket is this post's now
            super().request(*args, **kwargs)

    class WatchedHTTPSConnection(WatchedHTTPConnection, HTTPSConnection):
        """The same, over TLS (the MRO puts HTTPSConnection's TLS setup under the watch)."""

    class WatchedHTTPConnectionPool(HTTPConnectionPool):
        ConnectionCls = WatchedHTTPConnection

    class WatchedHTTPSConnectionPool(HTTPSConnectionPool):
        ConnectionCls = WatchedHTTPSConnection

    return {"http": WatchedHTTPConnectionPool, "https": WatchedHTTPSConnectionPool}


# -- what a server echoes ------------------------------------------------------------------------

_TOKEN_LIKE = re.compile(r"^(?=.*\d)[^/]{8,}$|^[^/]{16,}$")


def _echoed_forms(secret: str) -> list[str]:
    """``secret`` as a server may quote it: as is, percent-encoded, inside a JSON string."""
    dumped = json.dumps(secret)[1:-1]
    forms = {secret, quote(secret, safe=""), quote(secret, safe="/:"), dumped,
             dumped.replace("/", "\\/"), json.dumps(secret, ensure_ascii=False)[1:-1]}
    return [form for form in forms if form]


class Redactor:
    """Masks a destination's secrets in whatever a server sent back.

    A server may echo a secret: a 403 body quoting the webhook URL, a PagerDuty answer repeating
    the integration key, an SMTP reply quoting the password. Every form of every secret is masked
    (as is, percent-encoded, JSON-escaped; case-insensitively); for a secret URL also its path
    and each part of it that looks like a token (8+ characters with a digit, or 16+), so that
    ``.../T0123/B0456/XXXX...`` quoted piece by piece is masked too. Use it on every reason,
    hint and detail built from an answer, before returning the outcome.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        masks: dict[str, str] = {}
        for secret in secrets:
            if not secret:
                continue
            parts: list[tuple[str, str]] = [
                (secret, mask_url(secret) if "://" in secret else mask_secret(secret))]
            if " " in secret.strip():  # "Bearer tok-…": the token may be quoted alone
                parts += [(piece, mask_secret(piece)) for piece in secret.split()
                          if _TOKEN_LIKE.match(piece)]
            if "://" in secret:
                url = urlsplit(secret)
                if len(url.path) > 1:
                    parts.append((url.path + (f"?{url.query}" if url.query else ""), "/…"))
                    parts.append((url.path, "/…"))
                for piece in [*url.path.split("/"), *re.split(r"[&=]", url.query)]:
                    if _TOKEN_LIKE.match(piece):
                        parts.append((piece, mask_secret(piece)))
            for text, mask in parts:
                for form in _echoed_forms(text):
                    masks.setdefault(form.lower(), mask)
        self._masks = masks
        self._pattern = (re.compile("|".join(re.escape(form) for form in
                                             sorted(masks, key=len, reverse=True)), re.IGNORECASE)
                         if masks else None)

    def text(self, text: str) -> str:
        """``text`` with every echoed secret masked."""
        if self._pattern is None or self._pattern.search(text) is None:  # nearly always
            return text
        return self._pattern.sub(lambda match: self._masks[match.group(0).lower()], text)

    def value(self, value: Any) -> Any:
        """Strings masked anywhere inside ``value`` (mappings, lists, tuples), keys included;
        ``value`` itself when nothing in it needed masking."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            masked = {self.value(key): self.value(item) for key, item in value.items()}
            same = all(a is b or a == b for a, b in zip(masked.items(), value.items(), strict=True))
            return value if same else masked
        if isinstance(value, (list, tuple)):
            items = [self.value(item) for item in value]
            return value if all(a is b for a, b in zip(items, value, strict=True)) else type(value)(items)
        return value

    def outcome(self, outcome: Outcome) -> Outcome:
        """``outcome`` with its reason, hint and details masked (itself when nothing was)."""
        if self._pattern is None:
            return outcome
        reason = self.text(outcome.reason)
        hint = None if outcome.hint is None else self.text(outcome.hint)
        details = self.value(outcome.details)
        if reason == outcome.reason and hint == outcome.hint and details is outcome.details:
            return outcome
        return dataclasses.replace(outcome, reason=reason, hint=hint, details=details)


def proxy_for(url: str) -> str | None:
    """The proxy the environment names for ``url`` (``NO_PROXY`` honoured), as requests reads it."""
    import urllib.request  # with http.client and email: only for a client that is being made

    parts = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    host = parts.hostname or ""
    # proxy_bypass_environment reads NO_PROXY as requests does (typeshed omits it).
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    if not host or bypass(f"{host}:{parts.port}" if parts.port else host, proxies):
        return None
    proxy = proxies.get(parts.scheme.lower()) or proxies.get("all")
    if proxy and "://" not in proxy:
        proxy = f"http://{proxy}"
    return proxy or None


def ca_bundle() -> str:
    """``$REQUESTS_CA_BUNDLE``, else ``$CURL_CA_BUNDLE``, else certifi's bundle (as requests)."""
    named = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if named:
        return named
    import certifi

    return str(certifi.where())


_CONNECTION_PREFIX = re.compile(r"^(?:<[^<>]*>|\w*HTTPS?Connection(?:Pool)?\([^()]*\)): ")


def _words(exc: BaseException) -> str:
    """The innermost cause's words, without urllib3's connection prefix or object reprs."""
    seen: set[int] = set()
    cause = exc
    while id(cause) not in seen:
        seen.add(id(cause))
        inner = getattr(cause, "reason", None)
        if not isinstance(inner, BaseException) and cause.args and isinstance(
                cause.args[0], BaseException):
            inner = cause.args[0]
        original = getattr(cause, "original_error", None)  # urllib3's ProxyError(words, error)
        if isinstance(original, BaseException) and cause.args and isinstance(cause.args[0], str):
            return f"{cause.args[0]}: {_words(original)}"
        if not isinstance(inner, BaseException):
            break
        cause = inner
    return _CONNECTION_PREFIX.sub("", str(cause)) or type(cause).__name__


_QUOTED_URL = re.compile(r" '[^'/]*/[^']*'| Perhaps you meant .*$")  # a URL, not a host


def _classify(exc: Exception) -> NetworkError:
    """The network error for what requests raised (it wraps urllib3's errors, which say what
    went wrong), an OSError, or another failure to make the request."""
    import requests
    from urllib3 import exceptions as e

    # requests' ConnectionError(MaxRetryError(reason=NewConnectionError(...))): the innermost
    # urllib3 error, as urllib3 raises it when told not to retry.
    inner: BaseException = exc
    while isinstance(inner, requests.RequestException) and inner.args and isinstance(
            inner.args[0], BaseException):
        inner = inner.args[0]
    if isinstance(inner, e.MaxRetryError) and inner.reason is not None:
        inner = inner.reason
    words = _words(inner)
    if isinstance(inner, e.SSLError):
        verify = "CERTIFICATE_VERIFY_FAILED" in words or "certificate verify failed" in words
        return NetworkError("certificate" if verify else "tls", words)
    if isinstance(inner, (e.NewConnectionError, e.ProxyError, e.ProtocolError)):
        return NetworkError("connect", words)
    if isinstance(inner, e.TimeoutError):  # after NewConnectionError, which subclasses it
        return NetworkError("timeout", words)
    if isinstance(inner, (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                          requests.exceptions.MissingSchema)):  # words without the URL's path
        scheme = re.search(r"adapters were found for '([^':/]*)://", words)
        return NetworkError("other", f"Not supported URL scheme {scheme.group(1)}" if scheme
                            else _QUOTED_URL.sub("", words))
    if isinstance(inner, OSError) and not isinstance(inner, (e.HTTPError, requests.RequestException)):
        return NetworkError("connect", words)
    return NetworkError("other", words)
