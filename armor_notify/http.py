"""HTTP helpers for destination plugins."""

from __future__ import annotations

from collections.abc import Mapping

import requests


def new_session(url: str, headers: Mapping[str, str] | None = None) -> requests.Session:
    """A ``requests.Session`` for posting to ``url``, with the environment read once.

    requests consults the environment (``HTTPS_PROXY``/``NO_PROXY``, ``REQUESTS_CA_BUNDLE``,
    ``CURL_CA_BUNDLE``) again on every request, scanning all of ``os.environ`` twice — about a
    third of a loopback post. This resolves those settings for ``url`` when the session is made
    and then stops looking, so each request costs only the request. Make one per thread (a
    session is not thread-safe) and reuse it: its connection stays open between posts.
    """
    session = requests.Session()
    settings = session.merge_environment_settings(url, {}, None, None, None)
    session.trust_env = False
    session.proxies.update(settings.get("proxies") or {})
    verify = settings.get("verify")
    if isinstance(verify, str):  # a CA bundle named by REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE
        session.verify = verify
    if headers:
        session.headers.update(headers)
    return session
