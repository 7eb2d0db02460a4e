"""The ``great_expectations`` source: Great Expectations 1.x validation results as alerts.

``armor-notify send result.json --source great_expectations`` reads, as GX serialises them:

- one validation result (``ExpectationSuiteValidationResult.to_json_dict()``, what a
  checkpoint's ``StoreValidationResultAction`` keeps);
- a checkpoint result: an object whose ``run_results`` maps validation identifiers to those;
- a list of validation results, or a directory of such files (a validations store).

One alert per validation that failed: ``validity_failure``, its severity the highest of its
failed expectations' own (GX 1.x expectations carry ``severity``: critical, warning, info), the
failed expectations listed in the description (type, column, how many rows; never the values,
which are data), the asset from the batch (``data_asset_name``, its ``datasource_name`` as the
data source). The id, ``gx:<datasource>/<asset>:<suite>``, is the same for every run of that
suite on that asset, so a repeat is recognised. Each validation is a check result for the
check-state ledger (``check: {id: <suite>, status, run_id}``: ``pass``, ``fail``, or ``error``
when every failed expectation raised an exception): a pass resolves the suite's incident,
and passes of a suite that keeps passing send nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from armor_notify import hookimpl
from armor_notify.sources import Source, SourceAlert, SourceError, SourceInput

RANK = {"info": 0, "warning": 1, "critical": 2}
MAX_LISTED = 20
"""Failed expectations listed in one description; more are counted."""


def read_results(given: SourceInput) -> Sequence[SourceAlert]:
    """One alert per failed validation in a validation result, checkpoint result or store."""
    made: list[SourceAlert] = []
    for file, where, validation in _validations(given):
        made.append(_validation(given, file, where, validation))
    return made


def _validations(given: SourceInput) -> Iterator[tuple[str | None, str, dict[str, Any]]]:
    if given.is_directory:
        assert given.path is not None
        files = sorted(p for p in given.path.rglob("*.json") if p.is_file())
        if not files:
            raise given.fail("no validation results (*.json) in this directory")
        for path in files:
            yield from _in(given, given.read_json(path), str(path))
    else:
        yield from _in(given, given.read_json(), None)


def _in(given: SourceInput, data: Any,
        file: str | None) -> Iterator[tuple[str | None, str, dict[str, Any]]]:
    if isinstance(data, dict) and isinstance(data.get("run_results"), dict):
        for key, value in data["run_results"].items():
            yield file, f"run_results[{key!r}]", _checked(given, value, f"run_results[{key!r}]",
                                                          file)
    elif isinstance(data, dict) and "results" in data:
        yield file, "", _checked(given, data, "", file)
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield file, f"[{i}]", _checked(given, value, f"[{i}]", file)
    else:
        raise SourceError([given.problem(
            "expected a Great Expectations validation result (with \"results\"), a checkpoint "
            "result (with \"run_results\") or a list of validation results", "", file)])


def _checked(given: SourceInput, value: Any, where: str, file: str | None) -> dict[str, Any]:
    if not isinstance(value, dict) or not isinstance(value.get("results"), list) \
            or not isinstance(value.get("success"), bool):
        raise SourceError([given.problem("expected a validation result with \"success\" and "
                                         "\"results\"", where, file)])
    return value


def _validation(given: SourceInput, file: str | None, where: str,
                validation: dict[str, Any]) -> SourceAlert:
    meta = _mapping(validation.get("meta"))
    batch = _mapping(meta.get("active_batch_definition"))
    asset_name = batch.get("data_asset_name")
    datasource = batch.get("datasource_name")
    if not isinstance(asset_name, str) or not asset_name:
        raise SourceError([given.problem("names no data asset (meta.active_batch_definition."
                                         "data_asset_name)", where or "meta", file)])
    suite = str(validation.get("suite_name") or "expectations")
    failed = [r for r in validation["results"] if isinstance(r, dict) and r.get("success") is False]
    evaluated = len([r for r in validation["results"] if isinstance(r, dict)])
    asset_id = f"{datasource}/{asset_name}" if datasource else asset_name
    run = _mapping(meta.get("run_id"))
    raised = [r for r in failed if _mapping(r.get("exception_info")).get("raised_exception")]
    check: dict[str, Any] = {"id": suite, "status": "pass" if validation["success"] else (
        "error" if failed and len(raised) == len(failed) else "fail")}
    if isinstance(run.get("run_time"), str):
        check["run_id"] = f"{run.get('run_name') or 'run'}@{run['run_time']}"
    alert: dict[str, Any] = {
        "id": f"gx:{asset_id}:{suite}",
        "event_type": "validity_failure",
        "check": check,
        "severity": _severity(failed),
        "title": f"{suite} failed on {asset_name}: {len(failed)} of {evaluated} expectations"
        if not validation["success"] else f"{suite} passed on {asset_name}",
        "asset": {"id": asset_id, "name": asset_name,
                  **({"data_source": str(datasource)} if datasource else {})},
        "dedup_key": f"gx-{asset_id}-{suite}",
    }
    if failed:
        alert["description"] = _describe(failed)
    when = meta.get("validation_time") or _mapping(meta.get("run_id")).get("run_time")
    if isinstance(when, str):
        alert["occurred_at"] = when
    return SourceAlert(where or "validation", alert, file, passed=bool(validation["success"]))


def _severity(failed: list[dict[str, Any]]) -> str:
    found = [str(_mapping(r.get("expectation_config")).get("severity", "critical")).lower()
             for r in failed]
    return max(found, key=lambda s: RANK.get(s, 2), default="critical") if found else "info"


def _describe(failed: list[dict[str, Any]]) -> str:
    lines = []
    for result in failed[:MAX_LISTED]:
        config = _mapping(result.get("expectation_config"))
        kwargs = _mapping(config.get("kwargs"))
        kind = str(config.get("type") or config.get("expectation_type") or "expectation")
        column = f" on {kwargs['column']}" if isinstance(kwargs.get("column"), str) else ""
        outcome = _mapping(result.get("result"))
        count, total = outcome.get("unexpected_count"), outcome.get("element_count")
        if isinstance(count, int) and isinstance(total, int):
            detail = f": {count} of {total} rows"
        elif isinstance(outcome.get("observed_value"), (int, float)):
            detail = f": observed {outcome['observed_value']}"
        elif _mapping(result.get("exception_info")).get("raised_exception"):
            detail = ": raised an exception"
        else:
            detail = ""
        lines.append(f"- {kind}{column}{detail}")
    if len(failed) > MAX_LISTED:
        lines.append(f"- and {len(failed) - MAX_LISTED} more")
    return "Failed expectations:\n" + "\n".join(lines)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


GREAT_EXPECTATIONS = Source(
    name="great_expectations",
    description="Great Expectations 1.x validation or checkpoint results (JSON)",
    read=read_results,
    reads=("file", "body", "directory"),
)


@hookimpl
def register_sources(register: Callable[[Source], None]) -> None:
    """Register the ``great_expectations`` source."""
    register(GREAT_EXPECTATIONS)
