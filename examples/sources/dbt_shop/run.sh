#!/usr/bin/env bash
# Build this dbt project (a failing test, a warning test and a stale source among passing ones)
# and route its results with armor-notify's dbt source. Nothing leaves the machine.
#   bash examples/sources/dbt_shop/run.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
cd "$root"
if [ ! -x .venv/bin/armor-notify ]; then
  python3 -m venv .venv && .venv/bin/pip install -q .
fi
if [ ! -x .venv-dbt/bin/dbt ]; then  # dbt in a venv of its own (its pins are its own)
  python3 -m venv .venv-dbt && .venv-dbt/bin/pip install -q -r tests/dbt-requirements.txt
fi
export DO_NOT_TRACK=1 DBT_SEND_ANONYMOUS_USAGE_STATS=false
export DBT_ENV_CUSTOM_ENV_ENVIRONMENT=production   # the alerts' environment
export DBT_DUCKDB_PATH="$here/target/shop.duckdb"
mkdir -p "$here/target"
dbt() { "$root/.venv-dbt/bin/dbt" "$@" --project-dir "$here" --profiles-dir "$here"; }
dbt seed > /dev/null
dbt source freshness > /dev/null || true   # a stale source is what we want to see
dbt build > /dev/null || true              # so is a failing test
export PAGERDUTY_INTEGRATION_KEY="${PAGERDUTY_INTEGRATION_KEY:-a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6}"
export SLACK_WEBHOOK_URL="${SLACK_WEBHOOK_URL:-https://hooks.slack.com/services/T00000000/B00000000/DEMOdemoDEMOdemoDEMOdemo}"
export SLACK_DEV_WEBHOOK_URL="${SLACK_DEV_WEBHOOK_URL:-https://hooks.slack.com/services/T00000000/B11111111/DEVdevDEVdevDEVdevDEVdev0}"
export SMTP_PASSWORD="${SMTP_PASSWORD:-demo-password}"
# The one command: what the example config's rules do with this run's results.
.venv/bin/armor-notify route "$here/target" --source dbt --config examples/armor-notify.yaml
