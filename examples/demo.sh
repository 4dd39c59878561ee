#!/usr/bin/env bash
# `make demo`: store a secret in a throw-away embedded store, then read it back through
# the resolver, as a task launch would. Nothing is left behind.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

MESOS_SECRETS_HOME=$(mktemp -d)
export MESOS_SECRETS_HOME
trap 'rm -rf "$MESOS_SECRETS_HOME"' EXIT

echo "## a throw-away store in $MESOS_SECRETS_HOME"
echo
echo '$ printf %s "$DB_PASSWORD" | mesos-secrets secret put /demo/db username=@user.txt password=-'
printf 'app\n' >"$MESOS_SECRETS_HOME/user.txt"
printf '%s' "correct horse battery staple" |
    mesos-secrets secret put /demo/db username=@"$MESOS_SECRETS_HOME/user.txt" password=-
rm "$MESOS_SECRETS_HOME/user.txt"
echo
echo '$ mesos-secrets secret ls'
mesos-secrets secret ls
echo
echo "## the secrets a task asks for, and what the resolver gives it"
python "$here/resolve_task_secrets.py" "$here/task.json"
