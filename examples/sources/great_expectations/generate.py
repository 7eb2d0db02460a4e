"""Writes the Great Expectations results the ``great_expectations`` source is tested against.

Run with Great Expectations 1.x installed (not a dependency of armor-notify; a venv of its own):

    python3 -m venv /tmp/gx && /tmp/gx/bin/pip install 'great-expectations==1.24.1'
    /tmp/gx/bin/python examples/sources/great_expectations/generate.py

It validates a small orders table (pandas) with an ephemeral GX context, once with a suite that
fails (two expectations broken, one kept) and once with one that passes, through a checkpoint,
and writes what GX itself serialises: the checkpoint result (its name, run id, success and
``run_results``, each value ``ExpectationSuiteValidationResult.to_json_dict``) and one
validation result on its own, as GX's validation store keeps them.
"""

from __future__ import annotations

import json
from pathlib import Path

import great_expectations as gx
import pandas as pd

HERE = Path(__file__).resolve().parent

orders = pd.DataFrame({
    "order_id": [1, 2, 3, 4, 5],
    "customer_id": [1, 2, None, 3, 1],
    "status": ["completed", "completed", "completed", "returned", "lost_in_transit"],
    "amount": [120.5, 80.0, 15.25, 42.0, 9.99],
})

context = gx.get_context(mode="ephemeral")
source = context.data_sources.add_pandas("warehouse")
asset = source.add_dataframe_asset("orders")
batch = asset.add_batch_definition_whole_dataframe("all orders")

failing = context.suites.add(gx.ExpectationSuite(name="orders_quality"))
failing.add_expectation(gx.expectations.ExpectColumnValuesToNotBeNull(column="customer_id"))
failing.add_expectation(gx.expectations.ExpectColumnValuesToBeInSet(
    column="status", value_set=["completed", "returned"]))
failing.add_expectation(gx.expectations.ExpectColumnValuesToBeUnique(column="order_id"))
passing = context.suites.add(gx.ExpectationSuite(name="orders_volume"))
passing.add_expectation(gx.expectations.ExpectTableRowCountToBeBetween(min_value=1,
                                                                       max_value=1000))

definitions = [context.validation_definitions.add(gx.ValidationDefinition(
    name=f"{suite.name} on orders", data=batch, suite=suite)) for suite in (failing, passing)]
checkpoint = context.checkpoints.add(gx.Checkpoint(name="nightly", validation_definitions=definitions))
result = checkpoint.run(batch_parameters={"dataframe": orders})

# CheckpointResult's own .json() fails on its RunIdentifier (GX 1.24), so its fields are written
# one by one, each in the form GX serialises it: run_results keyed by the validation result
# identifier's string, each value ExpectationSuiteValidationResult.to_json_dict().
whole = {
    "name": result.name,
    "run_id": result.run_id.to_json_dict(),
    "success": result.success,
    "run_results": {str(key): value.to_json_dict() for key, value in result.run_results.items()},
}
(HERE / "checkpoint_result.json").write_text(
    json.dumps(whole, indent=2, sort_keys=True, default=str) + "\n")
first = next(iter(result.run_results.values()))
(HERE / "validation_result.json").write_text(
    json.dumps(first.to_json_dict(), indent=2, sort_keys=True, default=str) + "\n")
print("wrote", sorted(p.name for p in HERE.glob("*.json")))
