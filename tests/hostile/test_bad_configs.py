"""Hostile and broken config files: bounded YAML (size, nesting, alias expansion, recursive
aliases, files that are not files), merge keys, base-60 times, and one bounded duration parser.
Each bad input is a located :class:`ConfigError` (exit 2 on the command line), never a hang or
an internal error."""

from __future__ import annotations

import os
import textwrap
import zoneinfo
from pathlib import Path

import pytest
from conftest import run_cli

from armor_notify.config import Config, load_config, parse_config
from armor_notify.durations import MAX_DURATION, parse_duration
from armor_notify.errors import ConfigError, Problem
from armor_notify.plugins import Registry

WEBHOOK = "https://hooks.slack.com/services/T000/B000/XXXX"


def parse(text: str, registry: Registry) -> Config:
    return parse_config(textwrap.dedent(text).lstrip("\n"), registry, source="c.yaml",
                        environ={})


def problems(text: str, registry: Registry) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        parse(text, registry)
    return info.value.problems


def only(found: list[Problem]) -> Problem:
    assert len(found) == 1, found
    return found[0]


def billion_laughs() -> str:
    lines = ["version: 1", 'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", '
                               '"lol"]']
    for level in range(1, 10):
        lines.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * 9)}]")
    return "\n".join([*lines, "destinations: {}", ""])


# -- YAML bounds -----------------------------------------------------------------------------------


def test_billion_laughs_is_refused_without_expanding_it(registry: Registry) -> None:
    problem = only(problems(billion_laughs(), registry))
    assert "more than 100,000 values once its aliases (*name) are expanded" in problem.message
    assert problem.line is not None


@pytest.mark.parametrize("text", [
    "version: 1\ndestinations: &a [*a]\n",
    "version: 1\ndestinations: &a {d: *a}\n",
    "version: 1\nx: &a\n  - y: [1, *a]\ndestinations: {}\n",
])
def test_an_alias_inside_itself_is_refused(text: str, registry: Registry) -> None:
    problem = only(problems(text, registry))
    assert "used inside the collection it names" in problem.message
    assert problem.line == 2


def test_deep_flow_nesting_is_refused_at_its_line(registry: Registry) -> None:
    text = "version: 1\nrules: []\ndestinations: " + "[" * 3000 + "]" * 3000 + "\n"
    problem = only(problems(text, registry))
    assert "nested too deeply (more than 50 levels)" in problem.message
    assert problem.line == 3


def test_deep_block_nesting_is_refused_at_its_line(registry: Registry) -> None:
    text = "version: 1\ndestinations:\n" + "".join(
        " " * (i + 1) + f"k{i}:\n" for i in range(300))
    problem = only(problems(text, registry))
    assert "nested too deeply" in problem.message
    assert problem.line == 51  # the key whose value goes one level too deep


def test_aliases_chained_deeper_than_the_limit_are_refused(registry: Registry) -> None:
    lines = ["version: 1", "a0: &a0 [x]"] + [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, 80)]
    problem = only(problems("\n".join([*lines, "destinations: {}", ""]), registry))
    assert "nested too deeply (more than 50 levels, aliases expanded)" in problem.message


@pytest.mark.parametrize(("char", "shown"), [("\x00", "U+0000"), ("\x07", "U+0007"),
                                             ("\x1b", "U+001B")])
def test_characters_yaml_does_not_allow_are_located(char: str, shown: str,
                                                   registry: Registry) -> None:
    text = f"version: 1\ndestinations: {{}}\n# a comment with {char} in it\n"
    problem = only(problems(text, registry))
    assert problem.message == (f"not valid YAML: the character {shown} is not allowed in a YAML "
                               "file")
    assert problem.line == 3


def test_a_config_larger_than_1_mib_is_refused(registry: Registry, tmp_path: Path) -> None:
    big = "version: 1\n# " + "x" * (1024 * 1024) + "\ndestinations: {}\n"
    assert "larger than 1 MiB" in only(problems(big, registry)).message
    path = tmp_path / "big.yaml"
    path.write_text(big)
    with pytest.raises(ConfigError) as info:
        load_config(path, registry)
    assert "larger than 1 MiB" in only(info.value.problems).message


@pytest.mark.parametrize("kind", ["device", "fifo", "directory"])
def test_only_regular_files_are_read(kind: str, registry: Registry, tmp_path: Path) -> None:
    if kind == "device":
        path = Path("/dev/zero")
    elif kind == "fifo":
        path = tmp_path / "pipe.yaml"
        os.mkfifo(path)  # no writer: opening it for reading would block
    else:
        path = tmp_path
    with pytest.raises(ConfigError) as info:
        load_config(path, registry)
    problem = only(info.value.problems)
    assert problem.file == str(path)
    assert "not a regular file" in problem.message


# -- merge keys ----------------------------------------------------------------------------------


def test_merge_keys_share_destination_options(registry: Registry) -> None:
    config = parse(f"""
        version: 1
        destinations:
          team-a: &slack
            type: slack
            webhook_url: {WEBHOOK}
            timeout: 5
            rate_limit: none
          team-b:
            <<: *slack
            timeout: 7
          team-c:
            <<: [{{max_attempts: 2, timeout: 9}}, *slack]
        rules: []
        """, registry)
    a, b, c = (config.destinations[n].config for n in ("team-a", "team-b", "team-c"))
    assert (a.timeout, a.rate_limit, a.max_attempts) == (5, "none", 5)
    assert (b.timeout, b.rate_limit) == (7, "none")  # its own key wins over the merged one
    assert (c.timeout, c.max_attempts, c.rate_limit) == (9, 2, "none")  # the first merge wins


def test_errors_in_merged_options_point_at_the_line_they_are_written_on(
        registry: Registry) -> None:
    found = problems(f"""
        version: 1
        destinations:
          team-a: &slack
            type: slack
            webhook_url: {WEBHOOK}
            max_attempts: 0
          team-b:
            <<: *slack
            timeout: -1
            timeout: 3
        rules: []
        """, registry)
    lines = {(p.path, p.line) for p in found}
    assert ("destinations.team-a.max_attempts", 6) in lines
    assert ("destinations.team-b.max_attempts", 6) in lines  # merged from line 6
    assert ("destinations.team-b.timeout", 10) in lines  # a real repeat is still reported
    assert not any("<<" in p.path or "<<" in p.message for p in found)
    assert len(found) == 3


def test_merging_something_that_is_not_a_mapping_is_located(registry: Registry) -> None:
    problem = only(problems("""
        version: 1
        base: &base [1, 2]
        destinations:
          d:
            <<: *base
        """, registry))
    assert "a merge key (<<) takes a mapping" in problem.message
    assert problem.line == 2


# -- YAML 1.1 base-60 numbers --------------------------------------------------------------------


def test_an_unquoted_time_is_recognised_and_the_error_says_to_quote_it(
        registry: Registry) -> None:
    found = {p.path: p for p in problems("""
        version: 1
        destinations: {d: {type: scripted}}
        rules:
          - name: Office
            event: schema_change
            destinations: [d]
            schedule:
              windows: [{start: "09:00", end: 17:30}, {days: sat, start: 9:30, end: "12:00"}]
        """, registry)}
    end = found["rules[0].schedule.windows[0].end"]
    assert "unquoted 17:30 as the number 1050" in end.message
    assert "'17:30'" in end.message
    assert end.line == 8
    assert "'09:30'" in found["rules[0].schedule.windows[1].start"].message


def test_an_unquoted_time_in_a_blackout_or_a_duration_is_named(registry: Registry) -> None:
    found = {p.path: p.message for p in problems("""
        version: 1
        destinations: {d: {type: scripted}}
        blackouts:
          - {name: Evening, start: "2026-12-24", end: 17:30}
        rules:
          - {name: r, event: schema_change, destinations: [d], cooldown: 1:30}
        """, registry)}
    assert "unquoted 17:30 as the number 1050" in found["blackouts[0].end"]
    assert "'2026-12-24 17:30'" in found["blackouts[0].end"]
    assert "1:30 as the base-60 number 90" in found["rules[0].cooldown"]


@pytest.mark.parametrize("when", ["9999-12-31", "0001-01-01 10:00", "3000-01-01"])
def test_blackout_dates_are_bounded(when: str, registry: Registry) -> None:
    found = {p.path: p.message for p in problems(f"""
        version: 1
        destinations: {{d: {{type: scripted}}}}
        blackouts:
          - {{name: Far, start: "2026-12-24", end: "{when}", yearly: true}}
        """, registry)}
    assert "between 1970-01-01 and 2999-12-31" in found["blackouts[0].end"]


# -- durations -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("7d", 604800), ("7D", 604800), ("1h30m", 5400), ("1H30M", 5400), ("2h 30m", 9000),
    ("1w", 604800), ("1d12h", 129600), ("90", 90), (90, 90), (1.5, 1.5), ("0", 0),
    ("45s", 45), ("1.5h", 5400),
])
def test_one_duration_parser(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(("text", "says"), [
    (float("inf"), "finite"), (float("nan"), "finite"), ("-5m", "not a duration"),
    (-5, "cannot be negative"), ("5y", "not a duration"), ("1h30", "not a duration"),
    ("", "not a duration"), (True, "a duration is"), ("9" * 400, "finite"),
    (MAX_DURATION + 1, "at most 3650d"), ("3651d", "at most 3650d"),
])
def test_bad_durations(text: object, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_duration(text)


def test_every_config_duration_is_finite_and_bounded(registry: Registry) -> None:
    found = {p.path: p for p in problems(f"""
        version: 1
        defaults: {{repeat_window: .inf}}
        destinations:
          chat:
            type: slack
            webhook_url: {WEBHOOK}
            digest: {{window: .inf}}
            retry_deadline: .inf
            timeout: .nan
            retry_backoff: 1e400
        rules:
          - name: r
            event: freshness_violation
            destinations: [chat]
            cooldown: 99999999999
            conditions: {{min_delay_hours: .inf}}
            digest: {{window: 4000d}}
        """, registry)}
    assert set(found) == {
        "defaults.repeat_window", "destinations.chat.digest.window",
        "destinations.chat.retry_deadline", "destinations.chat.timeout",
        "destinations.chat.retry_backoff", "rules[0].cooldown",
        "rules[0].conditions.min_delay_hours", "rules[0].digest.window"}
    assert "finite" in found["destinations.chat.digest.window"].message
    assert "at most 3650d" in found["rules[0].cooldown"].message
    assert "finite" in found["rules[0].conditions.min_delay_hours"].message
    assert found["destinations.chat.digest.window"].line == 7


def test_config_durations_take_the_same_forms(registry: Registry) -> None:
    config = parse(f"""
        version: 1
        defaults: {{repeat_window: 10M}}
        destinations:
          chat: {{type: slack, webhook_url: "{WEBHOOK}", timeout: 30s, retry_deadline: 1h30m,
                  digest: {{window: 1H}}}}
        rules:
          - {{name: r, event: schema_change, destinations: [chat], cooldown: 1d12h}}
        """, registry)
    chat = config.destinations["chat"].config
    assert config.defaults.repeat_window == 600
    assert (chat.timeout, chat.retry_deadline) == (30, 5400)
    assert chat.digest is not None and chat.digest.window == 3600
    assert config.rules[0].model.cooldown == 129600


# -- time zones without a system database ----------------------------------------------------------


def test_zones_resolve_from_tzdata_without_a_system_zone_database(registry: Registry) -> None:
    zoneinfo.reset_tzpath(to=[])
    zoneinfo.ZoneInfo.clear_cache()
    try:
        config = parse("""
            version: 1
            defaults: {timezone: Europe/Paris}
            destinations: {d: {type: scripted}}
            rules:
              - name: r
                event: schema_change
                destinations: [d]
                schedule: {timezone: America/New_York, windows: [{start: "09:00", end: "17:00"}]}
            """, registry)
        assert config.defaults.timezone == "Europe/Paris"
        assert zoneinfo.ZoneInfo("Europe/Paris").key == "Europe/Paris"
    finally:
        zoneinfo.reset_tzpath()
        zoneinfo.ZoneInfo.clear_cache()


# -- on the command line -------------------------------------------------------------------------


@pytest.mark.slow
def test_bad_configs_exit_2_on_the_command_line(tmp_path: Path) -> None:
    laughs = tmp_path / "laughs.yaml"
    laughs.write_text(billion_laughs())
    merged = tmp_path / "merged.yaml"
    merged.write_text(f"version: 1\ndestinations:\n  a: &s {{type: slack, webhook_url: "
                      f"'{WEBHOOK}'}}\n  b:\n    <<: *s\n    timeout: .inf\nrules: []\n")
    for path, says in ((laughs, "once its aliases (*name) are expanded"),
                       (Path("/dev/zero"), "not a regular file"),
                       (merged, "merged.yaml:6: destinations.b.timeout: a duration must be "
                                "a finite number")):
        result = run_cli("validate", "--config", str(path), timeout=30)
        assert result.returncode == 2, result.stderr
        assert says in result.stderr
        assert "Traceback" not in result.stderr and "internal error" not in result.stderr


@pytest.mark.slow
def test_outbox_purge_uses_the_same_duration_parser() -> None:
    for good in ("7D", "1h30m", "0", "2w"):
        result = run_cli("outbox", "purge", "--older-than", good)
        assert result.returncode == 0, result.stderr
    for bad, says in ((".inf", "not a duration"), ("5y", "not a duration"),
                      ("4000d", "at most 3650d")):
        result = run_cli("outbox", "purge", "--older-than", bad)
        assert result.returncode == 2, result.stderr
        assert says in result.stderr and "Traceback" not in result.stderr
