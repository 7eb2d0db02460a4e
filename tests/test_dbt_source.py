"""The ``dbt`` source against artifacts written by a real ``dbt build`` (issue 16).

The project is ``examples/sources/dbt_shop`` (seeds, a source with a freshness rule, staging and
mart models, tests that pass, fail and warn), copied to a temporary directory and built with
dbt-core and dbt-duckdb from ``.venv-dbt`` (``tests/dbt-requirements.txt``; ``.ci/run`` makes
it), or the ``dbt`` that ``$ARMOR_NOTIFY_TEST_DBT`` names. Without one the tests are skipped,
saying why, and under ``CI=true`` they fail.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from armor_notify_plugins.dbt import DBT, PIPELINE_ERROR
from conftest import EXAMPLES, run_cli
from fake_pagerduty import FakePagerDuty
from fake_slack import FakeSlack

from armor_notify.alert import BUILTIN_EVENT_TYPES, Alert
from armor_notify.errors import AlertError
from armor_notify.intake import read_source
from armor_notify.sources import Source, SourceError, SourceInput
from armor_notify.testing import SourceConformance

pytestmark = pytest.mark.slow  # dbt runs as a real process

ROOT = Path(__file__).resolve().parent.parent
PROJECT = EXAMPLES / "sources" / "dbt_shop"
KINDS = [*BUILTIN_EVENT_TYPES, PIPELINE_ERROR]
NOT_NULL = "dbt:test.shop.not_null_fct_orders_customer_id.16fe324f7b"
ACCEPTED = "dbt:test.shop.accepted_values_fct_orders_status__completed__returned.e925867ad4"
STALE = "dbt:source.shop.raw.raw_orders:freshness"
PD_KEY = "0123456789abcdef0123456789abcdef"


def dbt_executable() -> str:
    found = os.environ.get("ARMOR_NOTIFY_TEST_DBT") or str(ROOT / ".venv-dbt" / "bin" / "dbt")
    if Path(found).is_file():
        return found
    reason = ("no dbt: make .venv-dbt (python3 -m venv .venv-dbt && .venv-dbt/bin/pip install "
              "-r tests/dbt-requirements.txt) or set $ARMOR_NOTIFY_TEST_DBT")
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"dbt tests cannot run under CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


def dbt(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DO_NOT_TRACK": "1", "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
           "DBT_DUCKDB_PATH": str(project / "target" / "shop.duckdb"),
           "DBT_ENV_CUSTOM_ENV_ENVIRONMENT": "production"}
    return subprocess.run([dbt_executable(), *args, "--profiles-dir", str(project),
                           "--project-dir", str(project)], env=env, capture_output=True,
                          text=True, timeout=240, check=False)


def build(project: Path) -> None:
    """What a team's job runs: load the seeds, check source freshness, build and test."""
    for args, expected in ((("seed",), 0), (("source", "freshness"), 1), (("build",), 1)):
        done = dbt(project, *args)
        assert done.returncode == expected, f"dbt {' '.join(args)}: {done.stdout[-3000:]}"


@functools.cache
def built_target() -> Path:
    """The example project, built once per test session in a directory of its own."""
    project = Path(tempfile.mkdtemp(prefix="armor-notify-dbt-")) / "shop"
    atexit.register(shutil.rmtree, project.parent, True)
    shutil.copytree(PROJECT, project, ignore=shutil.ignore_patterns("target", "logs"))
    build(project)
    return project / "target"


@pytest.fixture
def built() -> Path:
    return built_target()


class TestDbtConformance(SourceConformance):
    """The dbt source keeps the contract every source keeps (``armor_notify.testing``)."""

    def source(self) -> Source:
        return DBT

    def event_types(self) -> list[str]:
        return [PIPELINE_ERROR]

    def good_inputs(self) -> list[tuple[SourceInput, int]]:
        target = built_target()
        # Every result is a check result (3 failures, and 8 passes: tests, builds, fresh
        # sources), passes too: they resolve.
        return [(SourceInput.from_path(target), 11),
                (SourceInput.from_path(target / "run_results.json"), 10)]

    def bad_inputs(self) -> list[tuple[SourceInput, str]]:
        broken = Path(tempfile.mkdtemp(prefix="armor-notify-dbt-bad-"))
        atexit.register(shutil.rmtree, broken, True)
        (broken / "manifest.json").write_text("[]")
        (broken / "run_results.json").write_text(json.dumps({"results": []}))
        return [(SourceInput.from_path(broken), "not a dbt manifest"),
                (SourceInput.from_bytes(b"{}"), "reads a target directory")]


def alerts_of(target: Path, passed: list[Alert] | None = None) -> dict[str, Alert]:
    """The failures (passes go to ``passed``)."""
    return {a.id: a for a in read_source(DBT, SourceInput.from_path(target), KINDS,
                                         passed=[] if passed is None else passed)}


def test_failed_and_warning_tests_and_a_stale_source_become_alerts(built: Path) -> None:
    passed: list[Alert] = []
    alerts = alerts_of(built, passed)
    assert set(alerts) == {NOT_NULL, ACCEPTED, STALE}
    failed, warned, stale = alerts[NOT_NULL], alerts[ACCEPTED], alerts[STALE]
    assert (failed.event_type, failed.severity.value) == ("validity_failure", "critical")
    assert (warned.event_type, warned.severity.value) == ("validity_failure", "warning")
    assert failed.title == "dbt test not_null failed on shop.main.fct_orders.customer_id (1 row)"
    assert failed.description == "Got 1 result, configured to fail if != 0"
    asset = failed.asset
    assert (asset.id, asset.name, asset.data_source, asset.schema_name, asset.kind) == (
        "model.shop.fct_orders", "shop.main.fct_orders", "shop", "main", "model")
    assert asset.tags == ("gold", "finance", "owner=analytics-engineering")
    assert asset.environment == "production"  # DBT_ENV_CUSTOM_ENV_ENVIRONMENT of the run
    assert failed.dedup_key == "dbt-test.shop.not_null_fct_orders_customer_id.16fe324f7b"
    assert (stale.event_type, stale.severity.value) == ("freshness_violation", "critical")
    assert stale.asset.name == "shop.main.raw_orders" and stale.asset.kind == "source"
    assert "owner=data-platform" in stale.asset.tags
    assert stale.freshness is not None and stale.freshness.threshold_hours == 24.0
    assert stale.freshness.delay_hours > 24 and stale.freshness.last_updated_at is not None
    # The passing tests are kept, as resolves waiting for the check-state feature.
    assert {p.id for p in passed} >= {
        "dbt:test.shop.unique_stg_customers_customer_id.c7614daada",
        "dbt:test.shop.not_null_stg_customers_customer_id.e2cfb1f9aa"}
    assert all(p.status == "resolved" for p in passed)


def test_ids_are_stable_across_runs(built: Path, tmp_path: Path) -> None:
    project = tmp_path / "shop"
    shutil.copytree(PROJECT, project, ignore=shutil.ignore_patterns("target", "logs"))
    build(project)
    first, second = alerts_of(built), alerts_of(project / "target")
    assert set(first) == set(second)
    assert {a.dedup_key for a in first.values()} == {a.dedup_key for a in second.values()}


def test_a_model_that_fails_to_build_is_a_pipeline_error_and_its_skipped_tests_are_not_alerts(
        tmp_path: Path) -> None:
    project = tmp_path / "shop"
    shutil.copytree(PROJECT, project, ignore=shutil.ignore_patterns("target", "logs"))
    (project / "models" / "marts" / "fct_orders.sql").write_text(
        "select order_id, missing_column from {{ ref('stg_orders') }}\n")
    assert dbt(project, "seed").returncode == 0
    assert dbt(project, "build").returncode == 1
    alerts = alerts_of(project / "target")
    broken = alerts["dbt:model.shop.fct_orders"]
    assert (broken.event_type, broken.severity.value) == (PIPELINE_ERROR, "critical")
    assert broken.title == "dbt model shop.main.fct_orders failed to build"
    assert broken.description and "missing_column" in broken.description
    assert NOT_NULL not in alerts and ACCEPTED not in alerts  # skipped: not failures of their own


def test_one_file_with_its_manifest_or_the_project_directory(built: Path) -> None:
    assert set(alerts_of(built / "sources.json")) == {STALE}
    assert set(alerts_of(built / "run_results.json")) == {NOT_NULL, ACCEPTED}
    assert set(alerts_of(built.parent)) == {NOT_NULL, ACCEPTED, STALE}  # finds its target/


def test_a_directory_without_artifacts_says_what_to_run(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"nodes": {}}))
    with pytest.raises(SourceError, match=r"run `dbt build`"):
        read_source(DBT, SourceInput.from_path(tmp_path), KINDS)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "run_results.json").write_text(json.dumps({"results": []}))
    with pytest.raises(SourceError, match=r"no manifest\.json in"):
        read_source(DBT, SourceInput.from_path(tmp_path / "empty" / "run_results.json"), KINDS)
    with pytest.raises(SourceError, match=r"no manifest\.json in"):
        read_source(DBT, SourceInput.from_path(tmp_path / "empty"), KINDS)
    with pytest.raises(SourceError, match="no such file or directory"):
        read_source(DBT, SourceInput.from_path(tmp_path / "missing"), KINDS)


def test_a_docs_url_template_makes_the_links(built: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARMOR_NOTIFY_DBT_DOCS_URL", "https://docs.example.com/#!/{unique_id}")
    link = alerts_of(built)[NOT_NULL].link
    assert link == "https://docs.example.com/#!/test.shop.not_null_fct_orders_customer_id.16fe324f7b"


def test_sent_from_the_command_line_to_pagerduty_and_slack(built: Path, tmp_path: Path) -> None:
    with FakePagerDuty() as pd, FakeSlack() as slack:
        config = tmp_path / "armor-notify.yaml"
        config.write_text(json.dumps({"version": 1, "destinations": {
            "pd": {"type": "pagerduty", "integration_key": PD_KEY, "url": pd.url},
            "slack": {"type": "slack", "webhook_url": slack.url}},
            "rules": [
                {"name": "Gold data", "event": ["validity_failure", "freshness_violation"],
                 "scope": {"tags": {"any": ["gold"]}},
                 "conditions": {"min_severity": "critical"}, "destinations": ["pd"]},
                {"name": "Everything dbt", "event": ["validity_failure", "freshness_violation",
                                                     PIPELINE_ERROR],
                 "destinations": ["slack"]}]}))
        state = {"ARMOR_NOTIFY_STATE_DIR": str(tmp_path / "state")}
        sent = run_cli("send", str(built), "--source", "dbt", "-c", str(config), env=state)
        assert sent.returncode == 0, sent.stderr
        # The same artifacts again (a retry): the same run (dbt's invocation id), so the check
        # ledger counts nothing twice and nothing is written or sent.
        again = run_cli("send", str(built), "--source", "dbt", "-c", str(config), "--json",
                        env=state)
        assert again.returncode == 0, again.stderr
        repeated = json.loads(again.stdout)
        assert repeated["deliveries"] == [] and len(repeated["alerts"]) == 11
        assert all("already recorded" in a["check"] for a in repeated["alerts"])
    assert [e["dedup_key"] for e in pd.events] == [
        "dbt-test.shop.not_null_fct_orders_customer_id.16fe324f7b"]  # the critical gold failure
    assert pd.events[0]["payload"]["severity"] == "critical"
    assert len(slack.requests) == 3  # every failure, warning and stale source, once


def test_the_source_refuses_a_request_body() -> None:
    with pytest.raises(AlertError, match="reads a target directory or its files"):
        read_source(DBT, SourceInput.from_bytes(b"{}"), KINDS)


def test_the_manifest_of_a_real_build_is_its_lineage(built: Path) -> None:
    from armor_notify.lineage import load

    graph = load(built / "manifest.json")
    assert graph.upstream("shop.main.fct_orders", depth=5) == [
        ("shop.main.stg_customers", 1), ("shop.main.stg_orders", 1),
        ("shop.main.raw_customers", 2), ("shop.main.raw_orders", 2)]
    # The dbt source's alerts name their assets as the lineage does (the stale source here).
    stale = alerts_of(built)[STALE]
    assert stale.asset.owners == ("data-platform",)
    assert graph.find(stale.asset.name, stale.asset.id) is not None
    assert ("shop.main.fct_orders", 2) in graph.downstream(stale.asset.name, depth=5)


FANOUT = 12


def fanout_project(tmp_path: Path) -> Path:
    """The example project with twelve more models built from the stale source, each with a
    failing test; half owned by team-a, half by team-b."""
    project = tmp_path / "shop"
    shutil.copytree(PROJECT, project, ignore=shutil.ignore_patterns("target", "logs"))
    models = project / "models" / "fanout"
    models.mkdir()
    entries = []
    for i in range(FANOUT):
        (models / f"fan_{i}.sql").write_text(
            "select id as order_id, cast(null as integer) as reviewed_by "
            "from {{ source('raw', 'raw_orders') }}\n")
        owner = "team-a" if i < FANOUT // 2 else "team-b"
        entries.append(f"  - name: fan_{i}\n    config: {{meta: {{owner: {owner}}}}}\n"
                       "    columns:\n      - name: reviewed_by\n        data_tests: [not_null]\n")
    (models / "fanout.yml").write_text("version: 2\n\nmodels:\n" + "".join(entries))
    build(project)
    return project / "target"


def test_one_page_per_root_cause_from_a_real_dbt_build(tmp_path: Path) -> None:
    """Issue 19 as a user tries it: the source goes stale and the twelve models built from it
    fail their tests in the same run: one PagerDuty incident naming them, one message to each
    owner; the source recovers: the incident resolves, and the one model still failing pages
    on its own. An asset outside the lineage pages normally."""
    target = fanout_project(tmp_path)
    with FakePagerDuty() as pd, FakeSlack("/services/T1/B1/team-a") as team_a, \
            FakeSlack("/services/T1/B2/team-b") as team_b:
        config = tmp_path / "armor-notify.yaml"
        config.write_text(json.dumps({
            "version": 1,
            "destinations": {
                "pd": {"type": "pagerduty", "integration_key": PD_KEY, "url": pd.url},
                "slack-team-a": {"type": "slack", "webhook_url": team_a.url},
                "slack-team-b": {"type": "slack", "webhook_url": team_b.url}},
            "owners": {"team-a": "slack-team-a", "team-b": "slack-team-b"},
            "rules": [{"name": "Data", "event": ["validity_failure", "freshness_violation",
                                                 PIPELINE_ERROR],
                       "conditions": {"min_severity": "critical"}, "destinations": ["pd"]}],
            "lineage": {"dbt_manifest": str(target / "manifest.json"), "grace": "0s"}}))
        env = {"ARMOR_NOTIFY_STATE_DIR": str(tmp_path / "state")}
        sent = run_cli("send", str(target), "--source", "dbt", "-c", str(config), env=env)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        (page,) = pd.events
        assert page["event_action"] == "trigger"
        assert page["dedup_key"] == "dbt-freshness-source.shop.raw.raw_orders"
        radius = page["payload"]["custom_details"]["description"]
        assert all(f"shop.main.fan_{i}" in radius for i in range(FANOUT)), radius
        assert "× check started failing: folded into shop.main.raw_orders" in sent.stdout
        assert len(team_a.requests) == len(team_b.requests) == 1  # once per owner

        outside = tmp_path / "outside.json"
        outside.write_text(json.dumps({
            "event_type": "validity_failure", "severity": "critical", "title": "Nulls",
            "asset": {"id": "crm.accounts", "name": "crm.public.accounts"},
            "check": {"id": "not_null_accounts_id", "status": "fail"}}))
        routed = run_cli("route", str(outside), "-c", str(config), env=env)
        assert "crm.public.accounts is not in the lineage: pages on its own" in routed.stdout
        assert run_cli("send", str(outside), "-c", str(config), env=env).returncode == 0
        assert [e["payload"]["summary"] for e in pd.events][-1].startswith("Nulls")

        # The next run: the source is fresh again and every test passes but fan_11's.
        for name in ("sources.json", "run_results.json"):
            data = json.loads((target / name).read_text())
            data["metadata"]["invocation_id"] = "next-run"
            for item in data["results"]:
                if "fan_11" not in item["unique_id"]:
                    item["status"] = "pass" if item["status"] in ("fail", "warn", "error") \
                        else item["status"]
            (target / name).write_text(json.dumps(data))
        again = run_cli("send", str(target), "--source", "dbt", "-c", str(config), env=env)
        assert again.returncode == 0, again.stdout + again.stderr
        resolve = pd.events[2]
        assert (resolve["event_action"], resolve["dedup_key"]) == (
            "resolve", "dbt-freshness-source.shop.raw.raw_orders")
        # A worker's sweep releases what still fails once the grace (0 s here) is over.
        worker = run_cli("worker", "--once", "-c", str(config), env=env)
        assert worker.returncode == 0, worker.stdout + worker.stderr
        released = pd.events[3]
        assert released["event_action"] == "trigger"
        assert "fan_11" in released["dedup_key"] and len(pd.events) == 4
