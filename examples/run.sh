#!/usr/bin/env bash
# The main job on the examples: validate the example config, show where every sample alert goes,
# and run `send --dry-run` on the whole batch. Nothing leaves this machine.
# Real values from the environment win; the demo values below only fill in what is unset.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."
if [ ! -x .venv/bin/armor-notify ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q .
fi
export PAGERDUTY_INTEGRATION_KEY="${PAGERDUTY_INTEGRATION_KEY:-a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6}"
export SLACK_WEBHOOK_URL="${SLACK_WEBHOOK_URL:-https://hooks.slack.com/services/T00000000/B00000000/DEMOdemoDEMOdemoDEMOdemo}"
export SLACK_DEV_WEBHOOK_URL="${SLACK_DEV_WEBHOOK_URL:-https://hooks.slack.com/services/T00000000/B11111111/DEVdevDEVdevDEVdevDEVdev0}"
export SMTP_PASSWORD="${SMTP_PASSWORD:-demo-password}"
cli=.venv/bin/armor-notify
config=examples/armor-notify.yaml

echo "== armor-notify plugins"
$cli plugins
echo
echo "== armor-notify validate --config $config"
$cli validate --config "$config"
echo
echo "== armor-notify route (every sample alert)"
for alert in examples/alerts/*.json; do
  [ "$(basename "$alert")" = batch.json ] && continue
  echo "-- $alert"
  $cli route "$alert" --config "$config"
done
echo "== armor-notify route --source alertmanager (an Alertmanager webhook payload)"
$cli route examples/sources/alertmanager_webhook.json --source alertmanager --config "$config"
echo "== armor-notify route --source great_expectations (a GX checkpoint result)"
$cli route examples/sources/great_expectations/checkpoint_result.json --source great_expectations --config "$config"
echo "== armor-notify send --dry-run examples/alerts/batch.json"
$cli send examples/alerts/batch.json --config "$config" --dry-run
