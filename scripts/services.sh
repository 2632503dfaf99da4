#!/usr/bin/env bash
# PostgreSQL (Optuna studies + MLflow's backend) and an MLflow tracking server, for shared
# sweeps and ablations. Everything lives in one directory; nothing is installed system-wide
# except Debian's postgresql package when no PostgreSQL binaries are found (root only).
#
#   scripts/services.sh start     # initdb once, start PostgreSQL, create the databases, start MLflow
#   scripts/services.sh env       # export lines: eval "$(scripts/services.sh env)"
#   scripts/services.sh status
#   scripts/services.sh stop
#
# Settings (environment):
#   ANYQ_SERVICES_DIR   data, logs, pid files, artifacts   (default: <repo>/mlruns/services)
#   ANYQ_SERVICES_HOST  address both servers listen on     (default: 127.0.0.1)
#   ANYQ_PG_PORT        PostgreSQL port                    (default: 55432)
#   ANYQ_MLFLOW_PORT    MLflow server port                 (default: 5050)
#   ANYQ_MLFLOW_WORKERS MLflow server worker processes     (default: 2)
#   ANYQ_PG_ALLOW       extra CIDR allowed to connect to PostgreSQL with the password,
#                       e.g. 10.0.0.0/24 when ANYQ_SERVICES_HOST is a LAN address
#
# The database password is generated once (mode 600) and handed to clients through libpq's
# password file $ANYQ_SERVICES_DIR/pgpass (PGPASSFILE): URLs carry no secret, so they can
# sit in tags, logs and shell history.
# PostgreSQL refuses to run as root: as root the server runs as the `postgres` user.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${ANYQ_SERVICES_DIR:-$ROOT/mlruns/services}"
HOST="${ANYQ_SERVICES_HOST:-127.0.0.1}"
PG_PORT="${ANYQ_PG_PORT:-55432}"
MLFLOW_PORT="${ANYQ_MLFLOW_PORT:-5050}"
MLFLOW_WORKERS="${ANYQ_MLFLOW_WORKERS:-2}"
PG_USER=anyq
OPTUNA_DB=anyq_optuna
MLFLOW_DB=anyq_mlflow
PGDATA="$DIR/pgdata"
SOCKETS="$DIR/run"
PGPASS="$DIR/pgpass"
LOGS="$DIR/log"
MLFLOW_PID="$DIR/mlflow.pid"

die() { echo "services: $*" >&2; exit 1; }
say() { echo "services: $*"; }

python_bin() {
  if [[ -x "$ROOT/.venv/bin/python" ]]; then echo "$ROOT/.venv/bin/python"; else command -v python3; fi
}

mlflow_bin() {
  if [[ -x "$ROOT/.venv/bin/mlflow" ]]; then echo "$ROOT/.venv/bin/mlflow"
  elif command -v mlflow >/dev/null; then command -v mlflow
  else die "no mlflow executable: run 'make env' first"; fi
}

# The directory holding initdb/pg_ctl/postgres/psql: PATH first, then Debian's layout.
pg_bindir() {
  if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
    dirname "$(readlink -f "$(command -v pg_ctl)")"
    return
  fi
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [[ -n "$dir" && -x "$dir/initdb" ]]; then echo "$dir"; fi
}

ensure_postgres_installed() {
  if [[ -n "$(pg_bindir)" ]]; then return; fi
  if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
    say "no PostgreSQL binaries: installing Debian's postgresql"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    [[ -n "$(pg_bindir)" ]] || die "postgresql installed but initdb not found"
  else
    die "no PostgreSQL binaries (initdb, pg_ctl): install PostgreSQL (Debian: apt-get install postgresql)"
  fi
}

# Commands that touch the cluster run as its owner: root cannot run PostgreSQL.
as_pg() {
  if [[ $EUID -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

psql_admin() {
  as_pg "$BIN/psql" -X -q -h "$SOCKETS" -p "$PG_PORT" -U "$PG_USER" -d postgres -v ON_ERROR_STOP=1 "$@"
}

pg_running() {
  [[ -f "$PGDATA/PG_VERSION" ]] && as_pg "$BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1
}

# alive and not a zombie: the server outlives the shell that started it, and whoever
# inherits it may be slow to reap it
alive() {
  local state
  state="$(ps -o stat= -p "$1" 2>/dev/null)" || return 1
  [[ -n "$state" && "$state" != Z* ]]
}

mlflow_running() {
  [[ -f "$MLFLOW_PID" ]] && alive "$(cat "$MLFLOW_PID")"
}

init_cluster() {
  if [[ -f "$PGDATA/PG_VERSION" ]]; then return; fi
  say "initdb into $PGDATA"
  mkdir -p "$PGDATA" "$SOCKETS" "$LOGS"
  chmod 700 "$PGDATA"
  if [[ $EUID -eq 0 ]]; then
    getent passwd postgres >/dev/null || die "running as root needs the 'postgres' user (Debian's postgresql package creates it)"
    chown postgres: "$PGDATA" "$SOCKETS"
    runuser -u postgres -- test -x "$PGDATA" \
      || die "user postgres cannot reach $PGDATA: set ANYQ_SERVICES_DIR to a directory it can (e.g. under /var/tmp)"
  fi
  local password pwfile
  password="$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
  pwfile="$SOCKETS/.initdb-password"
  (umask 077; printf '%s\n' "$password" >"$pwfile")
  if [[ $EUID -eq 0 ]]; then chown postgres: "$pwfile"; fi
  as_pg "$BIN/initdb" -D "$PGDATA" -U "$PG_USER" --pwfile="$pwfile" -E UTF8 --locale=C \
    --auth-local=trust --auth-host=scram-sha-256 >"$LOGS/initdb.log" 2>&1 \
    || { rm -f "$pwfile"; die "initdb failed: see $LOGS/initdb.log"; }
  rm -f "$pwfile"
  (umask 077; printf '%s\n' "$password" >"$DIR/pgpassword")
}

# libpq's password file, rewritten at each start so that it follows the port; any host,
# so the same file serves loopback, an SSH tunnel and the LAN address alike
write_pgpass() {
  (umask 077; printf '*:%s:*:%s:%s\n' "$PG_PORT" "$PG_USER" "$(cat "$DIR/pgpassword")" >"$PGPASS")
}

allow_network() {
  if [[ -z "${ANYQ_PG_ALLOW:-}" ]]; then return; fi
  local line="host all $PG_USER ${ANYQ_PG_ALLOW} scram-sha-256"
  grep -qxF "$line" "$PGDATA/pg_hba.conf" || as_pg sh -c "echo '$line' >> '$PGDATA/pg_hba.conf'"
}

start_postgres() {
  if pg_running; then say "PostgreSQL already running ($PGDATA)"; return; fi
  mkdir -p "$SOCKETS" "$LOGS"
  if [[ $EUID -eq 0 ]]; then chown postgres: "$SOCKETS" "$LOGS"; fi
  allow_network
  # the local socket lives in a private directory: only the cluster's owner (and root) can use it
  as_pg "$BIN/pg_ctl" -D "$PGDATA" -l "$LOGS/postgres.log" -w -t 60 start -o \
    "-c listen_addresses=$HOST -p $PG_PORT -c unix_socket_directories=$SOCKETS -c unix_socket_permissions=0700" \
    >/dev/null || die "PostgreSQL did not start: see $LOGS/postgres.log"
  say "PostgreSQL on $HOST:$PG_PORT"
}

create_databases() {
  local db
  for db in "$OPTUNA_DB" "$MLFLOW_DB"; do
    if [[ "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'")" != 1 ]]; then
      psql_admin -c "CREATE DATABASE $db OWNER $PG_USER"
      say "created database $db"
    fi
  done
}

start_mlflow() {
  if mlflow_running; then say "MLflow server already running (pid $(cat "$MLFLOW_PID"))"; return; fi
  mkdir -p "$DIR/artifacts"
  # - its own process group (setsid), so stop ends the server and its workers together
  # - the driver spelled out: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3
  # - its background job runner (GenAI evaluations, unused here) off: a dozen fewer processes
  PGPASSFILE="$PGPASS" MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}" \
    setsid "$(mlflow_bin)" server \
    --backend-store-uri "postgresql+psycopg2://$PG_USER@$HOST:$PG_PORT/$MLFLOW_DB" \
    --artifacts-destination "$DIR/artifacts" \
    --host "$HOST" --port "$MLFLOW_PORT" --workers "$MLFLOW_WORKERS" \
    >"$LOGS/mlflow.log" 2>&1 </dev/null &
  echo $! >"$MLFLOW_PID"
  local url="http://$HOST:$MLFLOW_PORT/health" py
  py="$(python_bin)"
  for _ in $(seq 1 180); do
    mlflow_running || die "MLflow server exited: see $LOGS/mlflow.log"
    if "$py" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" "$url" 2>/dev/null; then
      say "MLflow server on http://$HOST:$MLFLOW_PORT (artifacts in $DIR/artifacts)"
      return
    fi
    sleep 0.5
  done
  die "MLflow server not answering on $url: see $LOGS/mlflow.log"
}

write_env() {
  cat >"$DIR/env" <<EOF
export PGPASSFILE=$PGPASS
export ANYQ_OPTUNA_STORAGE=postgresql://$PG_USER@$HOST:$PG_PORT/$OPTUNA_DB
export MLFLOW_TRACKING_URI=http://$HOST:$MLFLOW_PORT
EOF
}

stop_mlflow() {
  if ! mlflow_running; then rm -f "$MLFLOW_PID"; return 0; fi
  local pid; pid="$(cat "$MLFLOW_PID")"
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
  for _ in $(seq 1 40); do
    alive "$pid" || break
    sleep 0.25
  done
  if alive "$pid"; then kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid"; fi
  rm -f "$MLFLOW_PID"
  say "MLflow server stopped"
}

stop_postgres() {
  if ! pg_running; then return 0; fi
  as_pg "$BIN/pg_ctl" -D "$PGDATA" -m fast -w -t 60 stop >/dev/null
  say "PostgreSQL stopped"
}

cmd="${1:-start}"
case "$cmd" in
  start)
    mkdir -p "$DIR"
    ensure_postgres_installed
    BIN="$(pg_bindir)"
    init_cluster
    write_pgpass
    start_postgres
    create_databases
    write_env
    start_mlflow
    say "use them in this shell with:  eval \"\$($0 env)\""
    ;;
  stop)
    stop_mlflow
    BIN="$(pg_bindir || true)"
    if [[ -n "$BIN" ]]; then stop_postgres; fi
    ;;
  status)
    BIN="$(pg_bindir || true)"
    if [[ -n "$BIN" ]] && pg_running; then say "PostgreSQL running on $HOST:$PG_PORT"; else say "PostgreSQL stopped"; fi
    if mlflow_running; then say "MLflow server running (pid $(cat "$MLFLOW_PID"))"; else say "MLflow server stopped"; fi
    ;;
  env)
    [[ -f "$DIR/env" ]] || die "no $DIR/env: run '$0 start' first"
    cat "$DIR/env"
    ;;
  *)
    die "usage: $0 start|stop|status|env"
    ;;
esac
