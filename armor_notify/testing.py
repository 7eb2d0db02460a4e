"""The test kit for plugin authors: pytest fixtures and a conformance suite for destinations.

The fixtures come with armor-notify's pytest plugin (:mod:`armor_notify.pytest_plugin`, the
``pytest11`` entry point), so in any test environment where armor-notify is installed they need
no import::

    def test_my_plugin_registers_its_type(notifier_factory, make_alert):
        notifier = notifier_factory(CONFIG, armor_notify_teams)
        ...

and a destination plugin proves that it keeps the contract by subclassing
:class:`DestinationConformance` (see its docstring, and ``docs/plugins.md``)::

    from armor_notify.testing import DestinationConformance

    class TestTeamsConformance(DestinationConformance):
        ...

Fixtures: ``make_alert`` (a valid alert with overrides), ``notifier_factory`` (a
:class:`~armor_notify.api.Notifier` from a config dict or YAML text with plugins registered
inline), ``send_alert`` (route one alert to one destination and return the report) and
``captured_notifications`` (a ``capture`` destination type that records every notification).
The same helpers are plain functions here, for use outside pytest. Neither ``import
armor_notify`` nor the pytest plugin imports this module: a test that uses the kit does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import threading
import time
import types
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import pytest

# The notifier, the dispatcher and the config layer are imported when a helper or test first runs.
from .alert import BUILTIN_EVENT_TYPES, Alert
from .destinations import DestinationConfig, DestinationType, Notification, Sender
from .errors import AlertError, ConfigError
from .outcome import Outcome
from .plugins import PluginManager, hookimpl
from .sources import Source, SourceAlert, SourceInput

if TYPE_CHECKING:
    from .api import Notifier, SendReport
    from .delivery import Delivery

__all__ = [
    "DELIVERED",
    "DESTINATION",
    "HANG",
    "PERMANENT",
    "RETRYABLE",
    "Capture",
    "DestinationConformance",
    "Reply",
    "SourceConformance",
    "build_notifier",
    "inline_plugin",
    "make_alert",
    "make_notification",
    "plugin_manager",
    "send_alert",
    "single_destination_config",
]

DESTINATION = "dest-under-test"
"""The name the helpers give the one destination they configure."""
RULE = "Conformance"
"""The name of the one rule the helpers configure."""

_ids = itertools.count(1)


# -- alerts and notifications --------------------------------------------------------------------


def make_alert(*, event_types: Iterable[str] | None = None, **fields: Any) -> Alert:
    """A valid alert: a critical, breaking schema change on ``analytics.public.orders``.

    ``fields`` replace the alert's fields; ``asset`` is merged key by key, so
    ``make_alert(asset={"environment": "dev"})`` keeps the rest of the asset. Every call gets a
    new ``id`` unless one is given. Pass ``event_types`` (e.g. ``notifier.plugins.registry.
    event_types``) to use an event type that a plugin registers.
    """
    n = next(_ids)
    data: dict[str, Any] = {
        "id": f"alert_kit_{n}",
        "event_type": "schema_change",
        "status": "triggered",
        "severity": "critical",
        "title": "2 columns removed from orders",
        "description": "Columns were dropped by migration 0042.",
        "asset": {
            "id": "ast_orders_01",
            "name": "analytics.public.orders",
            "data_source": "warehouse-prod",
            "environment": "production",
            "tags": ["gold"],
        },
        "changes": [
            {"type": "column_removed", "column": "email", "from": "varchar"},
            {"type": "column_added", "column": "contact_id", "to": "bigint"},
        ],
        "link": "https://app.anomalyarmor.ai/alerts/alert_kit",
    }
    asset = fields.pop("asset", None)
    if isinstance(asset, Mapping):
        data["asset"] = {**data["asset"], **asset}
    elif asset is not None:
        data["asset"] = asset
    if fields.get("event_type", "schema_change") != "schema_change" and "changes" not in fields:
        data.pop("changes")
    data.update(fields)
    known = list(event_types) if event_types is not None else list(BUILTIN_EVENT_TYPES)
    return Alert.model_validate(data, context={"event_types": known})


def make_notification(alert: Alert | None = None, **fields: Any) -> Notification:
    """A :class:`Notification` for calling a sender directly, as one attempt would.

    ``fields`` override ``destination``, ``rule``, ``dedup_key``, ``source``, ``link_text``,
    ``timeout``, ``attempt`` and ``test``.
    """
    alert = alert if alert is not None else make_alert()
    values: dict[str, Any] = {
        "destination": DESTINATION,
        "rule": RULE,
        "dedup_key": f"anomalyarmor-conformance-{alert.event_type}-{alert.asset.id}",
        "source": "anomalyarmor",
        "link_text": "View in AnomalyArmor",
        "timeout": 10.0,
    }
    values.update(fields)
    return Notification(alert=alert, **values)


# -- plugins and notifiers -----------------------------------------------------------------------


def inline_plugin(*items: DestinationType | Source, event_types: Sequence[str] = ()) -> object:
    """A plugin object that registers these destination types, sources and event types, for
    tests."""
    namespace = types.SimpleNamespace()
    destination_types = [i for i in items if isinstance(i, DestinationType)]
    sources = [i for i in items if not isinstance(i, DestinationType)]
    if destination_types:
        def register_destination_types(register: Any) -> None:
            for dtype in destination_types:
                register(dtype)

        namespace.register_destination_types = hookimpl(register_destination_types)
    if sources:
        def register_sources(register: Any) -> None:
            for source in sources:
                register(source)

        namespace.register_sources = hookimpl(register_sources)
    if event_types:
        def register_event_types(register: Any) -> None:
            for name in event_types:
                register(name)

        namespace.register_event_types = hookimpl(register_event_types)
    return namespace


def _plugin_name(plugin: object, index: int) -> str:
    if isinstance(plugin, (DestinationType, Source)):
        return f"inline-{plugin.name}"
    name = getattr(plugin, "__name__", None)
    return name if isinstance(name, str) else f"inline-{index}"


def plugin_manager(*plugins: object, installed: bool = False) -> PluginManager:
    """A new, loaded plugin manager holding ``plugins``: plugin modules, objects with
    ``@hookimpl`` functions, or bare :class:`DestinationType` and :class:`Source` objects.

    By default no installed plugin loads (not even the built-ins), so a plugin under test that is
    also installed is not registered twice; ``installed=True`` loads every installed plugin
    first, as the ``armor-notify`` command does.
    """
    extra = [
        (_plugin_name(p, i),
         inline_plugin(p) if isinstance(p, (DestinationType, Source)) else p)
        for i, p in enumerate(plugins)
    ]
    return PluginManager().load(entry_points=None if installed else [], extra=extra)


def build_notifier(
    config: Mapping[str, Any] | str,
    *plugins: object,
    installed: bool = False,
    environ: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> Notifier:
    """A :class:`Notifier` for ``config`` (a mapping, or YAML text) with ``plugins`` registered.

    ``environ`` supplies ``${VAR}`` values for YAML text (default: the process environment);
    ``kwargs`` go to :class:`Notifier` (``max_workers``, ``rng``). Close it when done.
    """
    from .api import Notifier

    pm = plugin_manager(*plugins, installed=installed)
    if isinstance(config, str):
        return Notifier.from_yaml(config, plugins=pm, environ=environ, **kwargs)
    return Notifier.from_dict(config, plugins=pm, **kwargs)


def single_destination_config(
    destination_type: str,
    destination: Mapping[str, Any],
    *,
    event: str | Sequence[str] = "schema_change",
    name: str = DESTINATION,
    extra: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """A config with one destination (``name``, of ``destination_type``), the ``extra``
    destinations, and one rule sending ``event`` alerts to all of them."""
    destinations: dict[str, Any] = {name: {"type": destination_type, **destination}}
    destinations.update({k: dict(v) for k, v in (extra or {}).items()})
    return {
        "version": 1,
        "destinations": destinations,
        "rules": [{"name": RULE, "event": event, "destinations": list(destinations)}],
    }


def send_alert(
    destination_type: DestinationType,
    destination: Mapping[str, Any],
    alert: Alert | None = None,
    *,
    plugins: Sequence[object] = (),
    wait: float | None = None,
) -> SendReport:
    """Route one alert (default: :func:`make_alert`) to one destination of
    ``destination_type`` configured with ``destination`` (no ``type`` key) and deliver it with
    the real dispatcher: retries, timeouts, rate limits and secret masking all apply.

    The destination is named :data:`DESTINATION`; the report's only delivery is its result.
    """
    alert = alert if alert is not None else make_alert()
    config = single_destination_config(destination_type.name, destination, event=alert.event_type)
    with build_notifier(config, destination_type, *plugins) as notifier:
        return notifier.send(alert, wait=wait)


# -- capturing notifications ---------------------------------------------------------------------


class CaptureConfig(DestinationConfig):
    """``type: capture`` takes only the options every destination accepts."""

    def describe(self) -> str:
        return "captured in memory (armor_notify.testing)"


class Capture:
    """A ``capture`` destination type that records every notification it is asked to send.

    Register :attr:`destination_type` with :func:`build_notifier` (or the ``notifier_factory``
    fixture), configure ``{"type": "capture"}`` destinations, send, and read
    :attr:`notifications`. Every attempt is delivered unless :meth:`answer` scripts otherwise.
    """

    def __init__(self, name: str = "capture") -> None:
        self.name = name
        self.notifications: list[Notification] = []
        self._answers: deque[Outcome] = deque()
        self._lock = threading.Lock()
        self.destination_type = DestinationType(
            name, CaptureConfig, self._sender, display_name="Capture"
        )

    def answer(self, *outcomes: Outcome) -> None:
        """Answer the next attempts with these outcomes, in order; then deliver again."""
        with self._lock:
            self._answers.extend(outcomes)

    def by_destination(self, destination: str) -> list[Notification]:
        return [n for n in self.notifications if n.destination == destination]

    def _sender(self, config: CaptureConfig) -> Sender:
        return _CaptureSender(self)


class _CaptureSender:
    def __init__(self, capture: Capture) -> None:
        self._capture = capture

    def send(self, notification: Notification) -> Outcome:
        with self._capture._lock:
            self._capture.notifications.append(notification)
            answers = self._capture._answers
            return answers.popleft() if answers else Outcome.delivered()


# -- the conformance suite -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Reply:
    """How the loopback receiver answers one attempt, as asked by the conformance suite.

    ``kind`` is one of:

    - ``delivered``: accept the notification, as the real service does;
    - ``permanent``: refuse it for good (HTTP 400/403/410, SMTP 5xx, a revoked key);
    - ``retryable``: a temporary failure (HTTP 429/5xx, SMTP 4xx); when ``retry_after`` is set,
      the answer asks the client to wait that many seconds (``Retry-After: 1``);
    - ``hang``: accept the connection and never answer (at least not for several seconds).
    """

    kind: Literal["delivered", "permanent", "retryable", "hang"]
    retry_after: int | None = None

    @classmethod
    def retry_after_seconds(cls, seconds: int) -> Reply:
        """A retryable answer asking the client to wait ``seconds`` before trying again."""
        return cls("retryable", retry_after=seconds)


DELIVERED = Reply("delivered")
PERMANENT = Reply("permanent")
RETRYABLE = Reply("retryable")
HANG = Reply("hang")


class _RaisingSender:
    """Wraps a real sender; ``send`` raises, as a buggy plugin would."""

    def __init__(self, real: Sender, message: str) -> None:
        self._real = real
        self._message = message

    def send(self, notification: Notification) -> Outcome:
        raise RuntimeError(self._message)

    def close(self) -> None:
        close = getattr(self._real, "close", None)
        if callable(close):
            close()


def _not_implemented(cls: type, hook: str, what: str,
                     suite: str = "DestinationConformance") -> NotImplementedError:
    return NotImplementedError(
        f"{cls.__name__} must implement {hook}(): {what} (see armor_notify.testing.{suite})")


class DestinationConformance:
    """The contract every destination keeps, as inherited pytest tests.

    Subclass it in a class whose name starts with ``Test`` and implement the five hooks below;
    every ``test_*`` method then runs against your destination type through the real
    dispatcher, over the wire to a loopback receiver you provide::

        class TestWebhookConformance(DestinationConformance):
            def destination_type(self):
                return armor_notify_webhook.WEBHOOK

            def valid_config(self):
                return {"url": "https://hooks.example.com/armor", "secret": SECRET}

            def invalid_configs(self):
                return [({"url": "http://example.com/x", "secret": SECRET}, "url"),
                        ({"url": "https://example.com/x"}, "secret")]

            def secrets(self, config):
                return [v for v in (config.get("secret"),) if v]

            @contextlib.contextmanager
            def receiver(self, replies):
                with LoopbackReceiver(replies) as server:   # yours: answers as told
                    yield {"url": server.url, "secret": SECRET}

    What it checks: config validation (valid accepted, invalid rejected with the path you name,
    unknown keys rejected); success → ``delivered`` in one attempt; a permanent failure →
    ``failed`` after exactly one attempt, with a reason; a retryable failure → retried, then
    delivered; ``Retry-After`` honoured; a receiver that hangs → the sender gives up within its
    timeout and the attempt counts as retryable; an exception in the sender fails only its own
    delivery; resolved alerts and test events are delivered; and secrets never appear in
    ``repr``/``str`` of the config, ``describe()``, the sender's ``repr``, config errors, any
    delivery reason or hint, or the JSON report.

    The suite sets the options every destination accepts (``timeout``, ``max_attempts``,
    ``retry_backoff``, ``retry_deadline``, ``rate_limit``) on the configs your receiver yields,
    so keep those out of them. ``self.tmp_path`` is a fresh directory for each test.
    """

    timeout: ClassVar[float] = 0.5
    """Seconds per attempt in the suite's configs (a hanging receiver costs this much)."""
    retry_after: ClassVar[int] = 1
    """The ``Retry-After`` the suite asks the receiver to send, in seconds."""
    supports_retry_after: ClassVar[bool] = True
    """False for protocols with no way to ask for a delay (SMTP): that test is skipped."""

    tmp_path: Path

    # -- hooks the author implements -------------------------------------------------------------

    def destination_type(self) -> DestinationType:
        """The :class:`DestinationType` under test (the object your plugin registers)."""
        raise _not_implemented(type(self), "destination_type", "return the DestinationType")

    def valid_config(self) -> dict[str, Any]:
        """A config (without ``type``) that validates; it need not reach anything."""
        raise _not_implemented(type(self), "valid_config", "return a config that validates")

    def invalid_configs(self) -> Sequence[tuple[dict[str, Any], str]]:
        """Configs that must be refused, each with the path of the error inside the destination
        (``"url"``, ``"to[0]"``, or ``""`` for the destination as a whole)."""
        raise _not_implemented(type(self), "invalid_configs",
                               "return (config, expected error path) pairs")

    def secrets(self, config: Mapping[str, Any]) -> list[str]:
        """The secret values in ``config`` (any config this class builds, valid or not: use
        ``config.get``). Each must be at least 8 characters, so that finding it is meaningful."""
        raise _not_implemented(type(self), "secrets", "return the secret values in a config")

    def receiver(self, replies: Sequence[Reply]) -> contextlib.AbstractContextManager[dict[str, Any]]:
        """A context manager: start a loopback receiver that answers successive attempts with
        ``replies`` (then ``delivered``), and yield a config (without ``type``) that reaches it."""
        raise _not_implemented(type(self), "receiver",
                               "start a loopback receiver scripted with the replies and yield "
                               "a config that reaches it")

    # -- the suite's own plumbing ----------------------------------------------------------------

    @pytest.fixture(autouse=True)
    def _conformance_tmp_path(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path

    def suite_options(self, **overrides: Any) -> dict[str, Any]:
        """The common options the suite sets on every config it sends with."""
        options: dict[str, Any] = {
            "timeout": self.timeout,
            "max_attempts": 3,
            "retry_backoff": 0.01,
            "retry_deadline": 30,
            "rate_limit": "none",
        }
        options.update(overrides)
        return options

    def deliver(self, replies: Sequence[Reply], alert: Alert | None = None,
             **options: Any) -> tuple[SendReport, Delivery, dict[str, Any]]:
        """Send one alert to the receiver scripted with ``replies``; check masking; return the
        report, its one delivery and the config used."""
        with self.receiver(replies) as config:
            config = {**config, **self.suite_options(**options)}
            report = send_alert(self.destination_type(), config, alert)
        assert len(report.deliveries) == 1, f"expected one delivery, got {report.deliveries}"
        self.assert_masked(config, json.dumps(report.as_dict(), default=str, ensure_ascii=False))
        return report, report.deliveries[0], config

    def checked_secrets(self, config: Mapping[str, Any]) -> list[str]:
        found = list(self.secrets(config))
        short = [s for s in found if len(s) < 8]
        assert not short, (
            f"{type(self).__name__}.secrets() returned a value shorter than 8 characters; use "
            "longer secrets in the test configs so that finding one in output is meaningful"
        )
        return found

    def assert_masked(self, config: Mapping[str, Any], *texts: str) -> None:
        """No secret of ``config`` appears in any of ``texts``."""
        for secret in self.checked_secrets(config):
            for text in texts:
                assert secret not in text, (
                    f"a secret ({secret[:4]}…) appears unmasked in: {text[:300]!r}; declare "
                    "it as armor_notify.Secret / SecretUrl / SecretHttpsUrl and mask it in "
                    "describe() and in outcome reasons"
                )

    @staticmethod
    def describe_delivery(delivery: Delivery) -> str:
        attempts = "; ".join(f"#{a.number} {a.status}: {a.reason}" for a in delivery.attempts)
        return (f"state {delivery.state.value}, reason {delivery.reason!r}, hint "
                f"{delivery.hint!r}, attempts [{attempts}]")

    def model(self, config: Mapping[str, Any]) -> DestinationConfig:
        return self.destination_type().config_model.model_validate(dict(config))

    # -- config validation -----------------------------------------------------------------------

    def test_valid_config_is_accepted(self) -> None:
        dtype = self.destination_type()
        assert isinstance(dtype, DestinationType), "destination_type() must return a DestinationType"
        config = single_destination_config(dtype.name, self.valid_config())
        with build_notifier(config, dtype) as notifier:
            destination = notifier.config.destinations[DESTINATION]
        assert isinstance(destination.config, DestinationConfig), (
            "config_model must subclass armor_notify.DestinationConfig"
        )

    def test_invalid_configs_are_rejected_with_their_path(self) -> None:
        dtype = self.destination_type()
        cases = list(self.invalid_configs())
        assert cases, "invalid_configs() should return at least one (config, path) pair"
        for bad, path in cases:
            expected = f"destinations.{DESTINATION}" + (f".{path}" if path else "")
            try:
                build_notifier(single_destination_config(dtype.name, bad), dtype).close()
            except ConfigError as exc:
                paths = [p.path for p in exc.problems]
                assert expected in paths, f"config {bad} was refused at {paths}, not {expected}"
                self.assert_masked(bad, str(exc))
            else:
                raise AssertionError(f"config {bad} was accepted; expected an error at {expected}")

    def test_unknown_keys_are_rejected(self) -> None:
        dtype = self.destination_type()
        bad = {**self.valid_config(), "no_such_option": True}
        try:
            build_notifier(single_destination_config(dtype.name, bad), dtype).close()
        except ConfigError as exc:
            problems = {p.path: p.message for p in exc.problems}
        else:
            raise AssertionError("a config with the unknown key 'no_such_option' was accepted")
        where = f"destinations.{DESTINATION}.no_such_option"
        assert where in problems and "unknown key" in problems[where], (
            f"an unknown key must be refused (DestinationConfig's extra='forbid'); got {problems}"
        )

    def test_secrets_are_masked_in_repr_str_and_describe(self) -> None:
        config = self.valid_config()
        model = self.model(config)
        description = model.describe()
        assert description, "override describe() to say where notifications go (masked)"
        sender = self.destination_type().sender(model)
        try:
            self.assert_masked(config, repr(model), str(model), description, repr(sender))
        finally:
            close = getattr(sender, "close", None)
            if callable(close):
                close()

    # -- outcomes over the wire ------------------------------------------------------------------

    def test_success_is_delivered(self) -> None:
        from .delivery import State

        _, delivery, _ = self.deliver([DELIVERED])
        assert delivery.state is State.delivered, self.describe_delivery(delivery)
        assert delivery.attempt_count == 1, self.describe_delivery(delivery)

    def test_permanent_failure_fails_at_once_with_a_reason(self) -> None:
        from .delivery import State

        _, delivery, _ = self.deliver([PERMANENT])
        assert delivery.state is State.failed, (
            "a permanent refusal must be Outcome.failed: " + self.describe_delivery(delivery))
        assert delivery.attempt_count == 1, "permanent failures are never retried"
        assert delivery.reason.strip(), "say why, in the destination's own words"

    def test_retryable_failure_is_retried_then_delivered(self) -> None:
        from .delivery import State

        _, delivery, _ = self.deliver([RETRYABLE, DELIVERED])
        assert [a.status for a in delivery.attempts] == ["retry", "delivered"], (
            "a temporary failure must be Outcome.retry: " + self.describe_delivery(delivery))
        assert delivery.state is State.delivered
        assert delivery.attempts[0].reason.strip(), "say why the attempt failed"

    def test_retry_after_is_honoured(self) -> None:
        if not self.supports_retry_after:
            pytest.skip(f"{type(self).__name__}: the protocol has no Retry-After")
        _, delivery, _ = self.deliver([Reply.retry_after_seconds(self.retry_after), DELIVERED])
        assert [a.status for a in delivery.attempts] == ["retry", "delivered"], (
            self.describe_delivery(delivery))
        first, second = delivery.attempts
        waited = second.started_at - (first.started_at + first.duration)
        assert waited >= self.retry_after - 0.05, (
            f"the second attempt came {waited:.2f}s after the first answered, but the receiver "
            f"asked for Retry-After: {self.retry_after}; pass retry_after= to Outcome.retry "
            "(armor_notify.parse_retry_after reads the header)"
        )

    def test_a_hanging_receiver_is_a_retryable_timeout(self) -> None:
        from .delivery import State
        from .dispatcher import hard_timeout

        _, delivery, _ = self.deliver([HANG], max_attempts=1)
        assert delivery.attempt_count == 1 and delivery.attempts[0].status == "retry", (
            "no answer within the timeout must be Outcome.retry: " + self.describe_delivery(delivery))
        assert delivery.state is not State.delivered
        limit = hard_timeout(self.timeout) + 0.5
        assert delivery.attempts[0].duration <= limit, (
            f"the attempt took {delivery.attempts[0].duration:.2f}s with timeout {self.timeout}s")

    def test_the_sender_itself_honours_the_timeout(self) -> None:
        from .dispatcher import hard_timeout

        # The dispatcher abandons a hung attempt, but the thread stays busy: senders must pass
        # notification.timeout to every network call so that they return by themselves.
        result: list[Outcome | BaseException] = []
        with self.receiver([HANG]) as config:
            model = self.model({**config, **self.suite_options()})
            sender = self.destination_type().sender(model)

            def attempt() -> None:
                try:
                    result.append(sender.send(make_notification(timeout=self.timeout)))
                except BaseException as exc:
                    result.append(exc)

            worker = threading.Thread(target=attempt, daemon=True)
            started = time.monotonic()
            worker.start()
            worker.join(hard_timeout(self.timeout) + 1.0)
            took = time.monotonic() - started
            close = getattr(sender, "close", None)
            if callable(close):
                close()
        assert result, (
            f"send() did not return {took:.1f}s after it started, with a timeout of "
            f"{self.timeout}s: pass notification.timeout to every network call")
        outcome = result[0]
        assert isinstance(outcome, Outcome) and outcome.status == "retry", (
            f"a timeout must be Outcome.retry, got {outcome!r}")
        self.assert_masked(config, outcome.reason, outcome.hint or "")

    def test_a_sender_exception_fails_only_its_own_delivery(self) -> None:
        from .delivery import State

        dtype = self.destination_type()
        config = {**self.valid_config(), **self.suite_options()}
        secrets = self.checked_secrets(config)
        message = "simulated plugin bug while holding " + " and ".join(secrets or ["no secret"])
        raising = dataclasses.replace(
            dtype, sender=lambda model: _RaisingSender(dtype.sender(model), message))
        capture = Capture("conformance_capture")
        alert = make_alert()
        full = single_destination_config(dtype.name, config, event=alert.event_type,
                                         extra={"healthy": {"type": capture.name}})
        with build_notifier(full, raising, capture.destination_type) as notifier:
            report = notifier.send(alert)
        states = {d.destination: d for d in report.deliveries}
        broken = states[DESTINATION]
        assert broken.state is State.failed and "RuntimeError" in broken.reason, (
            self.describe_delivery(broken))
        assert states["healthy"].state is State.delivered, "another destination was affected"
        self.assert_masked(config, json.dumps(report.as_dict(), default=str, ensure_ascii=False))

    # -- the other kinds of notification ---------------------------------------------------------

    def test_a_resolved_alert_is_delivered_when_send_resolved_is_on(self) -> None:
        from .delivery import State

        _, delivery, _ = self.deliver([DELIVERED], make_alert(status="resolved"), send_resolved=True)
        assert delivery.state is State.delivered, self.describe_delivery(delivery)

    def test_a_test_event_is_delivered(self) -> None:
        from .delivery import State

        with self.receiver([DELIVERED]) as config:
            config = {**config, **self.suite_options()}
            dtype = self.destination_type()
            with build_notifier(single_destination_config(dtype.name, config), dtype) as notifier:
                results = notifier.test(DESTINATION)
        assert results and results[0].test, "armor-notify test sends a test event"
        assert results[0].state is State.delivered, self.describe_delivery(results[0])
        self.assert_masked(config, *(json.dumps(d.as_dict(), default=str, ensure_ascii=False)
                                     for d in results))


# -- sources -------------------------------------------------------------------------------------


GARBAGE: tuple[bytes, ...] = (
    b"", b"null", b"0", b"[]", b"{}", b'"text"', b"[[[[[[[[[[]]]]]]]]]]", b"{\"alerts\": 7}",
    b"\xff\xfe not utf-8", b"{" * 5000, b"1e999999",
)
"""Inputs no source's tool writes: each must be refused with :class:`SourceError` problems (or
read as holding no alerts), never escape as another exception."""


class SourceConformance:
    """The contract every alert source keeps, as inherited pytest tests.

    Subclass it in a class whose name starts with ``Test`` and implement the three hooks::

        class TestNagiosConformance(SourceConformance):
            def source(self):
                return armor_notify_nagios.NAGIOS

            def good_inputs(self):
                return [(SourceInput.from_path(FIXTURES / "two-problems.json"), 2)]

            def bad_inputs(self):
                return [(SourceInput.from_bytes(b'{"problems": 3}'), "problems")]

    What it checks: the source registers through its plugin's ``register_sources`` hook under a
    lower-case identifier, with a description; every good input becomes that many alerts that
    validate as native ones, each named by a distinct place in the input; reading the same input
    twice gives the same alert ids and dedup keys (so repeats are recognised); a bad input is
    refused with a problem at the place you name; and garbage (:data:`GARBAGE`: empty input,
    wrong JSON shapes, invalid UTF-8, deep nesting) is refused as problems, never as another
    exception.
    """

    # -- hooks the author implements -------------------------------------------------------------

    def source(self) -> Source:
        """The :class:`Source` under test (the object your plugin registers)."""
        raise _not_implemented(type(self), "source", "return the Source", "SourceConformance")

    def good_inputs(self) -> Sequence[tuple[SourceInput, int]]:
        """Inputs your tool really writes, each with how many alerts it must make (check
        results that passed count: they carry a ``check`` and are kept for the ledger)."""
        raise _not_implemented(type(self), "good_inputs", "return (SourceInput, count) pairs",
                               "SourceConformance")

    def bad_inputs(self) -> Sequence[tuple[SourceInput, str]]:
        """Inputs that must be refused, each with (part of) the place the problem names."""
        raise _not_implemented(type(self), "bad_inputs", "return (SourceInput, place) pairs",
                               "SourceConformance")

    def event_types(self) -> Sequence[str]:
        """Event types beyond the built-in ones that your source's alerts use (your plugin
        registers them with ``register_event_types``)."""
        return ()

    # -- the suite -------------------------------------------------------------------------------

    def read(self, given: SourceInput) -> list[Alert]:
        from .intake import read_source

        return read_source(self.source(), given, [*BUILTIN_EVENT_TYPES, *self.event_types()])

    def test_it_registers_under_a_name_with_a_description(self) -> None:
        source = self.source()
        pm = plugin_manager(source, inline_plugin(event_types=self.event_types()))
        assert pm.registry.sources.get(source.name) is source
        assert source.name.isidentifier() and source.name == source.name.lower(), source.name
        assert source.description.strip(), "a description for `armor-notify plugins`"
        assert set(source.reads) <= {"file", "directory", "body"} and source.reads, source.reads

    def test_good_inputs_make_valid_alerts_each_with_its_place(self) -> None:
        for given, count in self.good_inputs():
            made = self.source().read(given)
            assert all(isinstance(m, SourceAlert) for m in made)
            places = [(m.file, m.where) for m in made]
            assert all(where for _, where in places), f"{given.name}: every alert names a place"
            assert len(set(places)) == len(places), f"{given.name}: two alerts at one place"
            alerts = self.read(given)
            assert len(alerts) == count, f"{given.name}: {len(alerts)} alerts, expected {count}"

    def test_the_same_input_gives_the_same_ids(self) -> None:
        for given, _ in self.good_inputs():
            first, again = self.read(given), self.read(given)
            assert [a.id for a in first] == [a.id for a in again], given.name
            assert [a.dedup_key for a in first] == [a.dedup_key for a in again], given.name

    def test_bad_inputs_are_refused_at_their_place(self) -> None:
        for given, place in self.bad_inputs():
            with pytest.raises(AlertError) as caught:  # a SourceError is one
                self.read(given)
            problems = getattr(caught.value, "problems", [])
            assert any(place in f"{p.file}: {p.path}: {p.message}" for p in problems), (
                f"{given.name}: no problem names {place!r}: {[str(p) for p in problems]}")

    def test_garbage_is_refused_as_problems_never_as_another_exception(self) -> None:
        from .sources import SourceError

        source = self.source()
        for data in GARBAGE:
            given = SourceInput.from_bytes(data, "<garbage>")
            try:
                made = source.read(given)
            except SourceError as exc:
                assert exc.problems, f"{data[:20]!r}: a SourceError names its problems"
                continue
            assert isinstance(made, Sequence), f"{data[:20]!r}: read returned {type(made)}"
