"""A real PostgreSQL server for the tests, and a fresh database on it for each test.

Where the server comes from, in order:

1. ``$ARMOR_NOTIFY_TEST_POSTGRES``: a URL to a server you run (its user needs ``CREATEDB``;
   each test gets its own database there, dropped afterwards).
2. Debian's PostgreSQL binaries (``/usr/lib/postgresql/*/bin/initdb``, the ``postgresql``
   package): a private server is made in a temporary directory and started on a free loopback
   port, once per test session, and stopped (its directory removed) when the session ends.
   PostgreSQL refuses to run as root, so under root it runs as the ``postgres`` user
   (``runuser``). It checks passwords on TCP (scram), so the wrong-password test is real.
3. Neither: the PostgreSQL tests are skipped with the reason, or fail under ``CI=true`` (CI
   must never pass by skipping them).

Nothing here imports psycopg at module level: the SQLite half of the suite runs without it.
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

if TYPE_CHECKING:
    import psycopg

URL_ENV = "ARMOR_NOTIFY_TEST_POSTGRES"
PREFIX = "armor_notify_test"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def unavailable(reason: str) -> NoReturn:
    """No server can be had: skip (visibly) on a developer's machine, fail under ``CI=true``."""
    if in_ci():
        pytest.fail(f"PostgreSQL tests cannot run under CI=true: {reason}", pytrace=False)
    pytest.skip(f"no PostgreSQL server: {reason}")


@dataclass
class Server:
    """A server the tests may create databases on."""

    url: str
    """An administrator's URL (its database is where ``CREATE DATABASE`` is run)."""
    directory: str | None = None
    """The private server's data directory (``None``: not ours to stop)."""
    run_as: tuple[str, ...] = ()
    start_args: tuple[str, ...] = ()
    """``pg_ctl`` arguments that start it again (a private server only)."""

    def restart(self, down_for: float) -> None:
        """Stop the private server (every connection breaks), wait, start it again: the
        database going away under a running worker. Only for a server these tests started."""
        global _admin_connection
        if self.directory is None:
            pytest.skip("the server is not ours to stop (ARMOR_NOTIFY_TEST_POSTGRES)")
        subprocess.run([*self.run_as, _binary("pg_ctl"), "-D", self.directory, "-m", "fast",
                        "-w", "stop"], capture_output=True, check=True, timeout=60)
        time.sleep(down_for)
        subprocess.run([*self.run_as, _binary("pg_ctl"), *self.start_args], capture_output=True,
                       check=True, timeout=120)
        if _admin_connection is not None:
            _admin_connection.close()
            _admin_connection = None

    def with_database(self, name: str) -> str:
        parts = urlsplit(self.url)
        return urlunsplit(parts._replace(path="/" + quote(name)))

    def stop(self) -> None:
        if _admin_connection is not None:
            _admin_connection.close()
        if self.directory is None:
            return
        subprocess.run([*self.run_as, _binary("pg_ctl"), "-D", self.directory, "-m", "immediate",
                        "-w", "stop"], capture_output=True, check=False, timeout=60)
        shutil.rmtree(os.path.dirname(self.directory), ignore_errors=True)
        self.directory = None


_server: Server | None = None
_failure: str | None = None
_names = itertools.count()


def server() -> Server:
    """The session's server, started on first use; skips or fails (see module doc) without one."""
    global _server, _failure
    if _server is None and _failure is None:
        try:
            _server = _find_or_start()
            atexit.register(_server.stop)
            _admin()  # reachable, and a connection ready for the tests' databases
        except _Unavailable as exc:
            _failure = str(exc)
    if _server is None or _failure is not None:
        unavailable(_failure or "unknown")
    return _server


@dataclass
class Database:
    """A database made for one test."""

    url: str
    name: str

    def drop(self) -> None:
        from psycopg import sql

        _admin().execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(self.name)))


def fresh_database() -> Database:
    """A new, empty database on the session's server (skips or fails without a server)."""
    found = server()
    from psycopg import sql

    name = f"{PREFIX}_{os.getpid()}_{next(_names)}"
    _admin().execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return Database(found.with_database(name), name)


_admin_connection: psycopg.Connection[tuple[object, ...]] | None = None


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    """One administrator's connection for the session (creating and dropping databases)."""
    global _admin_connection
    if _admin_connection is None or _admin_connection.closed:
        assert _server is not None
        try:
            import psycopg
        except ImportError:
            raise _Unavailable("psycopg is not installed (pip install -e '.[test]')") from None
        try:
            _admin_connection = psycopg.connect(_server.url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            from armor_notify.outbox_postgres import shown_url

            detail = " ".join(str(exc).split())
            secret = urlsplit(_server.url).password
            if secret:
                detail = detail.replace(secret, "…")
            raise _Unavailable(f"cannot connect to {shown_url(_server.url)}: {detail}") from None
    return _admin_connection


class _Unavailable(Exception):
    pass


def _binaries() -> str | None:
    def version(initdb: str) -> int:  # /usr/lib/postgresql/15/bin/initdb → 15
        name = Path(initdb).parent.parent.name
        return int(name) if name.isdigit() else 0

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)  # newest last
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


def _binary(name: str) -> str:
    where = _binaries()
    assert where is not None
    return os.path.join(where, name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _find_or_start() -> Server:
    if os.environ.get(URL_ENV):
        return Server(os.environ[URL_ENV])
    if _binaries() is None:
        raise _Unavailable(f"set ${URL_ENV} to a server's URL, or install Debian's postgresql "
                           "package (apt-get install postgresql) so the tests start their own")
    run_as: tuple[str, ...] = ()
    base = tempfile.mkdtemp(prefix="armor-notify-pg-")
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        run_as = ("runuser", "-u", "postgres", "--")
        shutil.chown(base, "postgres", "postgres")
    data = os.path.join(base, "data")
    password = secrets.token_hex(12)
    pwfile = os.path.join(base, "pw")
    with open(pwfile, "w") as f:
        f.write(password + "\n")
    if run_as:
        shutil.chown(pwfile, "postgres", "postgres")
    made = subprocess.run(
        [*run_as, _binary("initdb"), "-D", data, "-U", "postgres", "--pwfile", pwfile,
         "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"],
        capture_output=True, text=True, check=False, timeout=120)
    if made.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        raise _Unavailable(f"initdb failed: {(made.stderr or made.stdout).strip()[-800:]}")
    for _ in range(3):  # a free port may be taken by someone else before the server binds it
        port = _free_port()
        args = ("-D", data, "-l", os.path.join(base, "log"), "-w", "-t", "60", "-o",
                f"-c listen_addresses=127.0.0.1 -p {port} -k {base}", "start")
        started = subprocess.run([*run_as, _binary("pg_ctl"), *args],
                                 capture_output=True, text=True, check=False, timeout=120)
        if started.returncode == 0:
            url = f"postgresql://postgres:{password}@127.0.0.1:{port}/postgres"
            return Server(url, directory=data, run_as=run_as, start_args=args)
    with open(os.path.join(base, "log"), errors="replace") as f:
        log = f.read()[-800:]
    shutil.rmtree(base, ignore_errors=True)
    raise _Unavailable(f"the private server did not start: {log.strip()}")
