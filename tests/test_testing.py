"""The plugin author kit itself: its fixtures work, it is a pytest plugin that ``import
armor_notify`` never loads, and its conformance suite catches destinations that break the
contract (each mutation of the Slack destination below must fail the test that guards it)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import requests
from armor_notify_plugins.slack import SLACK, SlackConfig
from armor_notify_plugins.slack_sender import SlackSender
from test_conformance import TestSlackConformance as _SlackSuite

import armor_notify.pytest_plugin
from armor_notify import DestinationType, Notification, Outcome, hookimpl
from armor_notify.delivery import State
from armor_notify.testing import Capture, DestinationConformance

# -- the kit as a pytest plugin -------------------------------------------------------------------


@pytest.mark.slow
def test_the_kit_is_a_pytest_plugin_that_import_armor_notify_never_loads(
    pytestconfig: pytest.Config,
) -> None:
    assert pytestconfig.pluginmanager.get_plugin("armor_notify") is armor_notify.pytest_plugin
    code = ("import sys, armor_notify; "
            "assert not [m for m in sys.modules if m.startswith(('armor_notify.', 'pytest'))]")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


@pytest.mark.slow
def test_loading_the_pytest_plugin_imports_nothing_of_armor_notify() -> None:
    # pytest loads the plugin into every run wherever armor-notify is installed: the models, the
    # notifier and the config layer are imported only when a test first asks for a fixture.
    code = ("import sys, pytest; before = set(sys.modules); import armor_notify.pytest_plugin; "
            "new = sorted(m for m in set(sys.modules) - before); "
            "assert new == ['armor_notify', 'armor_notify.pytest_plugin'], new")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


# -- fixtures -------------------------------------------------------------------------------------


def test_make_alert_merges_overrides(make_alert: Any) -> None:
    first, second = make_alert(), make_alert(severity="info", asset={"environment": "dev"})
    assert first.id != second.id and first.event_type == "schema_change"
    assert second.severity.value == "info" and second.asset.environment == "dev"
    assert second.asset.name == "analytics.public.orders"  # the rest of the asset is kept
    late = make_alert(event_type="freshness_violation", freshness={"delay_hours": 3})
    assert late.changes == () and late.freshness is not None
    custom = make_alert(event_type="dbt_test_failed", event_types=["dbt_test_failed"])
    assert custom.event_type == "dbt_test_failed"


def test_notifier_factory_registers_plugins_inline(
    notifier_factory: Any, captured_notifications: Capture, make_alert: Any
) -> None:
    plugin = type("EventTypes", (), {"register_event_types": staticmethod(hookimpl(
        lambda register: register("dbt_test_failed")))})
    yaml_text = """
version: 1
destinations:
  everything: {type: capture, retry_backoff: 0.01}
  late-only: {type: capture}
rules:
  - {name: dbt, event: dbt_test_failed, destinations: [everything]}
  - {name: Late, event: freshness_violation, destinations: [late-only, everything]}
"""
    notifier = notifier_factory(yaml_text, plugin, captured_notifications.destination_type)
    assert set(notifier.plugins.registry.destination_types) == {"capture"}  # nothing installed
    events = notifier.plugins.registry.event_types
    captured_notifications.answer(Outcome.retry("busy"))
    report = notifier.send([
        make_alert(event_type="dbt_test_failed", event_types=events),
        make_alert(event_type="freshness_violation", freshness={"delay_hours": 3}),
    ])
    assert [(d.destination, d.rule, d.state) for d in report.deliveries] == [
        ("everything", "dbt", State.delivered),
        ("late-only", "Late", State.delivered),
        ("everything", "Late", State.delivered),
    ]
    assert len(captured_notifications.notifications) == 4  # one retry
    assert [n.rule for n in captured_notifications.by_destination("late-only")] == ["Late"]


def test_notifier_factory_can_load_the_installed_plugins(notifier_factory: Any) -> None:
    config = {"version": 1, "destinations": {"s": {"type": "scripted"}}, "rules": []}
    notifier = notifier_factory(config, installed=True)
    assert {"pagerduty", "slack", "email", "scripted"} <= set(
        notifier.plugins.registry.destination_types)


def test_send_alert_runs_the_real_dispatcher(send_alert: Any,
                                             captured_notifications: Capture) -> None:
    captured_notifications.answer(Outcome.failed("410 gone", hint="recreate it"))
    report = send_alert(captured_notifications.destination_type, {"max_attempts": 2})
    [delivery] = report.deliveries
    assert (delivery.state, delivery.reason, delivery.hint) == (State.failed, "410 gone",
                                                                "recreate it")
    assert isinstance(captured_notifications.notifications[0], Notification)


# -- the conformance suite catches broken destinations ------------------------------------------


def _suite(cls: type[DestinationConformance], tmp_path: Path) -> DestinationConformance:
    suite = cls()
    suite.tmp_path = tmp_path
    return suite


class _LeakyConfig(SlackConfig):
    def describe(self) -> str:
        return f"Slack webhook {self.webhook_url.get_secret_value()}"


class _EverythingIsRetried(SlackSender):
    def _classify(self, response: requests.Response) -> Outcome:
        outcome = super()._classify(response)
        return outcome if outcome.status == "delivered" else Outcome.retry(outcome.reason)


class _IgnoresTheTimeout(SlackSender):
    def send(self, notification: Notification) -> Outcome:
        return super().send(dataclasses.replace(notification, timeout=60))


class _SaysTheSecret(SlackSender):
    def send(self, notification: Notification) -> Outcome:
        outcome = super().send(notification)
        path = self._url.split("127.0.0.1", 1)[1]  # the secret path, without the host
        return dataclasses.replace(outcome, reason=f"{outcome.reason} (posted to {path})")


def _mutant(**changes: Any) -> type[DestinationConformance]:
    class Mutant(_SlackSuite):
        def destination_type(self) -> DestinationType:
            return dataclasses.replace(SLACK, **changes)

    return Mutant


@pytest.mark.parametrize(("changes", "test", "message"), [
    ({"config_model": _LeakyConfig}, "test_secrets_are_masked_in_repr_str_and_describe",
     "appears unmasked"),
    ({"sender": _EverythingIsRetried}, "test_permanent_failure_fails_at_once_with_a_reason",
     "must be Outcome.failed"),
    ({"sender": _EverythingIsRetried}, "test_retry_after_is_honoured", "Retry-After: 1"),
    ({"sender": _IgnoresTheTimeout}, "test_the_sender_itself_honours_the_timeout",
     "pass notification.timeout"),
])
def test_the_suite_fails_a_destination_that_breaks_the_contract(
    tmp_path: Path, changes: dict[str, Any], test: str, message: str
) -> None:
    suite = _suite(_mutant(**changes), tmp_path)
    with pytest.raises(AssertionError, match=message):
        getattr(suite, test)()


def test_the_suite_fails_a_reason_that_quotes_a_secret(tmp_path: Path) -> None:
    class Mutant(_SlackSuite):
        def destination_type(self) -> DestinationType:
            return dataclasses.replace(SLACK, sender=_SaysTheSecret)

        def secrets(self, config: Mapping[str, Any]) -> list[str]:
            url = str(config.get("webhook_url", ""))
            return [url, "/services/" + url.split("/services/", 1)[1]]

    with pytest.raises(AssertionError, match="appears unmasked"):
        _suite(Mutant, tmp_path).test_success_is_delivered()


def test_an_incomplete_subclass_says_which_hook_is_missing(tmp_path: Path) -> None:
    class Forgetful(DestinationConformance):
        def destination_type(self) -> DestinationType:
            return SLACK

    with pytest.raises(NotImplementedError, match=r"Forgetful must implement valid_config\(\)"):
        _suite(Forgetful, tmp_path).test_valid_config_is_accepted()


def test_short_secrets_are_refused_as_meaningless(tmp_path: Path) -> None:
    class ShortSecrets(_SlackSuite):
        def secrets(self, config: Mapping[str, Any]) -> list[str]:
            return ["abc"]

    with pytest.raises(AssertionError, match="shorter than 8 characters"):
        _suite(ShortSecrets, tmp_path).test_success_is_delivered()
