#!/usr/bin/env bash
# `make demo`: store a secret in a throw-away embedded store, run a Marathon-style app
# whose environment and files come from it, and show that nothing is left behind.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

MESOS_SECRETS_HOME=$(mktemp -d)
export MESOS_SECRETS_HOME
trap 'rm -rf "$MESOS_SECRETS_HOME"' EXIT

if [[ -t 1 ]]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
say() { printf '\n%s$ %s%s\n' "$bold" "$*" "$plain"; }

echo "## a throw-away store in $MESOS_SECRETS_HOME"
say 'printf %s "$DB_PASSWORD" | mesos-secrets secret put /demo/db username=@user.txt password=-'
printf 'app' >"$MESOS_SECRETS_HOME/user.txt"
printf '%s' "correct horse battery staple" |
    mesos-secrets secret put /demo/db username=@"$MESOS_SECRETS_HOME/user.txt" password=-
rm "$MESOS_SECRETS_HOME/user.txt"
say 'mesos-secrets secret ls'
mesos-secrets secret ls

say "mesos-secrets validate examples/app.json"
mesos-secrets validate "$here/app.json"
say "mesos-secrets task-info examples/app.json   # what Mesos would get: references only"
mesos-secrets task-info "$here/app.json" | python -c '
import json, sys
task = json.load(sys.stdin)
for v in task["command"]["environment"]["variables"]:
    print(" env ", v["name"], "<-", json.dumps(v.get("secret", {}).get("reference", v.get("value"))))
for v in task["container"]["volumes"]:
    print(" file", v["container_path"], "<-", json.dumps(v["source"]["secret"]["reference"]), v["mode"])'

if [[ $(id -u) -ne 0 ]]; then
    echo; echo "(not root: SECRET volumes need root, so the run below is skipped)"
    exit 0
fi
say "mesos-secrets run examples/app.json"
mesos-secrets run "$here/app.json"
say "grep -c mesos-secrets /proc/self/mountinfo   # mounts left after the run"
grep -c mesos-secrets /proc/self/mountinfo || true
