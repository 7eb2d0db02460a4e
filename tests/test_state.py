"""Where the outbox lives (``--state``, ``--state-dir``, the environment, ``state:`` in the
config), how long finished deliveries are kept, and a worker that outlives its outbox's
failures (issue 15). Backend-neutral: the PostgreSQL side is in ``test_outbox_postgres.py``."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from armor_notify.api import Notifier, open_outbox, state_location
from armor_notify.cli import cli
from armor_notify.config import DEFAULT_RETENTION, StateSettings, read_state_settings
from armor_notify.delivery import State
from armor_notify.errors import ConfigError
from armor_notify.outbox import OutboxError, SqliteOutbox
from armor_notify.testing import Capture, make_alert

URL = "postgresql://armor:s3cret-pw@db.internal:5432/alerts"


@pytest.fixture(autouse=True)
def _no_state_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ARMOR_NOTIFY_STATE", "ARMOR_NOTIFY_STATE_DIR", "ARMOR_NOTIFY_CONFIG"):
        monkeypatch.delenv(name, raising=False)


# -- which outbox ---------------------------------------------------------------------------------


def test_flags_then_environment_then_config(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = StateSettings.model_validate({"url": URL})
    assert state_location() is None  # the default directory
    assert state_location(settings=settings) == URL
    monkeypatch.setenv("ARMOR_NOTIFY_STATE_DIR", "/var/lib/env-dir")
    assert state_location(settings=settings) == "/var/lib/env-dir"
    monkeypatch.setenv("ARMOR_NOTIFY_STATE", "postgres://env@host/db")
    assert state_location(settings=settings) == "postgres://env@host/db"
    assert state_location(state_dir="/flag-dir", settings=settings) == "/flag-dir"
    assert state_location(state="postgresql://flag@h/d", settings=settings) == \
        "postgresql://flag@h/d"


def test_both_flags_or_a_state_that_is_not_a_url_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="--state or --state-dir, not both"):
        state_location(state=URL, state_dir="/d")
    with pytest.raises(ConfigError, match="must be a postgresql:// URL"):
        state_location(state="/var/lib/armor")
    monkeypatch.setenv("ARMOR_NOTIFY_STATE", "sqlite:///x")
    with pytest.raises(ConfigError, match=r"\$ARMOR_NOTIFY_STATE: must be a postgresql://"):
        state_location()


def test_a_directory_opens_the_sqlite_outbox_there(tmp_path: Path) -> None:
    assert open_outbox(tmp_path, create=False) is None  # nothing there yet, nothing made
    with open_outbox(tmp_path) as box:
        assert isinstance(box, SqliteOutbox) and box.schema_version >= 1
    assert (tmp_path / "outbox.sqlite3").exists()


# -- state: in the config -------------------------------------------------------------------------


def test_state_section_interpolates_the_password_and_masks_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("version: 1\nstate:\n  url: postgresql://armor:${PGPASS}@db/alerts\n"
                      "  retention: 14d\ndestinations: {}\n")
    monkeypatch.setenv("PGPASS", "s3cret-pw")
    settings = read_state_settings(config)
    assert settings.url is not None
    assert settings.url.get_secret_value() == "postgresql://armor:s3cret-pw@db/alerts"
    assert "s3cret-pw" not in repr(settings) and "s3cret-pw" not in str(settings.url)
    assert settings.retention == 14 * 86400


def test_state_section_problems_name_the_line(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("version: 1\nstate:\n  url: mysql://u:pw@db/x\n  retain: 3d\n"
                      "destinations: {}\n")
    with pytest.raises(ConfigError) as caught:
        read_state_settings(config)
    text = "\n".join(str(p) for p in caught.value.problems)
    assert "c.yaml:3: state.url: " in text and "must be a postgresql:// URL" in text
    assert "c.yaml:4: state.retain: unknown key 'retain'; valid keys: url, retention" in text
    assert "pw" not in text.replace("postgresql", "")


def test_no_config_file_means_the_defaults_unless_one_was_asked_for(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert read_state_settings(None) == StateSettings()
    assert StateSettings().retention == DEFAULT_RETENTION == 30 * 86400
    with pytest.raises(ConfigError, match="config file not found"):
        read_state_settings(tmp_path / "missing.yaml")


def test_retention_must_outlast_what_noise_control_looks_back_on() -> None:
    base: dict[str, Any] = {
        "version": 1, "destinations": {"cap": {"type": "capture"}},
        "rules": [{"name": "slow", "event": "schema_change", "destinations": ["cap"],
                   "cooldown": "3d"}]}
    capture = Capture()
    with pytest.raises(ConfigError) as caught:
        Notifier.from_dict({**base, "state": {"retention": "2d"}},
                           plugins=_plugins(capture))
    assert "state.retention: 2d is shorter than the cooldown of rule 'slow' (3d)" in str(
        caught.value.problems[0])
    with pytest.raises(ConfigError, match="shorter than a day"):
        Notifier.from_dict({**base, "rules": [], "state": {"retention": "1h"}},
                           plugins=_plugins(capture))
    Notifier.from_dict({**base, "state": {"retention": "3d"}}, plugins=_plugins(capture)).close()


def _plugins(capture: Capture) -> Any:
    from armor_notify.testing import plugin_manager

    return plugin_manager(capture.destination_type)


# -- retention, by the worker ---------------------------------------------------------------------


def test_drain_removes_finished_deliveries_past_their_retention() -> None:
    capture = Capture()
    notifier = Notifier.from_dict(
        {"version": 1, "destinations": {"cap": {"type": "capture"}},
         "rules": [{"name": "all", "event": "schema_change", "destinations": ["cap"]}]},
        plugins=_plugins(capture))
    with notifier:
        old, recent = make_alert(), make_alert()
        notifier.dispatcher.clock = lambda: 1_000_000.0
        assert notifier.send(old).deliveries[0].state is State.delivered
        notifier.dispatcher.clock = lambda: 1_000_000.0 + 10 * 86400
        assert notifier.send(recent).deliveries[0].state is State.delivered
        queued = notifier.enqueue([make_alert()])  # not finished: never removed
        notifier.dispatcher.clock = lambda: 1_000_000.0 + 12 * 86400
        notifier.drain(retention=5 * 86400, ids=[])
        left = {d.alert.id for d in notifier.inspect()}
    assert old.id not in left and recent.id in left and queued[0].alert.id in left


# -- a worker that outlives its outbox's failures -------------------------------------------------


class Flaky:
    """An outbox whose claims fail ``failures`` times (a database that went away), then work."""

    def __init__(self, box: SqliteOutbox, failures: int) -> None:
        self.box = box
        self.failures = failures

    def claim(self, *args: Any, **kwargs: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise OutboxError("postgresql://db.internal/…: the database went away (server "
                              "closed the connection unexpectedly)")
        return self.box.claim(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.box, name)


def test_a_worker_reports_outbox_failures_and_resumes(mocker: Any) -> None:
    sleeps = mocker.patch("armor_notify.api.time.sleep")
    capture = Capture()
    box = SqliteOutbox.memory()
    notifier = Notifier.from_dict(
        {"version": 1, "destinations": {"cap": {"type": "capture"}},
         "rules": [{"name": "all", "event": "schema_change", "destinations": ["cap"]}]},
        plugins=_plugins(capture), outbox=Flaky(box, failures=3))  # type: ignore[arg-type]
    reported: list[tuple[str, float]] = []
    with notifier:
        accepted = notifier.enqueue([make_alert(), make_alert()])
        notifier.drain(on_outbox_error=lambda exc, wait: reported.append((str(exc), wait)))
        states = [d.state for d in notifier.inspect()]
    assert [wait for _, wait in reported] == [1.0, 2.0, 4.0]
    assert all("the database went away" in text for text, _ in reported)
    assert [call.args[0] for call in sleeps.call_args_list] == [1.0, 2.0, 4.0]
    assert len(accepted) == 2 and states == [State.delivered, State.delivered]
    assert len(capture.notifications) == 2


def test_without_a_handler_the_outbox_error_is_raised() -> None:
    capture = Capture()
    notifier = Notifier.from_dict(
        {"version": 1, "destinations": {"cap": {"type": "capture"}},
         "rules": [{"name": "all", "event": "schema_change", "destinations": ["cap"]}]},
        plugins=_plugins(capture), outbox=Flaky(SqliteOutbox.memory(), failures=1))  # type: ignore[arg-type]
    with notifier:
        notifier.enqueue([make_alert()])
        with pytest.raises(OutboxError, match="went away"):
            notifier.drain()


# -- the command line -----------------------------------------------------------------------------


@pytest.fixture
def runner() -> Iterator[CliRunner]:
    yield CliRunner()


def test_db_upgrade_creates_the_sqlite_outbox(runner: CliRunner, tmp_path: Path) -> None:
    from armor_notify.outbox import SCHEMA_VERSION

    result = runner.invoke(cli, ["db", "upgrade", "--state-dir", str(tmp_path / "s"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data == {"outbox": str(tmp_path / "s" / "outbox.sqlite3"),
                    "schema_version": SCHEMA_VERSION}
    result = runner.invoke(cli, ["db", "upgrade", "--state-dir", str(tmp_path / "s")])
    assert result.output.strip().endswith(f"schema version {SCHEMA_VERSION}, up to date")


def test_outbox_list_state_still_filters_and_says_what_it_accepts(
        runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["outbox", "list", "--state", "failed", "--state-dir",
                                 str(tmp_path)])
    assert result.exit_code == 0 and "no deliveries in those states" in result.output
    result = runner.invoke(cli, ["outbox", "list", "--state", "broken", "--state-dir",
                                 str(tmp_path)])
    assert result.exit_code == 2
    assert "'broken' is not a delivery state (queued," in result.output
    assert "nor a postgresql:// URL" in result.output


def test_the_outbox_commands_read_the_state_section_of_the_config(
        runner: CliRunner, tmp_path: Path) -> None:
    config = tmp_path / "armor-notify.yaml"
    config.write_text("version: 1\nstate: {url: 'mysql://root:hunter22@db/x'}\n"
                      "destinations: {}\n")
    for args in (["outbox", "list"], ["outbox", "show", "abcdef"], ["outbox", "retry"],
                 ["outbox", "purge"], ["db", "upgrade"]):
        result = runner.invoke(cli, [*args, "--config", str(config)])
        assert result.exit_code == 2, (args, result.output)
        assert "state.url: must be a postgresql:// URL" in result.output
        assert "hunter22" not in result.output


def test_send_refuses_a_state_flag_that_is_a_directory(runner: CliRunner, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("version: 1\ndestinations: {}\n")
    alert = tmp_path / "a.json"
    alert.write_text(json.dumps(make_alert().model_dump(mode="json")))
    result = runner.invoke(cli, ["send", str(alert), "-c", str(config), "--state",
                                 str(tmp_path)])
    assert result.exit_code == 2
    assert "--state: must be a postgresql:// URL (a SQLite state directory is given with " \
           "--state-dir" in result.output



# -- wake-ups -------------------------------------------------------------------------------------


class Telling:
    """A file outbox whose store can tell a worker that another process queued work (as
    PostgreSQL's NOTIFY does): the test calls the worker's ``wake`` by hand."""

    def __init__(self, box: SqliteOutbox) -> None:
        self.box = box
        self.wakes: list[Any] = []
        self.stopped = 0

    def listen(self, wake: Any) -> Any:
        self.wakes.append(wake)

        def stop() -> None:
            self.stopped += 1

        return stop

    def __getattr__(self, name: str) -> Any:
        return getattr(self.box, name)


def test_a_worker_starts_new_work_when_woken_not_at_its_next_poll(tmp_path: Path) -> None:
    import time

    capture = Capture()
    config = {"version": 1, "destinations": {"cap": {"type": "capture"}},
              "rules": [{"name": "all", "event": "schema_change", "destinations": ["cap"]}]}
    telling = Telling(SqliteOutbox.open(tmp_path))
    worker = Notifier.from_dict(config, plugins=_plugins(capture), outbox=telling)  # type: ignore[arg-type]
    producer = Notifier.from_dict(config, plugins=_plugins(capture),
                                  outbox=SqliteOutbox.open(tmp_path))
    done: list[float] = []
    with worker, producer:
        thread = threading.Thread(target=worker.drain, kwargs={
            "stop_when_idle": False, "poll": 60.0, "wait": 2.5,
            "on_final": lambda d: done.append(time.monotonic())})
        thread.start()
        deadline = time.monotonic() + 5
        while not telling.wakes and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(telling.wakes) == 1  # the long pass listens once
        time.sleep(0.2)  # the worker is idle now, its next poll a minute away
        producer.enqueue([make_alert()])  # another process's intake
        woken = time.monotonic()
        telling.wakes[0]()
        while not done and time.monotonic() < deadline + 3:
            time.sleep(0.01)
        thread.join(timeout=15)
    assert done and done[0] - woken < 2.0  # not the 60 s poll
    assert telling.stopped == 1  # and it stopped listening when the pass ended
    assert len(capture.notifications) == 1


def test_worker_threads_sets_how_many_deliveries_run_at_once(
        runner: CliRunner, tmp_path: Path, mocker: Any) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("version: 1\ndestinations: {}\n")
    made = mocker.spy(Notifier, "__init__")
    result = runner.invoke(cli, ["worker", "--once", "--threads", "3", "-c", str(config),
                                 "--state-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert made.call_args.kwargs["max_workers"] == 3
    refused = runner.invoke(cli, ["worker", "--once", "--threads", "0", "-c", str(config)])
    assert refused.exit_code == 2 and "--threads" in refused.output
