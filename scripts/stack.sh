#!/usr/bin/env bash
# The production-like stack on loopback, every part on its production backend:
#
#   PostgreSQL            127.0.0.1:$HITL_PG_PORT (5433)  Debian's postgresql package, its own data directory
#   S3-compatible server  http://127.0.0.1:$HITL_S3_PORT (9000)  moto's standalone server (moto[server])
#   MLflow server         http://127.0.0.1:5000  tracking and registry on PostgreSQL, artifacts on S3
#   Dagster webserver     http://127.0.0.1:3000  instance on PostgreSQL (deploy/dagster.postgres.yaml)
#   Dagster daemon        sensors, schedules and the run queue, same instance
#
# usage: scripts/stack.sh up         everything above (what `make stack` runs)
#        scripts/stack.sh services   PostgreSQL and the S3 server only (what CI needs for the integration tests)
#        scripts/stack.sh down       stop everything this script started (what `make stack-down` runs)
#        scripts/stack.sh status     what is running, and where
#        scripts/stack.sh exec CMD   run CMD with the stack's environment (e.g. .venv/bin/hitl models)
#
# State, pid files and logs live in .hitl/stack/ (HITL_STACK_DIR). The environment every part reads
# is written to .hitl/stack/stack.env (mode 600: it holds the database password, generated on first
# start); `set -a; . .hitl/stack/stack.env; set +a` gives a shell the same configuration.
# moto keeps objects in memory: each start of the S3 server begins empty, and the databases are
# recreated with it so nothing points at objects that are gone. The PostgreSQL cluster itself is kept.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$REPO/.venv}
case "$VENV" in /*) ;; *) VENV=$REPO/$VENV ;; esac
STACK_DIR=${HITL_STACK_DIR:-$REPO/.hitl/stack}
HOST=127.0.0.1
PG_PORT=${HITL_PG_PORT:-5433}
S3_PORT=${HITL_S3_PORT:-9000}
MLFLOW_PORT=${HITL_MLFLOW_PORT:-5000}
DAGSTER_PORT=${HITL_DAGSTER_PORT:-3000}
REVIEW_PORT=${HITL_REVIEW_PORT:-8765}
PG_USER=hitl
OBJECT_BUCKET=${HITL_STACK_OBJECT_BUCKET:-hitl-objects}
MLFLOW_BUCKET=${HITL_STACK_MLFLOW_BUCKET:-hitl-mlflow}
ENV_FILE=$STACK_DIR/stack.env

say() { printf '%s\n' "$*"; }
die() { printf 'stack: %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }
port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
# A pid from a pid file is ours only while it still runs a program from this virtual environment.
ours() { alive "${1:-}" && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF "$VENV/bin/"; }
pid_of() { [ -f "$STACK_DIR/$1.pid" ] && cat "$STACK_DIR/$1.pid" || true; }
rel() { case "$1" in "$REPO"/*) printf '%s' "${1#"$REPO"/}" ;; *) printf '%s' "$1" ;; esac; }

log_tail() {
    local file=$1
    [ -f "$file" ] || return 0
    printf -- '--- last lines of %s ---\n' "$(rel "$file")" >&2
    tail -n 30 "$file" >&2 || true
}

# --- PostgreSQL ------------------------------------------------------------------------------

pg_bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

ensure_postgres_installed() {
    if [ -n "$(pg_bindir)" ] && [ -x "$(pg_bindir)/initdb" ]; then
        return 0
    fi
    say "postgresql: not installed; installing Debian's package ..."
    local sudo=""
    if ! is_root; then
        command -v sudo >/dev/null && sudo -n true 2>/dev/null || die "PostgreSQL is not installed: run 'apt-get install postgresql' as root"
        sudo="sudo -n"
    fi
    command -v apt-get >/dev/null || die "PostgreSQL is not installed and there is no apt-get: install PostgreSQL 13 or newer"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    [ -x "$(pg_bindir)/initdb" ] || die "installing postgresql did not provide initdb"
}

# PostgreSQL refuses to run as root: as root, every server command runs as the package's postgres user.
as_pg() {
    if is_root; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

pg_paths() {
    PG_BIN=$(pg_bindir)
    if [ -f "$STACK_DIR/pgdata.path" ]; then
        PG_DATA=$(cat "$STACK_DIR/pgdata.path")
    else
        PG_DATA=${HITL_PG_DATA:-$STACK_DIR/pgdata}
    fi
    PG_SOCK=$PG_DATA
    if [ $(( ${#PG_SOCK} + 20 )) -gt 100 ]; then  # unix socket paths are limited to ~107 bytes
        PG_SOCK=/tmp/hitl-pg-sock-$PG_PORT
    fi
}

prepare_pg_dirs() {
    mkdir -p "$STACK_DIR"
    if is_root; then
        mkdir -p "$PG_DATA"
        chown postgres:postgres "$PG_DATA"
        if ! runuser -u postgres -- test -w "$PG_DATA" 2>/dev/null; then
            # The postgres user cannot reach the repository (a home directory of mode 700, say).
            rmdir "$PG_DATA" 2>/dev/null || true
            PG_DATA=/var/tmp/hitl-stack-pg-$PG_PORT
            PG_SOCK=$PG_DATA
            mkdir -p "$PG_DATA"
            chown postgres:postgres "$PG_DATA"
            say "postgresql: the postgres user cannot write under $(rel "$STACK_DIR"); data directory $PG_DATA"
        fi
        chmod 700 "$PG_DATA"
    else
        mkdir -p "$PG_DATA"
        chmod 700 "$PG_DATA"
    fi
    printf '%s\n' "$PG_DATA" >"$STACK_DIR/pgdata.path"
    if [ "$PG_SOCK" != "$PG_DATA" ]; then
        mkdir -p "$PG_SOCK"
        is_root && chown postgres:postgres "$PG_SOCK"
        chmod 700 "$PG_SOCK"
    fi
}

pg_running() { [ -n "${PG_BIN:-}" ] && [ -f "$PG_DATA/PG_VERSION" ] && as_pg "$PG_BIN/pg_ctl" status -D "$PG_DATA" >/dev/null 2>&1; }

pg_password() {
    local file=$STACK_DIR/pg_password
    if [ ! -s "$file" ]; then
        (umask 077 && od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$file")
    fi
    cat "$file"
}

psql_admin() { as_pg "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" -U postgres -d postgres "$@"; }

start_postgres() {
    ensure_postgres_installed
    pg_paths
    prepare_pg_dirs
    if pg_running; then
        say "postgresql: already running (data $(rel "$PG_DATA"))"
    else
        if port_open "$PG_PORT"; then
            die "port $PG_PORT is taken by another process: set HITL_PG_PORT to a free port"
        fi
        if [ ! -f "$PG_DATA/PG_VERSION" ]; then
            say "postgresql: initdb $(rel "$PG_DATA") ($("$PG_BIN/postgres" --version))"
            as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -E UTF8 --locale=C \
                --auth-local=trust --auth-host=scram-sha-256 >"$STACK_DIR/initdb.log" 2>&1 || { log_tail "$STACK_DIR/initdb.log"; die "initdb failed"; }
            printf "\ninclude_if_exists = 'hitl_stack.conf'\n" | as_pg tee -a "$PG_DATA/postgresql.conf" >/dev/null
        fi
        # Loopback only; the unix socket sits in a directory only the server's user can enter.
        printf "listen_addresses = '%s'\nport = %s\nunix_socket_directories = '%s'\nmax_connections = 200\nsynchronous_commit = off\n" \
            "$HOST" "$PG_PORT" "$PG_SOCK" | as_pg tee "$PG_DATA/hitl_stack.conf" >/dev/null
        as_pg "$PG_BIN/pg_ctl" start -D "$PG_DATA" -l "$PG_DATA/server.log" -w -t 60 >/dev/null \
            || { log_tail "$PG_DATA/server.log"; die "PostgreSQL did not start"; }
        say "postgresql: started on $HOST:$PG_PORT (data $(rel "$PG_DATA"))"
    fi
    ln -sfn "$PG_DATA/server.log" "$STACK_DIR/postgres.log" 2>/dev/null || true
    # Role and databases: created once, password (re)set on every start. Nothing secret on a command line.
    local password
    password=$(pg_password)
    if [ "${1:-keep}" = reset ]; then
        # moto keeps objects in memory: a new S3 server is empty, so rows pointing at objects would dangle.
        psql_admin -c 'DROP DATABASE IF EXISTS hitl_review WITH (FORCE)' -c 'DROP DATABASE IF EXISTS hitl_dagster WITH (FORCE)' \
            -c 'DROP DATABASE IF EXISTS hitl_mlflow WITH (FORCE)'
        rm -rf "$STACK_DIR/home"  # the loop's local state (sensor cursors of `hitl demo`) belongs to the old data
        say "postgresql: databases hitl_review, hitl_dagster, hitl_mlflow created empty (the S3 server starts empty)"
    fi
    psql_admin <<SQL
\\set pw '$password'
SELECT 'CREATE ROLE $PG_USER LOGIN CREATEDB' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') \\gexec
ALTER ROLE $PG_USER WITH LOGIN CREATEDB PASSWORD :'pw';
SELECT 'CREATE DATABASE hitl_review OWNER $PG_USER' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'hitl_review') \\gexec
SELECT 'CREATE DATABASE hitl_dagster OWNER $PG_USER' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'hitl_dagster') \\gexec
SELECT 'CREATE DATABASE hitl_mlflow OWNER $PG_USER' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'hitl_mlflow') \\gexec
SQL
}

stop_postgres() {
    PG_BIN=$(pg_bindir)
    [ -n "$PG_BIN" ] || return 0
    pg_paths
    if pg_running; then
        as_pg "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m fast -w -t 60 >/dev/null
        say "postgresql: stopped"
    fi
}

# --- background processes (moto, MLflow, Dagster) --------------------------------------------

need_venv() {
    [ -x "$VENV/bin/python" ] || die "no virtual environment at $(rel "$VENV"): run 'make install' first"
    [ -x "$VENV/bin/$1" ] || die "$(rel "$VENV")/bin/$1 is missing: run 'make install' (pip install -e '.[dev]')"
}

# start NAME PORT COMMAND...: in its own session (so `down` stops its children too), output to NAME.log.
start_bg() {
    local name=$1 port=$2
    shift 2
    local pid
    pid=$(pid_of "$name")
    if ours "$pid"; then
        say "$name: already running (pid $pid)"
        return 1
    fi
    if [ -n "$port" ] && port_open "$port"; then
        die "port $port is taken by another process: stop it, or set HITL_*_PORT (see scripts/stack.sh)"
    fi
    (
        set -a
        . "$ENV_FILE"
        set +a
        cd "$REPO"
        exec setsid "$@" </dev/null >"$STACK_DIR/$name.log" 2>&1
    ) &
    printf '%s\n' "$!" >"$STACK_DIR/$name.pid"
    return 0
}

stop_bg() {
    local name=$1 pid
    pid=$(pid_of "$name")
    if ours "$pid"; then
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 40); do
            alive "$pid" || break
            sleep 0.5
        done
        if alive "$pid"; then
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        fi
        say "$name: stopped (pid $pid)"
    fi
    rm -f "$STACK_DIR/$name.pid"
}

# wait_until NAME SECONDS PYTHON-CHECK: poll a check (exit 0 = ready) while NAME's process lives.
wait_until() {
    local name=$1 seconds=$2 check=$3 pid deadline
    pid=$(pid_of "$name")
    deadline=$(( $(date +%s) + seconds ))
    until "$VENV/bin/python" -c "$check" 2>/dev/null; do
        if [ -n "$pid" ] && ! alive "$pid"; then
            log_tail "$STACK_DIR/$name.log"
            die "$name exited while starting (log: $(rel "$STACK_DIR/$name.log"))"
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            log_tail "$STACK_DIR/$name.log"
            die "$name not ready after ${seconds}s (log: $(rel "$STACK_DIR/$name.log"))"
        fi
        sleep 1
    done
}

http_ok() { printf 'import sys, urllib.request\nurllib.request.urlopen("%s", timeout=5)\n' "$1"; }

start_moto() {
    need_venv moto_server
    if start_bg s3 "$S3_PORT" "$VENV/bin/moto_server" -H "$HOST" -p "$S3_PORT"; then
        wait_until s3 60 "$(http_ok "http://$HOST:$S3_PORT/moto-api/")"
        say "s3: moto server started on http://$HOST:$S3_PORT"
    fi
    (
        set -a
        . "$ENV_FILE"
        set +a
        "$VENV/bin/python" - "$OBJECT_BUCKET" "$MLFLOW_BUCKET" <<'PY'
import os, sys
import boto3
client = boto3.client("s3", endpoint_url=os.environ["HITL_S3_ENDPOINT_URL"])
existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
for bucket in sys.argv[1:]:
    if bucket not in existing:
        client.create_bucket(Bucket=bucket)
PY
    )
}

start_mlflow() {
    need_venv mlflow
    # The tracking server connects as the hitl role; libpq reads its password from PGPASSWORD (stack.env).
    if start_bg mlflow "$MLFLOW_PORT" env \
        MLFLOW_BACKEND_STORE_URI="postgresql+psycopg2://$PG_USER@$HOST:$PG_PORT/hitl_mlflow" \
        MLFLOW_ARTIFACTS_DESTINATION="s3://$MLFLOW_BUCKET/artifacts" \
        "$VENV/bin/mlflow" server --host "$HOST" --port "$MLFLOW_PORT" --workers 1; then
        wait_until mlflow 180 "$(http_ok "http://$HOST:$MLFLOW_PORT/health")"
        say "mlflow: server started on http://$HOST:$MLFLOW_PORT"
    fi
}

DAGSTER_CHECK=$(cat <<PY
import json, sys, urllib.request
query = '{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }'
request = urllib.request.Request("http://$HOST:$DAGSTER_PORT/graphql", data=json.dumps({"query": query}).encode(), headers={"Content-Type": "application/json"})
entries = json.load(urllib.request.urlopen(request, timeout=10))["data"]["workspaceOrError"]["locationEntries"]
assert entries and all(e["loadStatus"] == "LOADED" and e["locationOrLoadError"] for e in entries)
errors = [f"{e['name']}: {e['locationOrLoadError']['message']}" for e in entries if e["locationOrLoadError"]["__typename"] == "PythonError"]
if errors:
    print("code location failed to load: " + "; ".join(errors))
PY
)

DAEMON_CHECK=$(cat <<PY
import json, urllib.request
query = '{ instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } } }'
request = urllib.request.Request("http://$HOST:$DAGSTER_PORT/graphql", data=json.dumps({"query": query}).encode(), headers={"Content-Type": "application/json"})
statuses = json.load(urllib.request.urlopen(request, timeout=10))["data"]["instance"]["daemonHealth"]["allDaemonStatuses"]
assert all(s["healthy"] for s in statuses if s["required"])
PY
)

start_dagster() {
    need_venv dagster-webserver
    need_venv dagster-daemon
    mkdir -p "$STACK_DIR/dagster_home" "$STACK_DIR/home"
    cp "$REPO/deploy/dagster.postgres.yaml" "$STACK_DIR/dagster_home/dagster.yaml"
    if start_bg dagster-webserver "$DAGSTER_PORT" "$VENV/bin/dagster-webserver" -h "$HOST" -p "$DAGSTER_PORT" -w "$REPO/workspace.yaml"; then
        wait_until dagster-webserver 240 "$DAGSTER_CHECK"
        local problem
        problem=$("$VENV/bin/python" -c "$DAGSTER_CHECK" 2>&1 || true)
        [ -z "$problem" ] || die "dagster: $problem (log: $(rel "$STACK_DIR/dagster-webserver.log"))"
        say "dagster: webserver started on http://$HOST:$DAGSTER_PORT (code location hitl_assets loaded)"
    fi
    if start_bg dagster-daemon "" "$VENV/bin/dagster-daemon" run -w "$REPO/workspace.yaml"; then
        wait_until dagster-daemon 240 "$DAEMON_CHECK"
        say "dagster: daemon started (sensors, schedules, run queue healthy)"
    fi
}

write_env_file() {
    local password
    password=$(pg_password)
    local pg="$PG_USER:$password@$HOST:$PG_PORT"
    (
        umask 077
        cat >"$ENV_FILE" <<ENV
# Written by scripts/stack.sh: the environment of every part of the loopback stack (holds a password).
HITL_HOME='$STACK_DIR/home'
DAGSTER_HOME='$STACK_DIR/dagster_home'
DAGSTER_PG_HOST='$HOST'
DAGSTER_PG_PORT='$PG_PORT'
DAGSTER_PG_USER='$PG_USER'
DAGSTER_PG_PASSWORD='$password'
DAGSTER_PG_DB='hitl_dagster'
# No password in the URL (Dagster's UI shows resource configuration): libpq reads PGPASSWORD.
HITL_REVIEW_DB_URL='postgresql+psycopg2://$PG_USER@$HOST:$PG_PORT/hitl_review'
PGPASSWORD='$password'
HITL_S3_BUCKET='$OBJECT_BUCKET'
HITL_S3_ENDPOINT_URL='http://$HOST:$S3_PORT'
AWS_ACCESS_KEY_ID='hitl-stack'
AWS_SECRET_ACCESS_KEY='hitl-stack'
AWS_DEFAULT_REGION='us-east-1'
MLFLOW_TRACKING_URI='http://$HOST:$MLFLOW_PORT'
HITL_MLFLOW_ARTIFACTS='s3://$MLFLOW_BUCKET/artifacts'
MLFLOW_S3_ENDPOINT_URL='http://$HOST:$S3_PORT'
HITL_IT_POSTGRES_URL='postgresql+psycopg2://$pg/postgres'
HITL_IT_S3_ENDPOINT_URL='http://$HOST:$S3_PORT'
ENV
    )
}

cmd_services() {
    mkdir -p "$STACK_DIR"
    if ours "$(pid_of s3)"; then
        start_postgres keep
    else
        start_postgres reset  # a fresh S3 server: the databases start afresh with it
    fi
    write_env_file
    start_moto
}

cmd_up() {
    cmd_services
    start_mlflow
    start_dagster
    say ""
    cmd_status
}

cmd_down() {
    mkdir -p "$STACK_DIR"
    stop_bg dagster-daemon
    stop_bg dagster-webserver
    stop_bg mlflow
    stop_bg s3
    stop_postgres
    local data
    data=$(cat "$STACK_DIR/pgdata.path" 2>/dev/null || echo "$STACK_DIR/pgdata")
    case "$data" in
        "$STACK_DIR"/*) say "stack: down (PostgreSQL cluster kept in $(rel "$data"); 'make clean' removes it)" ;;
        *) say "stack: down (PostgreSQL cluster kept in $data)" ;;
    esac
}

row() { printf '  %-20s %-8s %s\n' "$1" "$2" "$3"; }

cmd_status() {
    local state pid
    PG_BIN=$(pg_bindir)
    if [ -n "$PG_BIN" ]; then pg_paths; fi
    if [ -n "$PG_BIN" ] && pg_running; then state=up; else state=down; fi
    row "postgresql" "$state" "$HOST:$PG_PORT  databases hitl_review, hitl_dagster, hitl_mlflow (role $PG_USER)"
    for entry in "s3|http://$HOST:$S3_PORT  buckets $OBJECT_BUCKET, $MLFLOW_BUCKET (moto, in memory)" \
        "mlflow|http://$HOST:$MLFLOW_PORT  tracking + registry on PostgreSQL, artifacts s3://$MLFLOW_BUCKET/artifacts" \
        "dagster-webserver|http://$HOST:$DAGSTER_PORT  instance on PostgreSQL" \
        "dagster-daemon|sensors, schedules, run queue"; do
        pid=$(pid_of "${entry%%|*}")
        if ours "$pid"; then state=up; else state=down; fi
        row "${entry%%|*}" "$state" "${entry#*|}"
    done
    row "review app" "-" "not part of this release yet (will serve http://$HOST:$REVIEW_PORT)"
    say ""
    say "  environment: set -a; . $(rel "$ENV_FILE"); set +a      logs: $(rel "$STACK_DIR")/*.log"
}

cmd_exec() {
    [ -f "$ENV_FILE" ] || die "no $(rel "$ENV_FILE"): run 'make stack' first"
    set -a
    . "$ENV_FILE"
    set +a
    exec "$@"
}

case "${1:-}" in
    up) cmd_up ;;
    services) cmd_services ;;
    down) cmd_down ;;
    status) cmd_status ;;
    exec) shift; [ $# -gt 0 ] || die "usage: scripts/stack.sh exec COMMAND [ARGS...]"; cmd_exec "$@" ;;
    *) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
