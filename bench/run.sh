#!/usr/bin/env bash
# Side-by-side benchmark of issue 6: direct to MariaDB, through haproxy
# (plain TCP, the cost of any L4 hop) and through sqlease, measured in ONE
# run, alternating the three targets in rounds; prints one markdown table of
# medians and ratios and writes it to docs/benchmarks.md with the machine it
# ran on and the targets of the issue with PASS/FAIL.
#
#   bench/run.sh               # full run (about 12 minutes on 2 cores)
#   bench/run.sh --quick       # under 3 minutes: 1-4 s windows, same shape
#   bench/run.sh --rounds 5    # more rounds (default 3)
#   bench/run.sh --out FILE    # write the report elsewhere (default docs/benchmarks.md)
#   bench/run.sh --profile     # no benchmark: profile sqlease under
#                              # oltp_point_select at 8 threads (perf, strace -c,
#                              # callgrind); output in target/bench-profile/
#
# It installs what it needs from Debian when missing (mariadb-server,
# mariadb-client, sysbench, haproxy, curl), builds the release binaries,
# starts a private MariaDB, the test kit's Vault stand-in, haproxy and
# sqlease on free loopback ports, and stops everything it started when it
# ends (or on Ctrl-C).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
LOAD_BEFORE=$(cut -d" " -f1-3 /proc/loadavg)

MODE=full ROUNDS=3 OUT=docs/benchmarks.md PROFILE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) MODE=quick; shift ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --rounds=*) ROUNDS="${1#*=}"; shift ;;
    --out) OUT="$2"; shift 2 ;;
    --out=*) OUT="${1#*=}"; shift ;;
    --profile) PROFILE=1; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
done

if [ "$MODE" = quick ]; then
  SB_TIME=1 CHURN_S=2 ROT_S=4 IDLE_N=5000
else
  SB_TIME=8 CHURN_S=20 ROT_S=15 IDLE_N=5000
fi
TABLES=4 TABLE_SIZE=10000 CHURN_THREADS=8 ROT_THREADS=8 ROT_EVERY=1

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# ---- what the run needs ----
need=()
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
command -v mariadb >/dev/null 2>&1 || need+=(mariadb-client)
command -v sysbench >/dev/null 2>&1 || need+=(sysbench)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ "$PROFILE" = 1 ]; then
  command -v strace >/dev/null 2>&1 || need+=(strace)
  command -v valgrind >/dev/null 2>&1 || need+=(valgrind)
  command -v perf >/dev/null 2>&1 || need+=(linux-perf)
fi
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
PATH="$PATH:/usr/sbin"

say "building the release binaries (sqlease, vault-standin, sqlease-bench)"
cargo build --release -q -p sqlease --bin sqlease -p sqlease-testkit --bin vault-standin \
  -p sqlease-bench --bin sqlease-bench
BIN="$ROOT/target/release"
BENCH="$BIN/sqlease-bench"

# 5,000 client connections through a proxy hold 10,000+ descriptors.
HARD=$(ulimit -Hn)
if [ "$HARD" != unlimited ] && [ "$HARD" -lt 16384 ]; then
  echo "ulimit -Hn is $HARD: the idle-connection test needs 16384+ descriptors" >&2
  exit 1
fi
ulimit -n "$HARD" 2>/dev/null || ulimit -n 65536

WORK="$(mktemp -d "${TMPDIR:-/tmp}/sqlease-bench.XXXXXX")"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

wait_port() { for _ in $(seq 1 300); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

MYSQL_PORT=$($BENCH free-port) VAULT_PORT=$($BENCH free-port) HAPROXY_PORT=$($BENCH free-port)
PROXY_PORT=$($BENCH free-port) ADMIN_PORT=$($BENCH free-port)
ROOT_PW="bench-root-pw" BENCH_USER=bench BENCH_PW="bench-pw" APP_USER=app APP_PW="bench-app-pw"
USER_ARG=(); [ "$(id -u)" -eq 0 ] && USER_ARG=(--user=root)

# ---- MariaDB (the flags of testkit/src/mariadb.rs) ----
say "starting a private MariaDB on 127.0.0.1:$MYSQL_PORT"
mkdir -p "$WORK/data"
mariadb-install-db --no-defaults --datadir="$WORK/data" --auth-root-authentication-method=normal \
  --skip-test-db "${USER_ARG[@]}" >"$WORK/install.log" 2>&1
cat >"$WORK/init.sql" <<SQL
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '$ROOT_PW';
ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY '$ROOT_PW';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
CREATE USER IF NOT EXISTS '$BENCH_USER'@'%' IDENTIFIED BY '$BENCH_PW';
GRANT ALL PRIVILEGES ON *.* TO '$BENCH_USER'@'%';
CREATE DATABASE IF NOT EXISTS sbtest;
SQL
mariadbd --no-defaults --datadir="$WORK/data" --socket="$WORK/mysqld.sock" --pid-file="$WORK/mysqld.pid" \
  --log-error="$WORK/mariadb.log" --init-file="$WORK/init.sql" --bind-address=127.0.0.1 \
  --port="$MYSQL_PORT" --skip-name-resolve --max-connections=6000 --max-allowed-packet=64M \
  --innodb-buffer-pool-size=256M --innodb-log-file-size=64M --innodb-flush-log-at-trx-commit=2 \
  --thread-cache-size=64 --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \
  "${USER_ARG[@]}" >"$WORK/mariadb.out" 2>&1 &
PIDS+=($!)
wait_port "$MYSQL_PORT"
sql() { mariadb --no-defaults -h127.0.0.1 -P"$MYSQL_PORT" -uroot -p"$ROOT_PW" -N -B -e "$1"; }
for _ in $(seq 1 100); do sql 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.1; done

# ---- Vault stand-in, configured as an operator would, long TTLs ----
say "starting the Vault stand-in and configuring it (config/vault-init.sh, TTL 1h)"
export VAULT_ADDR="http://127.0.0.1:$VAULT_PORT" VAULT_TOKEN="bench-root-token"
"$BIN/vault-standin" --listen "127.0.0.1:$VAULT_PORT" --root-token "$VAULT_TOKEN" >"$WORK/vault.log" 2>&1 &
PIDS+=($!)
wait_port "$VAULT_PORT"
CREDS=$(MYSQL_HOST=127.0.0.1 MYSQL_PORT="$MYSQL_PORT" MYSQL_ADMIN_USER=root MYSQL_ADMIN_PASSWORD="$ROOT_PW" \
  SQLEASE_DEFAULT_TTL=1h SQLEASE_MAX_TTL=24h config/vault-init.sh 2>"$WORK/vault-init.log")
export VLT_ROLE_ID VLT_SECRET_ID
VLT_ROLE_ID=$(printf '%s\n' "$CREDS" | sed -n 's/^VLT_ROLE_ID=//p')
VLT_SECRET_ID=$(printf '%s\n' "$CREDS" | sed -n 's/^VLT_SECRET_ID=//p')

# ---- haproxy, plain TCP ----
say "starting haproxy (mode tcp) on 127.0.0.1:$HAPROXY_PORT"
cat >"$WORK/haproxy.cfg" <<CFG
global
  maxconn 6000
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
listen mysql
  bind 127.0.0.1:$HAPROXY_PORT
  server db 127.0.0.1:$MYSQL_PORT
CFG
haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
HAPROXY_PID=$!
PIDS+=($HAPROXY_PID)
wait_port "$HAPROXY_PORT"

# ---- sqlease ----
cat >"$WORK/sqlease.toml" <<TOML
[[listener]]
name = "bench"
bind = "127.0.0.1:$PROXY_PORT"
max_connections = 10000
[[listener.users]]
name = "$APP_USER"
password = { env = "BENCH_APP_PASSWORD" }
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

[admin]
bind = "127.0.0.1:$ADMIN_PORT"

[log]
level = "info"
TOML
start_sqlease() {
  say "starting sqlease on 127.0.0.1:$PROXY_PORT (admin 127.0.0.1:$ADMIN_PORT)"
  BENCH_APP_PASSWORD="$APP_PW" "$@" "$BIN/sqlease" run --config "$WORK/sqlease.toml" >>"$WORK/sqlease.log" 2>&1 &
  SQLEASE_PID=$!
  PIDS+=($SQLEASE_PID)
  wait_port "$PROXY_PORT"
  for _ in $(seq 1 300); do
    curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "sqlease never became ready; log:" >&2; tail -20 "$WORK/sqlease.log" >&2; return 1
}

# target -> port user password
target_args() {
  case "$1" in
    direct) echo "$MYSQL_PORT $BENCH_USER $BENCH_PW" ;;
    haproxy) echo "$HAPROXY_PORT $BENCH_USER $BENCH_PW" ;;
    sqlease) echo "$PROXY_PORT $APP_USER $APP_PW" ;;
  esac
}

# sysbench TEST TARGET THREADS SECONDS [extra args] -> output on stdout
sb() {
  local test=$1 target=$2 threads=$3 secs=$4; shift 4
  local port user pw
  read -r port user pw <<<"$(target_args "$target")"
  sysbench "$test" --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$port" \
    --mysql-user="$user" --mysql-password="$pw" --mysql-db=sbtest \
    --tables=$TABLES --table-size=$TABLE_SIZE --threads="$threads" --time="$secs" \
    --db-ps-mode=auto --percentile=99 --report-interval=0 "$@" run
}
sb_qps() { sed -n 's/^ *queries: *[0-9]* *(\([0-9.]*\) per sec.)/\1/p' | head -1; }
sb_p99() { sed -n 's/^ *99th percentile: *\([0-9.]*\)/\1/p' | head -1; }
sb_max() { sed -n 's/^ *max: *\([0-9.]*\)/\1/p' | head -1; }
sb_err() { sed -n 's/^ *ignored errors: *\([0-9]*\).*/\1/p' | head -1; }

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RESULTS"; }

say "loading sysbench tables ($TABLES x $TABLE_SIZE rows)"
sysbench oltp_read_write --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$MYSQL_PORT" \
  --mysql-user="$BENCH_USER" --mysql-password="$BENCH_PW" --mysql-db=sbtest \
  --tables=$TABLES --table-size=$TABLE_SIZE prepare >"$WORK/prepare.log" 2>&1

if [ "$PROFILE" = 1 ]; then
  # ---- profile: perf (sampling), strace -c, callgrind ----
  PROF="$ROOT/target/bench-profile"
  mkdir -p "$PROF"
  start_sqlease
  sb oltp_point_select sqlease 8 3 >/dev/null
  say "perf record (cpu-clock, call graphs) on sqlease under point_select 8 threads, 15 s"
  perf record -e cpu-clock -F 999 -g -p "$SQLEASE_PID" -o "$PROF/perf.data" -- sleep 15 >/dev/null 2>&1 &
  PERF_PID=$!
  sb oltp_point_select sqlease 8 15 >"$PROF/perf-sysbench.txt"
  wait "$PERF_PID" || true
  perf report -i "$PROF/perf.data" --no-children --sort symbol --stdio 2>/dev/null | head -120 >"$PROF/perf-self.txt" || true
  perf report -i "$PROF/perf.data" --children --sort symbol --stdio -g none 2>/dev/null | head -120 >"$PROF/perf-children.txt" || true
  say "strace -c -f on sqlease, 10 s"
  strace -c -f -p "$SQLEASE_PID" -o "$PROF/strace.txt" &
  STRACE_PID=$!
  sleep 0.5
  sb oltp_point_select sqlease 8 10 >"$PROF/strace-sysbench.txt"
  kill -INT "$STRACE_PID"; wait "$STRACE_PID" || true
  kill "$SQLEASE_PID"; wait "$SQLEASE_PID" || true
  say "callgrind: sqlease under valgrind, point_select 8 threads, 20 s"
  start_sqlease valgrind --tool=callgrind --callgrind-out-file="$PROF/callgrind.out" --separate-threads=no
  sb oltp_point_select sqlease 8 20 >"$PROF/callgrind-sysbench.txt"
  kill "$SQLEASE_PID"; wait "$SQLEASE_PID" || true
  callgrind_annotate --inclusive=no "$PROF/callgrind.out" 2>/dev/null | head -80 >"$PROF/callgrind-self.txt" || true
  callgrind_annotate --inclusive=yes "$PROF/callgrind.out" 2>/dev/null | head -120 >"$PROF/callgrind-incl.txt" || true
  for f in perf-sysbench strace-sysbench callgrind-sysbench; do
    printf '%s: %s queries\n' "$f" "$(sed -n 's/^ *queries: *\([0-9]*\).*/\1/p' "$PROF/$f.txt" | head -1)"
  done
  say "profile written to target/bench-profile/"
  exit 0
fi

start_sqlease
TARGETS=(direct haproxy sqlease)

# ---- idle connections: RSS per connection (sqlease, and haproxy for comparison) ----
threads_connected() { sql "SHOW GLOBAL STATUS LIKE 'Threads_connected'" | awk '{print $2}'; }
idle_test() {
  local target=$1 pid=$2 port user pw before after line ready
  read -r port user pw <<<"$(target_args "$target")"
  sleep 1
  before=$(rss_kib "$pid")
  BENCH_PASSWORD="$pw" "$BENCH" idle --port "$port" --user "$user" --count "$IDLE_N" >"$WORK/idle-$target.out" 2>"$WORK/idle-$target.err" &
  local ipid=$!
  PIDS+=($ipid)
  ready=""
  for _ in $(seq 1 1800); do
    line=$(grep '^READY' "$WORK/idle-$target.out" 2>/dev/null || true)
    [ -n "$line" ] && { ready=$line; break; }
    kill -0 "$ipid" 2>/dev/null || break
    sleep 0.1
  done
  sleep 2
  after=$(rss_kib "$pid")
  kill "$ipid" 2>/dev/null || true
  wait "$ipid" 2>/dev/null || true
  if [ -z "$ready" ]; then
    echo "idle test via $target did not finish: $(cat "$WORK/idle-$target.err")" >&2
    return 0
  fi
  local opened failed
  read -r _ opened failed <<<"$ready"
  say "idle via $target: $opened open ($failed failed), RSS $before -> $after KiB"
  [ "$opened" -gt 0 ] && record idle.kib "$target" 1 "$(awk -v a="$after" -v b="$before" -v n="$opened" 'BEGIN {printf "%.2f", (a-b)/n}')"
  # Let the server see every session close before the next measurement.
  for _ in $(seq 1 300); do [ "$(threads_connected)" -lt 100 ] && break; sleep 0.1; done
}
say "idle: $IDLE_N connections held open through sqlease, then haproxy"
idle_test sqlease "$SQLEASE_PID"
idle_test haproxy "$HAPROXY_PID"

# ---- rounds ----
WORKLOADS=(ps1 ps8 ps64 rw1 rw8 rw64 churn)
for r in $(seq 1 "$ROUNDS"); do
  # A different target goes first in every round.
  order=()
  for i in 0 1 2; do order+=("${TARGETS[$(((i + r - 1) % 3))]}"); done
  say "round $r/$ROUNDS (order: ${order[*]})"
  for w in "${WORKLOADS[@]}"; do
    for t in "${order[@]}"; do
      case "$w" in
        ps*|rw*)
          test=oltp_point_select; [ "${w:0:2}" = rw ] && test=oltp_read_write
          th=${w:2}
          out=$(sb "$test" "$t" "$th" "$SB_TIME" 2>&1) || { echo "$out" | tail -5 >&2; echo "sysbench $test via $t failed" >&2; continue; }
          qps=$(sb_qps <<<"$out"); p99=$(sb_p99 <<<"$out")
          record "$w.qps" "$t" "$r" "$qps"; record "$w.p99" "$t" "$r" "$p99"
          printf '  %-6s %-8s %10s qps  p99 %6s ms\n' "$w" "$t" "$qps" "$p99" >&2
          ;;
        churn)
          read -r port user pw <<<"$(target_args "$t")"
          out=$(BENCH_PASSWORD="$pw" "$BENCH" churn --port "$port" --user "$user" \
            --threads $CHURN_THREADS --seconds "$CHURN_S" 2>&1) || { echo "$out" >&2; continue; }
          cps=$(sed -n 's/.*conns_per_s=\([0-9.]*\).*/\1/p' <<<"$out")
          record churn.cps "$t" "$r" "$cps"
          printf '  %-6s %-8s %10s connections/s  (%s)\n' churn "$t" "$cps" "$(grep -o 'errors=[0-9]*' <<<"$out")" >&2
          ;;
      esac
    done
  done
  # Rotation: the same point_select window without and with rotations.
  out=$(sb oltp_point_select sqlease $ROT_THREADS "$ROT_S" --mysql-ignore-errors=all 2>&1) || true
  record rot.base_p99 sqlease "$r" "$(sb_p99 <<<"$out")"
  record rot.base_qps sqlease "$r" "$(sb_qps <<<"$out")"
  record rot.base_errors sqlease "$r" "$(sb_err <<<"$out")"
  record rot.base_max sqlease "$r" "$(sb_max <<<"$out")"
  printf '  %-6s %-8s p99 %s ms, %s errors (no rotation)\n' rot sqlease "$(sb_p99 <<<"$out")" "$(sb_err <<<"$out")" >&2
  (while true; do
    curl -s -o /dev/null -X POST "http://127.0.0.1:$ADMIN_PORT/v1/rotate" || true
    sleep "$ROT_EVERY"
  done) &
  ROT_PID=$!
  PIDS+=($ROT_PID)
  out=$(sb oltp_point_select sqlease $ROT_THREADS "$ROT_S" --mysql-ignore-errors=all 2>&1) || true
  kill "$ROT_PID" 2>/dev/null || true
  wait "$ROT_PID" 2>/dev/null || true
  record rot.p99 sqlease "$r" "$(sb_p99 <<<"$out")"
  record rot.qps sqlease "$r" "$(sb_qps <<<"$out")"
  record rot.errors sqlease "$r" "$(sb_err <<<"$out")"
  record rot.max sqlease "$r" "$(sb_max <<<"$out")"
  printf '  %-6s %-8s p99 %s ms, %s errors (rotating every %s s)\n' rot sqlease "$(sb_p99 <<<"$out")" "$(sb_err <<<"$out")" "$ROT_EVERY" >&2
done
sleep 2
curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" >"$WORK/metrics.txt" || true

# ---- report ----
dirty=""; [ -n "$(git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ] && dirty=" (with uncommitted changes in src/)"
cat >"$WORK/machine.txt" <<EOF
date=$(date -u '+%Y-%m-%d %H:%M UTC')
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
cores=$(nproc)
kernel=$(uname -sr)
mariadb=$(sql 'SELECT VERSION()')
haproxy=$(haproxy -v | head -1 | awk '{print $3}')
sysbench=$(sysbench --version | awk '{print $2}')
commit=$(git rev-parse --short HEAD)$dirty
load_before=$LOAD_BEFORE
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
mode=$MODE
rounds=$ROUNDS
idle_count=$IDLE_N
settings=sysbench $SB_TIME s per window; $TABLES tables x $TABLE_SIZE rows; churn $CHURN_S s at $CHURN_THREADS threads; rotation windows $ROT_S s at $ROT_THREADS threads with POST /v1/rotate every $ROT_EVERY s; idle $IDLE_N connections (measured once)
EOF
mkdir -p "$(dirname "$OUT")"
"$BENCH" report --results "$RESULTS" --machine "$WORK/machine.txt" --metrics "$WORK/metrics.txt" --out "$OUT"
say "report written to $OUT"
