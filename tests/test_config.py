"""The config file (SPEC §2): loading, ``${VAR}`` interpolation and validation that reports every
problem at once with file, line, path and a suggestion."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from armor_notify.config import (
    CONFIG_ENV,
    DEFAULT_CONFIG,
    Config,
    Destination,
    find_config,
    load_config,
    parse_config,
)
from armor_notify.destinations import DestinationConfig, DestinationType, HttpsUrl, RateLimit
from armor_notify.errors import ArmorNotifyError, ConfigError, Problem
from armor_notify.plugins import Registry

SECRET = "s3cr3t-Token-Value-9f8e7d6c5b4a"


def cfg(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def parse(text: str, registry: Registry, environ: Mapping[str, str] | None = None,
          source: str = "armor-notify.yaml") -> Config:
    return parse_config(cfg(text), registry, source=source, environ={} if environ is None else environ)


def problems(text: str, registry: Registry, environ: Mapping[str, str] | None = None,
             source: str = "armor-notify.yaml") -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        parse(text, registry, environ, source)
    return info.value.problems


def by_path(found: list[Problem]) -> dict[str, Problem]:
    out = {p.path: p for p in found}
    assert len(out) == len(found), f"two problems share a path: {found}"
    return out


def only(found: list[Problem]) -> Problem:
    assert len(found) == 1, found
    return found[0]


MINIMAL = """
version: 1
destinations:
  d:
    type: scripted
"""


# -- a valid config -------------------------------------------------------------------------------


def test_valid_config(registry: Registry) -> None:
    config = parse("""
        version: 1
        defaults:
          source: acme-monitoring
          link_text: Open in Acme
        destinations:
          pager:
            type: scripted
            script: [ok]
            timeout: 3
          chat:
            type: scripted
            script: [retry, ok]
            max_attempts: 2
        rules:
          - name: Production Breaking Changes
            event: schema_change
            scope:
              environments: [production]
              data_sources: ["warehouse-*"]
              schemas: {include: ["*"], exclude: ["test_*"]}
              assets: {exclude: ["*_staging"]}
              tags: {any: [gold]}
            conditions:
              changes: breaking
            destinations: [pager, chat]
          - name: Late data
            event: freshness_violation
            conditions: {min_delay_hours: 2}
            destinations: chat
    """, registry, source="my.yaml")
    assert config.path == "my.yaml"
    assert config.defaults.source == "acme-monitoring"
    assert config.defaults.link_text == "Open in Acme"
    assert list(config.destinations) == ["pager", "chat"]
    pager = config.destinations["pager"]
    assert isinstance(pager, Destination)
    assert pager.name == "pager"
    assert pager.type is registry.destination_types["scripted"]
    assert pager.config.timeout == 3
    assert config.destinations["chat"].config.script == ["retry", "ok"]  # type: ignore[attr-defined]
    assert config.destinations["chat"].config.max_attempts == 2
    assert [r.name for r in config.rules] == ["Production Breaking Changes", "Late data"]
    assert [r.index for r in config.rules] == [0, 1]
    assert config.rules[0].destinations == ("pager", "chat")
    assert config.rules[1].destinations == ("chat",)  # a bare string is a one-item list
    assert config.rules[1].model.event == ("freshness_violation",)
    assert config.rules[1].model.conditions.min_delay_hours == 2
    assert config.router.rules == list(config.rules)


def test_defaults_and_rules_are_optional(registry: Registry) -> None:
    config = parse(MINIMAL, registry)
    assert config.defaults.source == "anomalyarmor"
    assert config.defaults.link_text == "View in AnomalyArmor"
    assert config.rules == ()
    assert set(config.destinations) == {"d"}


def test_builtin_destination_types_are_installed(registry: Registry) -> None:
    assert {"pagerduty", "slack", "email", "scripted"} <= set(registry.destination_types)


# -- many problems in one file --------------------------------------------------------------------

MANY_PROBLEMS = """\
version: 2
destinatons: {}
destinations:
  pagerduty-data-platform:
    type: scripted
    scrpt: [ok]
  slack-data-incidents:
    type: scriptd
  email-data-eng:
    script: [ok]
rules:
  - name: Production Breaking Changes
    event: schema_change
    destinations: [slack-data-incidents, pagerduty-dta-platform]
  - name: Late data
    event: freshness_violation
    destination: [slack-data-incidents]
  - name: Metrics
    event: metric_anomoly
    destinations: email-data-eng
"""


def test_many_problems_reported_at_once_with_file_line_and_path(registry: Registry) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(MANY_PROBLEMS, registry, source="conf/armor.yaml", environ={})
    found = by_path(info.value.problems)
    assert set(found) == {
        "version",
        "destinatons",
        "destinations.pagerduty-data-platform.scrpt",
        "destinations.slack-data-incidents.type",
        "destinations.email-data-eng",
        "rules[0].destinations[1]",
        "rules[1].destination",
        "rules[1].destinations",
        "rules[2].event",
    }
    assert {p.file for p in found.values()} == {"conf/armor.yaml"}
    lines = {path: p.line for path, p in found.items()}
    assert lines == {
        "version": 1,
        "destinatons": 2,
        "destinations.pagerduty-data-platform.scrpt": 6,
        "destinations.slack-data-incidents.type": 8,
        "destinations.email-data-eng": 9,
        "rules[0].destinations[1]": 14,
        "rules[1].destination": 17,
        "rules[1].destinations": 15,  # missing: reported at the rule itself
        "rules[2].event": 19,
    }
    msg = {path: p.message for path, p in found.items()}
    assert "version: 1" in msg["version"]
    assert "unknown key 'destinatons'" in msg["destinatons"]
    assert "(did you mean 'destinations'?)" in msg["destinatons"]
    assert "unknown key 'scrpt'" in msg["destinations.pagerduty-data-platform.scrpt"]
    assert "(did you mean 'script'?)" in msg["destinations.pagerduty-data-platform.scrpt"]
    assert "unknown destination type 'scriptd'" in msg["destinations.slack-data-incidents.type"]
    assert "(did you mean 'scripted'?)" in msg["destinations.slack-data-incidents.type"]
    assert "missing required key 'type'" in msg["destinations.email-data-eng"]
    assert msg["rules[0].destinations[1]"] == (
        "unknown destination 'pagerduty-dta-platform' (did you mean 'pagerduty-data-platform'?)"
    )
    assert "unknown key 'destination'" in msg["rules[1].destination"]
    assert "(did you mean 'destinations'?)" in msg["rules[1].destination"]
    assert msg["rules[1].destinations"] == "missing required key 'destinations'"
    assert "unknown event type 'metric_anomoly'" in msg["rules[2].event"]
    assert "(did you mean 'metric_anomaly'?)" in msg["rules[2].event"]


def test_config_error_lists_every_problem(registry: Registry) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(MANY_PROBLEMS, registry, source="conf/armor.yaml", environ={})
    error = info.value
    assert isinstance(error, ArmorNotifyError)
    text = str(error)
    assert text.startswith(f"{len(error.problems)} problems in the config:")
    assert len(error.problems) == 9
    for problem in error.problems:
        assert f"conf/armor.yaml:{problem.line}: {problem.path}: {problem.message}" in text
    assert len(text.splitlines()) == 1 + len(error.problems)


def test_single_problem_message_is_singular(registry: Registry) -> None:
    with pytest.raises(ConfigError) as info:
        parse("version: 3\ndestinations: {}\n", registry)
    assert str(info.value).startswith("1 problem in the config:")


def test_unknown_key_lists_the_valid_keys(registry: Registry) -> None:
    problem = only(problems("""
        version: 1
        destinations: {d: {type: scripted}}
        rules:
          - name: r
            event: schema_change
            destinations: [d]
            scpoe: {}
    """, registry))
    assert problem.path == "rules[0].scpoe"
    assert "(did you mean 'scope'?)" in problem.message
    assert "valid keys:" in problem.message
    assert "conditions" in problem.message


def test_unknown_key_in_nested_rule_section(registry: Registry) -> None:
    found = by_path(problems("""
        version: 1
        destinations: {d: {type: scripted}}
        rules:
          - name: r
            event: schema_change
            scope: {environment: [prod]}
            conditions: {min_severty: critical}
            destinations: [d]
    """, registry))
    assert set(found) == {"rules[0].scope.environment", "rules[0].conditions.min_severty"}
    assert "(did you mean 'environments'?)" in found["rules[0].scope.environment"].message
    assert "(did you mean 'min_severity'?)" in found["rules[0].conditions.min_severty"].message
    assert found["rules[0].scope.environment"].line == 6
    assert found["rules[0].conditions.min_severty"].line == 7


@pytest.mark.parametrize("version", ["2", "0", '"1"', "v1"])
def test_wrong_version(registry: Registry, version: str) -> None:
    problem = only(problems(f"version: {version}\ndestinations: {{d: {{type: scripted}}}}\n",
                            registry))
    assert problem.path == "version"
    assert problem.line == 1
    assert "version: 1" in problem.message


def test_missing_version_and_destinations(registry: Registry) -> None:
    found = by_path(problems("rules: []\n", registry))
    assert set(found) == {"version", "destinations"}
    assert found["version"].message == "missing required key 'version'"
    assert found["destinations"].message == "missing required key 'destinations'"


@pytest.mark.parametrize("missing", ["name", "event", "destinations"])
def test_rule_missing_required_key(registry: Registry, missing: str) -> None:
    fields = {"name": "name: r", "event": "event: schema_change", "destinations": "destinations: [d]"}
    del fields[missing]
    text = ("version: 1\ndestinations: {d: {type: scripted}}\nrules:\n"
            f"  - {{{', '.join(fields.values())}}}\n")
    problem = only(problems(text, registry))
    assert problem.path == f"rules[0].{missing}"
    assert problem.message == f"missing required key '{missing}'"
    assert problem.line == 4


def test_empty_destination_list_in_rule_rejected(registry: Registry) -> None:
    problem = only(problems("""
        version: 1
        destinations: {d: {type: scripted}}
        rules:
          - {name: r, event: schema_change, destinations: []}
    """, registry))
    assert problem.path == "rules[0].destinations"


def test_cross_checks_still_run_when_the_top_level_is_invalid(registry: Registry) -> None:
    found = by_path(problems("""
        version: 1
        extra: true
        destinations: {d: {type: scripted}}
        rules:
          - {name: r, event: schema_change, destinations: [e]}
    """, registry))
    assert set(found) == {"extra", "rules[0].destinations[0]"}
    assert found["rules[0].destinations[0]"].message == "unknown destination 'e'"


def test_cross_checks_still_run_when_the_rule_itself_is_invalid(registry: Registry) -> None:
    found = by_path(problems("""
        version: 1
        destinations: {pagerduty-data-platform: {type: scripted}}
        rules:
          - name: r
            event: schema_chnage
            scope: {enviroments: [prod]}
            destinations: pagerduty-dta-platform
    """, registry))
    assert set(found) == {"rules[0].event", "rules[0].scope.enviroments", "rules[0].destinations"}
    assert "(did you mean 'schema_change'?)" in found["rules[0].event"].message
    assert found["rules[0].destinations"].message == (
        "unknown destination 'pagerduty-dta-platform' (did you mean 'pagerduty-data-platform'?)"
    )
    assert found["rules[0].destinations"].line == 7


def test_destination_that_failed_validation_is_not_also_unknown(registry: Registry) -> None:
    found = by_path(problems("""
        version: 1
        destinations:
          d: {type: scripted, timeout: -1}
        rules:
          - {name: r, event: schema_change, destinations: [d]}
    """, registry))
    assert set(found) == {"destinations.d.timeout"}
    assert found["destinations.d.timeout"].line == 3


# -- ${VAR} interpolation -------------------------------------------------------------------------


def test_variables_are_replaced_from_environ(registry: Registry) -> None:
    config = parse("""
        version: 1
        defaults:
          source: ${SOURCE}
        destinations:
          d:
            type: scripted
            token: ${TOKEN}
            script: ["${STEP}", "re${TRY}"]
            record: /tmp/${A}-${B}.jsonl
    """, registry, environ={"SOURCE": "acme", "TOKEN": SECRET, "STEP": "fail", "TRY": "try",
                            "A": "x", "B": "y"})
    dest = config.destinations["d"].config
    assert config.defaults.source == "acme"
    assert dest.token.get_secret_value() == SECRET  # type: ignore[attr-defined]
    assert dest.script == ["fail", "retry"]  # type: ignore[attr-defined]
    assert dest.record == "/tmp/x-y.jsonl"  # type: ignore[attr-defined]


def test_variables_are_read_from_the_process_environment_by_default(
        registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARMOR_TEST_TOKEN", SECRET)
    config = parse_config(cfg("""
        version: 1
        destinations:
          d: {type: scripted, token: "${ARMOR_TEST_TOKEN}"}
    """), registry)
    assert config.destinations["d"].config.token.get_secret_value() == SECRET  # type: ignore[attr-defined]


def test_explicit_environ_replaces_the_process_environment(
        registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARMOR_TEST_TOKEN", SECRET)
    problem = only(problems("""
        version: 1
        destinations:
          d: {type: scripted, token: "${ARMOR_TEST_TOKEN}"}
    """, registry, environ={}))
    assert "ARMOR_TEST_TOKEN is not set" in problem.message


def test_unset_variable_names_the_variable_and_where_it_is_used(registry: Registry) -> None:
    found = by_path(problems("""
        version: 1
        destinations:
          pager:
            type: scripted
            token: ${PAGERDUTY_INTEGRATION_KEY}
          chat:
            type: scripted
            script: [ok, "${SLACK_STEP}"]
    """, registry))
    assert set(found) == {"destinations.pager.token", "destinations.chat.script[1]"}
    pager = found["destinations.pager.token"]
    assert "environment variable PAGERDUTY_INTEGRATION_KEY is not set" in pager.message
    assert pager.line == 5
    assert "SLACK_STEP" in found["destinations.chat.script[1]"].message
    assert found["destinations.chat.script[1]"].line == 8
    assert "destinations.pager.token" in str(ConfigError([pager]))


def test_empty_variable_is_an_error(registry: Registry) -> None:
    problem = only(problems("""
        version: 1
        destinations:
          d: {type: scripted, token: "${TOKEN}"}
    """, registry, environ={"TOKEN": ""}))
    assert problem.path == "destinations.d.token"
    assert "environment variable TOKEN is set but empty" in problem.message


def test_double_dollar_is_a_literal(registry: Registry) -> None:
    config = parse("""
        version: 1
        destinations:
          d: {type: scripted, script: ["$${NOT_A_VAR}", "a$${X}b${Y}"]}
    """, registry, environ={"Y": "z"})
    assert config.destinations["d"].config.script == ["${NOT_A_VAR}", "a${X}bz"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("ref", ["${}", "${1ABC}", "${A-B}", "${A B}"])
def test_invalid_variable_reference(registry: Registry, ref: str) -> None:
    problem = only(problems(f"""
        version: 1
        destinations:
          d: {{type: scripted, record: "{ref}"}}
    """, registry, environ={"1ABC": "x", "A-B": "x", "A B": "x"}))
    assert problem.path == "destinations.d.record"
    assert "not a valid environment variable reference" in problem.message


def test_variable_values_are_not_interpolated_again(registry: Registry) -> None:
    config = parse("""
        version: 1
        destinations:
          d: {type: scripted, record: "${A}"}
    """, registry, environ={"A": "${B}"})
    assert config.destinations["d"].config.record == "${B}"  # type: ignore[attr-defined]


def test_secrets_from_variables_never_appear_in_errors(registry: Registry) -> None:
    env = {"TOKEN": SECRET, "STEP": SECRET, "TIMEOUT": SECRET}
    with pytest.raises(ConfigError) as info:
        parse("""
            version: 1
            destinations:
              a:
                type: scripted
                token: ${TOKEN}
                toekn: ${TOKEN}
                timeout: ${TIMEOUT}
                script: ${STEP}
              b:
                type: scripted
                token: ${TOKEN}
                max_attempts: ${TOKEN}
                send_resolved: ${TOKEN}
              c: ${TOKEN}
            rules:
              - name: r
                event: schema_change
                destinations: [a, b, missing]
                conditions: {min_delay_hours: "${TOKEN}"}
        """, registry, environ=env)
    error = info.value
    assert {p.path for p in error.problems} >= {
        "destinations.a.toekn", "destinations.a.timeout", "destinations.a.script",
        "destinations.b.max_attempts", "destinations.b.send_resolved", "destinations.c",
        "rules[0].destinations[2]", "rules[0].conditions.min_delay_hours",
    }
    assert SECRET not in str(error)
    assert SECRET not in repr(error.problems)
    for problem in error.problems:
        assert SECRET not in problem.message


def test_secret_interpolated_into_rate_limit_is_not_echoed(registry: Registry) -> None:
    with pytest.raises(ConfigError) as info:
        parse("""
            version: 1
            destinations:
              d: {type: scripted, rate_limit: "${PAGERDUTY_INTEGRATION_KEY}"}
        """, registry, environ={"PAGERDUTY_INTEGRATION_KEY": SECRET})
    assert only(info.value.problems).path == "destinations.d.rate_limit"
    assert SECRET not in str(info.value)


# -- YAML-level problems --------------------------------------------------------------------------


def test_yaml_syntax_error_has_a_line(registry: Registry) -> None:
    text = "version: 1\ndestinations:\n  a:\n    type: scripted\n   bad: 1\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, registry, source="broken.yaml", environ={})
    problem = only(info.value.problems)
    assert problem.file == "broken.yaml"
    assert problem.line == 5
    assert problem.message.startswith("not valid YAML")
    assert str(problem).startswith("broken.yaml:5: not valid YAML")


def test_yaml_tab_indentation_error_has_a_line(registry: Registry) -> None:
    text = "version: 1\ndestinations:\n\td: {type: scripted}\n"
    problem = only(problems(text, registry))
    assert problem.line == 3
    assert "not valid YAML" in problem.message


@pytest.mark.parametrize("text", ["", "# only a comment\n", "- a\n- b\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(registry: Registry, text: str) -> None:
    problem = only(problems(text, registry))
    assert problem.path == ""
    assert "must be a mapping" in problem.message


def test_duplicate_destination_names_rejected(registry: Registry) -> None:
    found = problems("""
        version: 1
        destinations:
          pager: {type: scripted, script: [ok]}
          pager: {type: scripted, script: [fail]}
    """, registry)
    assert any("pager" in p.path and p.line == 4 for p in found)


# -- finding and reading the file -----------------------------------------------------------------


def test_find_config_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert find_config(None) == Path(DEFAULT_CONFIG)
    assert DEFAULT_CONFIG == "armor-notify.yaml"
    monkeypatch.setenv(CONFIG_ENV, "/etc/from-env.yaml")
    assert CONFIG_ENV == "ARMOR_NOTIFY_CONFIG"
    assert find_config(None) == Path("/etc/from-env.yaml")
    assert find_config("explicit.yaml") == Path("explicit.yaml")


def test_load_config_from_the_current_directory(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                registry: Registry) -> None:
    (tmp_path / "armor-notify.yaml").write_text(cfg(MINIMAL), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    config = load_config(None, registry)
    assert set(config.destinations) == {"d"}
    assert config.path == "armor-notify.yaml"


def test_load_config_from_the_environment_variable(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   registry: Registry) -> None:
    (tmp_path / "armor-notify.yaml").write_text(cfg(MINIMAL), encoding="utf-8")
    other = tmp_path / "other.yaml"
    other.write_text(cfg(MINIMAL).replace("  d:", "  from-env:"), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(CONFIG_ENV, str(other))
    config = load_config(None, registry)
    assert set(config.destinations) == {"from-env"}
    assert config.path == str(other)


def test_explicit_path_beats_the_environment_variable(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      registry: Registry) -> None:
    explicit = tmp_path / "explicit.yaml"
    explicit.write_text(cfg(MINIMAL).replace("  d:", "  explicit:"), encoding="utf-8")
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "does-not-exist.yaml"))
    config = load_config(explicit, registry)
    assert set(config.destinations) == {"explicit"}


def test_missing_default_config_mentions_config_option(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       registry: Registry) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config(None, registry)
    problem = only(info.value.problems)
    assert problem.file == "armor-notify.yaml"
    assert "config file not found" in problem.message
    assert "--config" in problem.message
    assert CONFIG_ENV in problem.message


def test_missing_explicit_config_names_the_file(tmp_path: Path, registry: Registry) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(missing, registry)
    problem = only(info.value.problems)
    assert problem.file == str(missing)
    assert "config file not found" in problem.message


def test_load_config_problems_name_the_file(tmp_path: Path, registry: Registry) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\ndestinations: {d: {type: nope}}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, registry)
    problem = only(info.value.problems)
    assert problem.file == str(path)
    assert problem.line == 2


# -- rules ----------------------------------------------------------------------------------------


def test_duplicate_rule_names_rejected(registry: Registry) -> None:
    problem = only(problems("""
        version: 1
        destinations: {d: {type: scripted}}
        rules:
          - {name: Same, event: schema_change, destinations: [d]}
          - {name: Other, event: schema_change, destinations: [d]}
          - {name: Same, event: metric_anomaly, destinations: [d]}
    """, registry))
    assert problem.path == "rules[2].name"
    assert problem.line == 6
    assert "'Same'" in problem.message
    assert "rules[0]" in problem.message


@pytest.mark.parametrize("event", ["freshness_violation", "[schema_change, metric_anomaly]"])
def test_changes_condition_needs_a_schema_change_rule(registry: Registry, event: str) -> None:
    problem = only(problems(f"""
        version: 1
        destinations: {{d: {{type: scripted}}}}
        rules:
          - name: r
            event: {event}
            conditions: {{changes: breaking}}
            destinations: [d]
    """, registry))
    assert problem.path == "rules[0].conditions.changes"
    assert "schema_change" in problem.message


@pytest.mark.parametrize("event", ["schema_change", "[freshness_violation, metric_anomaly]"])
def test_min_delay_hours_needs_a_freshness_rule(registry: Registry, event: str) -> None:
    problem = only(problems(f"""
        version: 1
        destinations: {{d: {{type: scripted}}}}
        rules:
          - name: r
            event: {event}
            conditions: {{min_delay_hours: 2}}
            destinations: [d]
    """, registry))
    assert problem.path == "rules[0].conditions.min_delay_hours"
    assert "freshness_violation" in problem.message


@pytest.mark.parametrize("changes", ["any", "breaking", "non_breaking", "[column_removed, Type_Changed]"])
def test_valid_changes_conditions(registry: Registry, changes: str) -> None:
    config = parse(f"""
        version: 1
        destinations: {{d: {{type: scripted}}}}
        rules:
          - {{name: r, event: schema_change, conditions: {{changes: {changes}}}, destinations: [d]}}
    """, registry)
    value = config.rules[0].model.conditions.changes
    if changes.startswith("["):
        assert value == ("column_removed", "type_changed")
    else:
        assert value == changes


@pytest.mark.parametrize("changes", ["breaknig", "[]", "['']", "5", "{type: column_removed}"])
def test_invalid_changes_condition(registry: Registry, changes: str) -> None:
    problem = only(problems(f"""
        version: 1
        destinations: {{d: {{type: scripted}}}}
        rules:
          - name: r
            event: schema_change
            conditions: {{changes: {changes}}}
            destinations: [d]
    """, registry))
    assert problem.path == "rules[0].conditions.changes"
    assert problem.line == 6
    assert "any, breaking, non_breaking" in problem.message or "change types" in problem.message


def test_invalid_changes_condition_message_names_the_value(registry: Registry) -> None:
    problem = only(problems("""
        version: 1
        destinations: {d: {type: scripted}}
        rules:
          - {name: r, event: schema_change, conditions: {changes: breaknig}, destinations: [d]}
    """, registry))
    assert "'breaknig' is not a change condition" in problem.message


@pytest.mark.parametrize(("conditions", "path"),
                         [("{min_severity: loud}", "rules[0].conditions.min_severity"),
                          ("{min_delay_hours: -1}", "rules[0].conditions.min_delay_hours")])
def test_invalid_condition_values(registry: Registry, conditions: str, path: str) -> None:
    problem = only(problems(f"""
        version: 1
        destinations: {{d: {{type: scripted}}}}
        rules:
          - {{name: r, event: freshness_violation, conditions: {conditions}, destinations: [d]}}
    """, registry))
    assert problem.path == path


def test_unknown_event_type_in_rule_with_suggestion(registry: Registry) -> None:
    problem = only(problems("""
        version: 1
        destinations: {d: {type: scripted}}
        rules:
          - {name: r, event: freshnes_violation, destinations: [d]}
    """, registry))
    assert problem.path == "rules[0].event"
    assert problem.line == 4
    assert "unknown event type 'freshnes_violation'" in problem.message
    assert "(did you mean 'freshness_violation'?)" in problem.message


def test_unknown_event_type_in_a_list_names_its_index(registry: Registry) -> None:
    problem = only(problems("""
        version: 1
        destinations: {d: {type: scripted}}
        rules:
          - name: r
            event:
              - schema_change
              - metric_anomally
            destinations: [d]
    """, registry))
    assert problem.path == "rules[0].event[1]"
    assert problem.line == 7
    assert "(did you mean 'metric_anomaly'?)" in problem.message


def test_plugin_registered_event_type_accepted(registry: Registry) -> None:
    text = """
        version: 1
        destinations: {d: {type: scripted}}
        rules:
          - {name: dbt, event: dbt_test_failed, destinations: [d]}
    """
    config = parse(text, registry)
    assert config.rules[0].model.event == ("dbt_test_failed",)
    # the same rule is rejected when no plugin registered the event type
    bare = Registry()
    bare.add_destination_type("scripted-owner", registry.destination_types["scripted"])
    problem = only(problems(text, bare))
    assert problem.path == "rules[0].event"
    assert "unknown event type 'dbt_test_failed'" in problem.message


def test_disabled_rule_still_validated(registry: Registry) -> None:
    problem = only(problems("""
        version: 1
        destinations: {d: {type: scripted}}
        rules:
          - {name: r, event: schema_change, destinations: [nope], enabled: false}
    """, registry))
    assert problem.path == "rules[0].destinations[0]"


# -- destinations ---------------------------------------------------------------------------------


def test_unknown_destination_type_lists_installed_types(registry: Registry) -> None:
    problem = only(problems("""
        version: 1
        destinations:
          pd: {type: pagerdty}
    """, registry))
    assert problem.path == "destinations.pd.type"
    assert problem.line == 3
    assert "unknown destination type 'pagerdty'" in problem.message
    assert "(did you mean 'pagerduty'?)" in problem.message
    for name in ("pagerduty", "slack", "email", "scripted"):
        assert name in problem.message


def test_missing_type_lists_installed_types(registry: Registry) -> None:
    problem = only(problems("""
        version: 1
        destinations:
          d: {script: [ok]}
    """, registry))
    assert problem.path == "destinations.d"
    assert "missing required key 'type'" in problem.message
    assert "scripted" in problem.message


def test_unknown_option_of_a_destination(registry: Registry) -> None:
    problem = only(problems("""
        version: 1
        destinations:
          d:
            type: scripted
            timeuot: 5
    """, registry))
    assert problem.path == "destinations.d.timeuot"
    assert problem.line == 5
    assert "unknown key 'timeuot'" in problem.message
    assert "(did you mean 'timeout'?)" in problem.message
    assert "valid keys:" in problem.message


@pytest.mark.parametrize(("option", "value"),
                         [("timeout", "0"), ("timeout", "fast"), ("max_attempts", "0"),
                          ("retry_deadline", "-5"), ("send_resolved", "maybe"), ("script", "ok")])
def test_invalid_common_option_values(registry: Registry, option: str, value: str) -> None:
    problem = only(problems(f"""
        version: 1
        destinations:
          d:
            type: scripted
            {option}: {value}
    """, registry))
    assert problem.path == f"destinations.d.{option}"
    assert problem.line == 5


@pytest.mark.parametrize("spec", ["5", "[scripted]", "null"])
def test_destination_must_be_a_mapping_or_url(registry: Registry, spec: str) -> None:
    problem = only(problems(f"version: 1\ndestinations:\n  d: {spec}\n", registry))
    assert problem.path == "destinations.d"
    assert "mapping with a 'type' key" in problem.message


def test_bare_string_with_unknown_scheme_reported(registry: Registry) -> None:
    problem = only(problems("""
        version: 1
        destinations:
          teams: nosuchscheme://tenant/abcdef
    """, registry))
    assert problem.path == "destinations.teams"
    assert problem.line == 3
    assert "no installed destination type handles 'nosuchscheme://' URLs" in problem.message


def test_bare_string_that_is_not_a_url_reported(registry: Registry) -> None:
    problem = only(problems("""
        version: 1
        destinations:
          teams: just some words
    """, registry))
    assert problem.path == "destinations.teams"
    assert "must be a URL" in problem.message


@pytest.mark.parametrize("name", ["bad name", "-leading-dash", "with/slash", "emoji✨", "_under"])
def test_invalid_destination_names(registry: Registry, name: str) -> None:
    found = by_path(problems(f"""
        version: 1
        destinations:
          "{name}": {{type: scripted}}
    """, registry))
    assert set(found) == {f"destinations.{name}"}
    assert "letters, digits" in found[f"destinations.{name}"].message


@pytest.mark.parametrize("name", ["off", "yes", "null", "true"])
def test_yaml_keyword_destination_name_gets_a_quoting_hint(registry: Registry, name: str) -> None:
    found = problems(f"""
        version: 1
        destinations:
          {name}: {{type: scripted}}
    """, registry)
    hints = [p for p in found if "put this destination's name in quotes" in p.message]
    assert len(hints) == 1
    assert hints[0].path.startswith("destinations.")


@pytest.mark.parametrize("name", ["off", "null"])
def test_yaml_keyword_destination_name_hint_points_at_the_key(registry: Registry, name: str) -> None:
    found = problems(f"""
        version: 1
        destinations:
          {name}: {{type: scripted}}
    """, registry)
    [hint] = [p for p in found if "put this destination's name in quotes" in p.message]
    assert hint.line == 3
    assert hint.path == f"destinations.{name}"


def test_yaml_keyword_destination_name_is_one_problem(registry: Registry) -> None:
    found = problems("""
        version: 1
        destinations:
          off: {type: scripted}
    """, registry)
    assert [p.path for p in found] == ["destinations.off"]


@pytest.mark.parametrize("name", ["pagerduty-data-platform", "slack_1", "team.alerts", "A1"])
def test_valid_destination_names(registry: Registry, name: str) -> None:
    config = parse(f"""
        version: 1
        destinations:
          "{name}": {{type: scripted}}
    """, registry)
    assert list(config.destinations) == [name]


def test_invalid_destination_name_referenced_by_a_rule_is_not_also_unknown(
        registry: Registry) -> None:
    found = by_path(problems("""
        version: 1
        destinations:
          "bad name": {type: scripted}
        rules:
          - {name: r, event: schema_change, destinations: ["bad name"]}
    """, registry))
    assert set(found) == {"destinations.bad name"}


# -- rate limits ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("120/minute", RateLimit(120, 60.0)),
        ("1/second", RateLimit(1, 1.0)),
        ("10/hour", RateLimit(10, 3600.0)),
        ("5 / minutes", RateLimit(5, 60.0)),
        ("2/SECOND", RateLimit(2, 1.0)),
        ("none", None),
        ("None", None),
    ],
)
def test_rate_limit_option(registry: Registry, text: str, expected: RateLimit | None) -> None:
    config = parse(f"""
        version: 1
        destinations:
          d: {{type: scripted, rate_limit: "{text}"}}
    """, registry)
    assert config.destinations["d"].rate_limit == expected


@pytest.mark.parametrize("text", ["fast", "0/minute", "120/day", "120", "/minute", "-1/second", ""])
def test_bad_rate_limit(registry: Registry, text: str) -> None:
    problem = only(problems(f"""
        version: 1
        destinations:
          d:
            type: scripted
            rate_limit: "{text}"
    """, registry))
    assert problem.path == "destinations.d.rate_limit"
    assert problem.line == 5
    assert "not a rate limit" in problem.message
    assert "120/minute" in problem.message


def test_rate_limit_str() -> None:
    assert str(RateLimit(120, 60.0)) == "120/minute"
    assert str(RateLimit(1, 1.0)) == "1/second"
    assert RateLimit.parse("120/minute") == RateLimit(120, 60.0)


# -- custom types in a fresh registry: HttpsUrl, defaults -----------------------------------------


class HookConfig(DestinationConfig):
    url: HttpsUrl


class HookSender:
    def __init__(self, config: HookConfig) -> None:
        self.config = config

    def send(self, notification: Any) -> Any:  # pragma: no cover - never sent in these tests
        raise AssertionError("not sent")


def hook_registry(**type_options: Any) -> Registry:
    registry = Registry()
    registry.add_destination_type("test-plugin", DestinationType("hook", HookConfig, HookSender,
                                                                 **type_options))
    return registry


def hook_config(url: str, **type_options: Any) -> Config:
    return parse(f"""
        version: 1
        destinations:
          h: {{type: hook, url: "{url}"}}
    """, hook_registry(**type_options))


@pytest.mark.parametrize("url", [
    "https://hooks.example.com/services/abc",
    "https://example.com:8443/x",
    "http://127.0.0.1:8080/hook",
    "http://127.9.8.7/hook",
    "http://localhost/hook",
    "http://LOCALHOST:9000/hook",
    "http://[::1]:9000/hook",
])
def test_https_url_accepts_https_and_loopback_http(url: str) -> None:
    config = hook_config(url)
    assert config.destinations["h"].config.url == url  # type: ignore[attr-defined]


@pytest.mark.parametrize("url", [
    "http://example.com/hook",
    "http://10.0.0.1/hook",
    "http://localhost.example.com/hook",
    "http://127.0.0.1.nip.io/hook",
    "ftp://example.com/hook",
    "ftp://127.0.0.1/hook",
    "file:///etc/passwd",
    "https:///no-host",
    "hooks.example.com/services/abc",
])
def test_https_url_rejects_everything_else(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        hook_config(url)
    problem = only(info.value.problems)
    assert problem.path == "destinations.h.url"
    assert problem.line == 3
    assert "must be an https:// URL" in problem.message
    assert "loopback" in problem.message


def test_missing_required_option_of_a_plugin_type() -> None:
    with pytest.raises(ConfigError) as info:
        parse("version: 1\ndestinations:\n  h: {type: hook}\n", hook_registry())
    problem = only(info.value.problems)
    assert problem.path == "destinations.h.url"
    assert problem.message == "missing required key 'url'"
    assert problem.line == 3


def test_send_resolved_default_comes_from_the_type() -> None:
    on = hook_config("https://example.com/x")
    assert on.destinations["h"].config.send_resolved is None
    assert on.destinations["h"].send_resolved is True
    off = hook_config("https://example.com/x", send_resolved_default=False)
    assert off.destinations["h"].send_resolved is False


@pytest.mark.parametrize(("type_default", "explicit"),
                         [(True, "false"), (False, "true"), (True, "true"), (False, "false")])
def test_explicit_send_resolved_wins(type_default: bool, explicit: str) -> None:
    config = parse(f"""
        version: 1
        destinations:
          h: {{type: hook, url: "https://example.com/x", send_resolved: {explicit}}}
    """, hook_registry(send_resolved_default=type_default))
    assert config.destinations["h"].send_resolved is (explicit == "true")


def test_scripted_send_resolved(registry: Registry) -> None:
    config = parse("""
        version: 1
        destinations:
          default: {type: scripted}
          quiet: {type: scripted, send_resolved: false}
    """, registry)
    assert config.destinations["default"].send_resolved is True
    assert config.destinations["quiet"].send_resolved is False


def test_builtin_send_resolved_defaults(registry: Registry) -> None:
    """SPEC §3: on for pagerduty and slack, off for email."""
    types = registry.destination_types
    assert types["pagerduty"].send_resolved_default is True
    assert types["slack"].send_resolved_default is True
    assert types["email"].send_resolved_default is False


def test_default_rate_limit_comes_from_the_type() -> None:
    limited = hook_config("https://example.com/x", default_rate_limit="1/second")
    assert limited.destinations["h"].rate_limit == RateLimit(1, 1.0)
    unlimited = hook_config("https://example.com/x")
    assert unlimited.destinations["h"].rate_limit is None
    overridden = parse("""
        version: 1
        destinations:
          h: {type: hook, url: "https://example.com/x", rate_limit: none}
    """, hook_registry(default_rate_limit="1/second"))
    assert overridden.destinations["h"].rate_limit is None


def test_describe_falls_back_to_the_type_title() -> None:
    config = hook_config("https://example.com/x", display_name="Hook")
    assert config.destinations["h"].describe() == "Hook"


# -- bare URL strings with a type that reads them -------------------------------------------------


def _from_url(url: str) -> dict[str, Any]:
    rest = url.split("://", 1)[1]
    if not rest:
        raise ValueError("the URL has no host")
    return {"url": f"https://{rest}"}


def url_registry(from_url: Any = _from_url) -> Registry:
    registry = Registry()
    registry.add_destination_type("test-plugin", DestinationType(
        "hook", HookConfig, HookSender, url_schemes=("hook",), from_url=from_url))
    return registry


def test_bare_url_destination_uses_the_type_for_its_scheme() -> None:
    config = parse("""
        version: 1
        destinations:
          h: hook://hooks.example.com/abc
    """, url_registry())
    dest = config.destinations["h"]
    assert dest.type.name == "hook"
    assert dest.config.url == "https://hooks.example.com/abc"  # type: ignore[attr-defined]


def test_bare_url_scheme_is_case_insensitive() -> None:
    config = parse("version: 1\ndestinations:\n  h: HOOK://hooks.example.com/abc\n", url_registry())
    assert config.destinations["h"].type.name == "hook"


def test_bare_url_the_type_cannot_read() -> None:
    with pytest.raises(ConfigError) as info:
        parse("version: 1\ndestinations:\n  h: \"hook://\"\n", url_registry())
    problem = only(info.value.problems)
    assert problem.path == "destinations.h"
    assert "cannot read this hook:// URL: the URL has no host" in problem.message


def test_bare_url_for_a_type_without_from_url() -> None:
    with pytest.raises(ConfigError) as info:
        parse("version: 1\ndestinations:\n  h: hook://example.com\n", url_registry(from_url=None))
    assert "no installed destination type handles 'hook://' URLs" in only(info.value.problems).message


def test_bare_url_options_are_validated_by_the_type() -> None:
    with pytest.raises(ConfigError) as info:
        parse("version: 1\ndestinations:\n  h: hook://example.com/x\n",
              url_registry(from_url=lambda url: {"url": url.replace("hook://", "http://")}))
    problem = only(info.value.problems)
    assert problem.path == "destinations.h.url"
    assert "https" in problem.message


def test_rule_names_that_give_one_dedup_key_are_rejected(registry: Registry) -> None:
    found = problems("""
        version: 1
        destinations:
          d: {type: scripted}
        rules:
          - {name: Prod Breaking, event: schema_change, destinations: [d]}
          - {name: prod-breaking, event: schema_change, destinations: [d]}
          - {name: 本番の破壊的変更, event: schema_change, destinations: [d]}
          - {name: テスト環境, event: schema_change, destinations: [d]}
    """, registry)
    problem = only(found)
    assert problem.path == "rules[1].name"
    assert "gives the same dedup key as 'Prod Breaking' in rules[0]" in problem.message
