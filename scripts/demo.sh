#!/usr/bin/env bash
# sqlease in one command: a private MariaDB, Vault (a real `vault server -dev`
# when `vault` is on PATH, else the test kit's Vault stand-in), Vault set up by
# config/vault-init.sh with short TTLs, sqlease, and an application that keeps
# ONE connection and prints every second its connection id, CURRENT_USER()
# and a session variable it set once. The MySQL user changes every few
# seconds; the connection id and the session value do not.
#
#   scripts/demo.sh                 # runs 30 s
#   scripts/demo.sh --duration 60
#
# Everything it starts is stopped when it ends (or on Ctrl-C).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=30
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION="$2"; shift 2 ;;
    --duration=*) DURATION="${1#*=}"; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (try --duration N)" >&2; exit 2 ;;
  esac
done

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

need=()
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
command -v mariadb >/dev/null 2>&1 || need+=(mariadb-client)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
PATH="$PATH:/usr/sbin"

say "building sqlease and the demo tools (first run takes a few minutes)"
cargo build -q --bin sqlease -p sqlease -p sqlease-testkit --bin vault-standin --bin demo-client 2>/dev/null \
  || cargo build --bin sqlease -p sqlease -p sqlease-testkit --bin vault-standin --bin demo-client
BIN=target/debug

WORK="$(mktemp -d "${TMPDIR:-/tmp}/sqlease-demo.XXXXXX")"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 300); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }

MYSQL_PORT=$(free_port); VAULT_PORT=$(free_port); PROXY_PORT=$(free_port)
ROOT_PW="demo-root-pw"
USER_ARG=(); [ "$(id -u)" -eq 0 ] && USER_ARG=(--user=root)

say "starting a private MariaDB on 127.0.0.1:$MYSQL_PORT"
mkdir -p "$WORK/data"
mariadb-install-db --no-defaults --datadir="$WORK/data" --auth-root-authentication-method=normal \
  --skip-test-db "${USER_ARG[@]}" >"$WORK/install.log" 2>&1
cat >"$WORK/init.sql" <<SQL
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '$ROOT_PW';
ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY '$ROOT_PW';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
SQL
mariadbd --no-defaults --datadir="$WORK/data" --socket="$WORK/mysqld.sock" --pid-file="$WORK/mysqld.pid" \
  --log-error="$WORK/mariadb.log" --init-file="$WORK/init.sql" --bind-address=127.0.0.1 \
  --port="$MYSQL_PORT" --skip-name-resolve "${USER_ARG[@]}" >"$WORK/mariadb.out" 2>&1 &
PIDS+=($!)
wait_port "$MYSQL_PORT"
for _ in $(seq 1 100); do
  mariadb --no-defaults -h127.0.0.1 -P"$MYSQL_PORT" -uroot -p"$ROOT_PW" -e 'SELECT 1' >/dev/null 2>&1 && break
  sleep 0.1
done

export VAULT_ADDR="http://127.0.0.1:$VAULT_PORT" VAULT_TOKEN="demo-root-token"
if command -v vault >/dev/null 2>&1; then
  say "starting a real Vault (vault server -dev) on $VAULT_ADDR"
  vault server -dev -dev-root-token-id="$VAULT_TOKEN" -dev-listen-address="127.0.0.1:$VAULT_PORT" >"$WORK/vault.log" 2>&1 &
else
  say "starting the Vault stand-in on $VAULT_ADDR (no 'vault' on PATH)"
  "$BIN/vault-standin" --listen "127.0.0.1:$VAULT_PORT" --root-token "$VAULT_TOKEN" >"$WORK/vault.log" 2>&1 &
fi
PIDS+=($!)
wait_port "$VAULT_PORT"

say "configuring Vault with config/vault-init.sh (lease TTL 4s, max TTL 8s: a new MySQL user every few seconds)"
CREDS=$(MYSQL_HOST=127.0.0.1 MYSQL_PORT="$MYSQL_PORT" MYSQL_ADMIN_USER=root MYSQL_ADMIN_PASSWORD="$ROOT_PW" \
  SQLEASE_DEFAULT_TTL=4s SQLEASE_MAX_TTL=8s SQLEASE_DB_GRANTS="SELECT ON *.*" \
  config/vault-init.sh 2>"$WORK/vault-init.log")
export VLT_ROLE_ID VLT_SECRET_ID
VLT_ROLE_ID=$(printf '%s\n' "$CREDS" | sed -n 's/^VLT_ROLE_ID=//p')
VLT_SECRET_ID=$(printf '%s\n' "$CREDS" | sed -n 's/^VLT_SECRET_ID=//p')

APP_PASSWORD="demo-app-password"
cat >"$WORK/sqlease.toml" <<TOML
[[listener]]
name = "demo"
bind = "127.0.0.1:$PROXY_PORT"
[[listener.users]]
name = "app"
password = { env = "DEMO_APP_PASSWORD" }
[listener.upstream]
address = "127.0.0.1:$MYSQL_PORT"
credentials = "vault"
tls = "disabled"

[credentials.vault]
type = "vault"
role = "sqlease"

[vault]
address = "$VAULT_ADDR"
[vault.auth]
method = "approle"

[rotation]
lead_time = "3s"

[log]
level = "info"
TOML
say "starting sqlease on 127.0.0.1:$PROXY_PORT (log: $WORK/sqlease.log)"
DEMO_APP_PASSWORD="$APP_PASSWORD" "$BIN/sqlease" run --config "$WORK/sqlease.toml" >"$WORK/sqlease.log" 2>&1 &
PIDS+=($!)
wait_port "$PROXY_PORT"

say "the application: DSN app:$APP_PASSWORD@127.0.0.1:$PROXY_PORT, one connection for $DURATION s"
"$BIN/demo-client" 127.0.0.1 "$PROXY_PORT" app "$APP_PASSWORD" "$DURATION"
echo
say "MySQL users left in mysql.user:"
mariadb --no-defaults -h127.0.0.1 -P"$MYSQL_PORT" -uroot -p"$ROOT_PW" -N -e "SELECT user FROM mysql.user WHERE user LIKE 'v-%'"
