"""The ``dbt`` source: a dbt target directory's artifacts as alerts.

``armor-notify send target/ --source dbt`` after ``dbt build`` (and ``dbt source freshness``).
It reads ``run_results.json`` and ``manifest.json`` and, when present, ``sources.json``, from the
directory given (or its ``target/``), or the one file given with the manifest beside it:

- a test that fails, errors or warns → ``validity_failure`` (``warn`` is warning severity,
  ``fail``/``error`` critical), its asset the model, seed, snapshot or source it tests;
- a stale source (``warn``/``error`` in ``sources.json``) → ``freshness_violation``, with the
  delay, the threshold it broke and when the data last loaded;
- a model, seed or snapshot that errored, or a freshness check that could not run →
  ``pipeline_error`` (an event type this plugin registers), critical.

The asset is the dbt node: its qualified relation name (``database.schema.alias``) as the name,
its ``unique_id`` as the id, the database as the data source, its schema, its kind (``model``,
``source``…), its tags, ``owner=<meta.owner>`` (the node's, its group's) as a tag, and the
environment from the run's ``DBT_ENV_CUSTOM_ENV_ENVIRONMENT`` (dbt's ``metadata.env``). Alert
ids are ``dbt:<unique_id>`` (``dbt:<unique_id>:freshness`` for freshness), stable across runs
for the same test, so a repeat is recognised, and each test or source is its own incident
(dedup key ``dbt-<unique_id>``). ``$ARMOR_NOTIFY_DBT_DOCS_URL``, an https URL with
``{unique_id}`` in it, makes each alert's link (e.g. your hosted ``dbt docs``).

Every result is a check result for the check-state ledger (``check: {id, status, run_id}``,
the run's ``invocation_id`` as the run): a test's ``unique_id`` (``pass``; ``fail`` and
``warn`` fail; ``error`` could not run), ``freshness`` of a source, ``build`` of a model, seed
or snapshot (``success`` passes, ``error`` fails). Passes are kept as passed results
(``SourceAlert.passed``): the ledger resolves a failing check's incident with them, and sends
nothing for a check that keeps passing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from armor_notify import hookimpl
from armor_notify.sources import Source, SourceAlert, SourceError, SourceInput

DOCS_URL_ENV = "ARMOR_NOTIFY_DBT_DOCS_URL"
PIPELINE_ERROR = "pipeline_error"
ARTIFACTS = ("run_results.json", "manifest.json", "sources.json")
TEST_FAILED = {"fail": "critical", "error": "critical", "warn": "warning"}
CHECK_STATUS = {"pass": "pass", "fail": "fail", "warn": "fail", "error": "error"}
STALE = {"warn": "warning", "error": "critical"}
BUILD_KINDS = ("model.", "seed.", "snapshot.")
HOURS = {"minute": 1 / 60, "hour": 1.0, "day": 24.0}


class Artifacts:
    """The artifacts of one dbt run, and the manifest that describes their nodes."""

    def __init__(self, given: SourceInput) -> None:
        self.given = given
        self.files = _locate(given)
        self.manifest = self._json("manifest.json")
        if not isinstance(self.manifest, dict) or not isinstance(
                self.manifest.get("nodes"), dict):
            raise SourceError([given.problem("not a dbt manifest (no nodes)", "",
                                             str(self.files["manifest.json"]))])
        self.nodes: Mapping[str, Any] = self.manifest["nodes"]
        self.sources: Mapping[str, Any] = self.manifest.get("sources") or {}
        self.groups: Mapping[str, Any] = self.manifest.get("groups") or {}
        self.docs_url = os.environ.get(DOCS_URL_ENV, "")

    def _json(self, name: str) -> Any:
        path = self.files.get(name)
        return None if path is None else self.given.read_json(path)

    def results(self, name: str) -> tuple[list[Any], Mapping[str, Any], str]:
        """A results file's ``results``, its ``metadata`` and its path ("" when absent)."""
        data = self._json(name)
        if data is None:
            return [], {}, ""
        path = str(self.files[name])
        if not isinstance(data, dict) or not isinstance(data.get("results"), list):
            raise SourceError([self.given.problem(f"not a dbt {name} (no results)", "", path)])
        metadata = _mapping(data.get("metadata"))
        return data["results"], metadata, path

    def asset(self, unique_id: str, environment: str | None) -> dict[str, Any] | None:
        node = self.sources.get(unique_id) if unique_id.startswith("source.") else \
            self.nodes.get(unique_id)
        if not isinstance(node, dict):
            return None
        relation = node.get("identifier") if unique_id.startswith("source.") else (
            node.get("alias") or node.get("name"))
        parts = [str(p) for p in (node.get("database"), node.get("schema"), relation) if p]
        config = _mapping(node.get("config"))
        # (armor_notify.lineage.dbt_owner reads a manifest the same way; plugins keep to the
        # plugin API, so the few lines are kept here too.)
        owner = next((m["owner"] for m in (node.get("meta"), config.get("meta"),
                                           node.get("source_meta"), self._group(node))
                      if isinstance(m, dict) and isinstance(m.get("owner"), (str, dict))), None)
        if isinstance(owner, dict):  # a group's owner: {name, email}
            owner = owner.get("name") or owner.get("email")
        tags = [str(t) for t in node.get("tags") or [] if isinstance(t, str)]
        asset: dict[str, Any] = {
            "id": unique_id,
            "name": ".".join(parts) or unique_id,
            "kind": str(node.get("resource_type") or unique_id.split(".", 1)[0]),
            "tags": tags + ([f"owner={owner}"] if owner else []),
        }
        group = self._group(node)
        owners = [str(o) for o in (owner, group and group.get("name")) if o]
        if owners:
            asset["owners"] = list(dict.fromkeys(owners))
        if node.get("database"):
            asset["data_source"] = str(node["database"])
        if node.get("schema"):
            asset["schema"] = str(node["schema"])
        if environment:
            asset["environment"] = environment
        return asset

    def _group(self, node: Mapping[str, Any]) -> Mapping[str, Any] | None:
        group = self.groups.get(f"group.{node.get('package_name')}.{node.get('group')}")
        return group if isinstance(group, dict) else None

    def link(self, unique_id: str) -> dict[str, str]:
        if not self.docs_url.lower().startswith("https://") or "{unique_id}" not in self.docs_url:
            return {}
        return {"link": self.docs_url.replace("{unique_id}", unique_id)}


def _locate(given: SourceInput) -> dict[str, Path]:
    """The artifacts' paths: in the directory (or its ``target/``), or beside the file given."""
    if given.path is None:
        raise given.fail("the dbt source reads a target directory or its files, not a "
                         "request body: give the path")
    if not given.path.exists():
        raise given.fail("no such file or directory")
    base = given.path if given.is_directory else given.path.parent
    if given.is_directory and not (base / "manifest.json").is_file() and (
            base / "target" / "manifest.json").is_file():
        base = base / "target"  # the project directory: its target/
    if not given.is_directory and given.path.name not in ARTIFACTS:
        raise given.fail(f"expected one of {', '.join(ARTIFACTS)}, or the target directory")
    found = {name: base / name for name in ARTIFACTS if (base / name).is_file()}
    if not given.is_directory:  # only the file given, with the manifest that explains it
        found = {n: p for n, p in found.items() if n in (given.path.name, "manifest.json")}
    if "manifest.json" not in found:
        raise given.fail(f"no manifest.json in {base}: dbt writes it to the target directory "
                         "with every run; give that directory")
    if "run_results.json" not in found and "sources.json" not in found:
        raise given.fail(f"no run_results.json or sources.json in {base}: run `dbt build` "
                         "(or `dbt test`, `dbt source freshness`) first")
    return found


def read_artifacts(given: SourceInput) -> Sequence[SourceAlert]:
    """One alert per failed or warning test, stale source and failed build step; passes kept."""
    artifacts = Artifacts(given)
    made: list[SourceAlert] = []
    results, metadata, path = artifacts.results("run_results.json")
    environment = _environment(metadata)
    when = metadata.get("generated_at")
    run = metadata.get("invocation_id")
    for i, result in enumerate(results):
        item = _run_result(artifacts, result, environment, when)
        if item is not None:
            made.append(SourceAlert(f"results[{i}]", _with_run(item[0], run), path,
                                    passed=item[1]))
    results, metadata, path = artifacts.results("sources.json")
    run = metadata.get("invocation_id")
    for i, result in enumerate(results):
        item = _freshness(artifacts, result, _environment(metadata) or environment)
        if item is not None:
            made.append(SourceAlert(f"results[{i}]", _with_run(item[0], run), path,
                                    passed=item[1]))
    return made


def _with_run(alert: dict[str, Any], run: Any) -> dict[str, Any]:
    """The alert's check result marked with the dbt invocation that produced it."""
    if isinstance(run, str) and run:
        alert["check"] = {**alert["check"], "run_id": run}
    return alert


def _environment(metadata: Mapping[str, Any]) -> str | None:
    env = metadata.get("env")
    value = env.get("ENVIRONMENT") or env.get("environment") if isinstance(env, dict) else None
    return str(value) if value else None


def _run_result(artifacts: Artifacts, result: Any, environment: str | None,
                when: Any) -> tuple[dict[str, Any], bool] | None:
    if not isinstance(result, dict) or not isinstance(result.get("unique_id"), str):
        return None
    uid, status = result["unique_id"], str(result.get("status", ""))
    message = str(result.get("message") or "").strip()
    if uid.startswith("test."):
        if status not in TEST_FAILED and status != "pass":
            return None  # skipped: an upstream failure, reported on its own
        node = _mapping(artifacts.nodes.get(uid))
        target = node.get("attached_node") or next(
            (n for n in _mapping(node.get("depends_on")).get("nodes", [])
             if not n.startswith("test.")), None)
        asset = artifacts.asset(str(target), environment) if target else None
        if asset is None:
            return None
        kind = _mapping(node.get("test_metadata")).get("name") or node.get("name") or uid
        column = node.get("column_name")
        on = f"{asset['name']}.{column}" if column else asset["name"]
        rows = result.get("failures")
        verb = {"warn": "warned", "error": "errored", "pass": "passed"}.get(status, "failed")
        counted = f" ({rows} row{'s' * (rows != 1)})" if isinstance(rows, int) and rows else ""
        return _result_alert(artifacts, uid, asset, message, when, {
            "event_type": "validity_failure",
            "severity": TEST_FAILED.get(status, "info"),
            "title": f"dbt test {kind} {verb} on {on}{counted}",
            "check": {"id": uid, "status": CHECK_STATUS.get(status, "fail")},
        }), status == "pass"
    if uid.startswith(BUILD_KINDS) and status in ("error", "success"):
        asset = artifacts.asset(uid, environment)
        if asset is None:
            return None
        built = status == "success"
        return _result_alert(artifacts, uid, asset, "" if built else message, when, {
            "event_type": PIPELINE_ERROR,
            "severity": "info" if built else "critical",
            "title": f"dbt {asset['kind']} {asset['name']} "
                     f"{'built' if built else 'failed to build'}",
            "check": {"id": "build", "status": "pass" if built else "fail"},
        }), built
    return None


def _result_alert(artifacts: Artifacts, uid: str, asset: dict[str, Any], message: str,
                  when: Any, fields: dict[str, Any]) -> dict[str, Any]:
    """The alert for one result of ``run_results.json``: its own ``fields``, and what every
    such alert carries (id, asset, dedup key, link, dbt's message, the run's time)."""
    alert = {"id": f"dbt:{uid}", "asset": asset, "dedup_key": f"dbt-{uid}",
             **artifacts.link(uid), **fields}
    if message:
        alert["description"] = message
    if isinstance(when, str):
        alert["occurred_at"] = when
    return alert


def _freshness(artifacts: Artifacts, result: Any,
               environment: str | None) -> tuple[dict[str, Any], bool] | None:
    if not isinstance(result, dict) or not isinstance(result.get("unique_id"), str):
        return None
    uid, status = result["unique_id"], str(result.get("status", ""))
    asset = artifacts.asset(uid, environment)
    if asset is None:
        return None
    base = {"id": f"dbt:{uid}:freshness", "asset": asset, "dedup_key": f"dbt-freshness-{uid}",
            **artifacts.link(uid),
            "check": {"id": "freshness", "status": "pass" if status == "pass" else (
                "error" if status == "runtime error" else "fail")}}
    if isinstance(result.get("snapshotted_at"), str):
        base["occurred_at"] = result["snapshotted_at"]
    if status == "runtime error":
        return {**base, "event_type": PIPELINE_ERROR, "severity": "critical",
                "title": f"dbt could not check the freshness of {asset['name']}",
                "description": str(result.get("error") or result.get("message") or "")
                or "runtime error"}, False
    if status not in STALE and status != "pass":
        return None
    ago = result.get("max_loaded_at_time_ago_in_s")
    delay = ago / 3600 if isinstance(ago, (int, float)) and ago >= 0 else None
    criteria = _mapping(result.get("criteria"))
    threshold = _hours(criteria.get("error_after" if status == "error" else "warn_after"))
    alert: dict[str, Any] = {
        **base,
        "event_type": "freshness_violation",
        "severity": STALE.get(status, "info"),
        "title": f"{asset['name']} is {'fresh' if status == 'pass' else 'stale'}"
                 + (f": last loaded {delay:.1f} hours ago" if delay is not None else ""),
    }
    if delay is not None:
        alert["freshness"] = {"delay_hours": round(delay, 3)}
        if threshold is not None:
            alert["freshness"]["threshold_hours"] = threshold
        if isinstance(result.get("max_loaded_at"), str):
            alert["freshness"]["last_updated_at"] = result["max_loaded_at"]
    return alert, status == "pass"


def _mapping(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one (artifacts of other versions)."""
    return value if isinstance(value, dict) else {}


def _hours(after: Any) -> float | None:
    if not isinstance(after, dict):
        return None
    count, period = after.get("count"), after.get("period")
    if not isinstance(count, (int, float)) or period not in HOURS:
        return None
    return float(count) * HOURS[period]


DBT = Source(
    name="dbt",
    description="dbt artifacts: failed tests, stale sources and failed models of a target dir",
    read=read_artifacts,
    reads=("directory", "file"),
)


@hookimpl
def register_sources(register: Callable[[Source], None]) -> None:
    """Register the ``dbt`` source."""
    register(DBT)


@hookimpl
def register_event_types(register: Callable[[str], None]) -> None:
    """``pipeline_error``: a model, seed or snapshot failed to build."""
    register(PIPELINE_ERROR)
