"""HTTP for destination plugins: post bytes, get the answer or one plain-worded network error.

:class:`HttpClient` is what the PagerDuty and Slack senders (and the example webhook plugin) post
with. It is built on urllib3's connection pools: one client serves every I/O thread and keeps its
connections alive between posts. Proxy and CA settings are read from the environment once, when
the client is made, with the variables ``requests`` reads (``HTTPS_PROXY``/``HTTP_PROXY``/
``ALL_PROXY``, ``NO_PROXY``, ``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``), so moving between the
two changes nothing for a user; certificates are checked against certifi's bundle otherwise, as
with ``requests``. ``requests`` itself does per post what only needs doing once (merging
settings, scanning the environment), which made it cost about twice what the post does.

Nothing is retried or redirected here: the dispatcher owns retries, and a redirect from an alert
endpoint is a misconfiguration the plugin reports.
"""

from __future__ import annotations

import json
import os
import re
import threading
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    import urllib3

from .outcome import Outcome

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
        self._lock = threading.Lock()
        self._pool: urllib3.PoolManager | None = None

    def post(self, url: str, body: bytes, *, timeout: float,
             headers: Mapping[str, str] | None = None) -> Answer:
        """POST ``body`` and read the whole answer, waiting at most ``timeout`` seconds to
        connect and for each read; raises :class:`NetworkError` when no answer comes."""
        import urllib3

        pool = self._pool or self._make_pool()
        try:
            response = pool.request(
                "POST", url, body=body, headers={**self.headers, **(headers or {})},
                timeout=timeout, retries=False, redirect=False,
            )
        except urllib3.exceptions.HTTPError as exc:
            raise _classify(exc) from None
        except OSError as exc:
            raise NetworkError("connect", _words(exc)) from None
        return Answer(response.status, response.reason or "", response.headers, response.data)

    def close(self) -> None:
        """Close the kept-alive connections (a later post opens new ones)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.clear()

    def _make_pool(self) -> urllib3.PoolManager:
        import urllib3

        with self._lock:
            if self._pool is None:
                bundle = self.ca_bundle
                tls: dict[str, Any] = ({"ca_cert_dir": bundle} if os.path.isdir(bundle)
                                       else {"ca_certs": bundle})
                options: dict[str, Any] = {"maxsize": self._max_connections, "block": False,
                                           "cert_reqs": "CERT_REQUIRED", **tls}
                if self.proxy is None:
                    self._pool = urllib3.PoolManager(**options)
                else:
                    proxy = urlsplit(self.proxy)
                    auth = (f"{unquote(proxy.username)}:{unquote(proxy.password or '')}"
                            if proxy.username else None)
                    self._pool = urllib3.ProxyManager(
                        self.proxy, proxy_headers=urllib3.make_headers(proxy_basic_auth=auth)
                        if auth else None, **options)
            return self._pool


def proxy_for(url: str) -> str | None:
    """The proxy the environment names for ``url`` (``NO_PROXY`` honoured), as requests reads it."""
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


_CONNECTION_PREFIX = re.compile(r"^(?:<[^<>]*>|HTTPS?Connection(?:Pool)?\([^()]*\)): ")


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
        if not isinstance(inner, BaseException):
            break
        cause = inner
    return _CONNECTION_PREFIX.sub("", str(cause)) or type(cause).__name__


def _classify(exc: Exception) -> NetworkError:
    from urllib3 import exceptions as e

    words = _words(exc)
    if isinstance(exc, e.SSLError):
        verify = "CERTIFICATE_VERIFY_FAILED" in words or "certificate verify failed" in words
        return NetworkError("certificate" if verify else "tls", words)
    if isinstance(exc, (e.NewConnectionError, e.ProxyError, e.ProtocolError)):
        return NetworkError("connect", words)
    if isinstance(exc, e.TimeoutError):  # after NewConnectionError, which subclasses it
        return NetworkError("timeout", words)
    return NetworkError("other", words)
