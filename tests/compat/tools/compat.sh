#!/usr/bin/env bash
# MariaDB's command-line tools: the `mariadb` CLI (text queries, server-side
# PREPARE/EXECUTE, --force after an error, resetconnection), `mariadb-dump`
# of a schema with routines, triggers and a view restored with `mariadb`,
# and `mariadb-import` (LOAD DATA LOCAL). Reads COMPAT_HOST/PORT/USER/
# PASSWORD/DB and prints one JSON line; COMPAT_ROTATION=0 skips the rotation
# loop.
set -uo pipefail

H=${COMPAT_HOST:-127.0.0.1}
DB=$COMPAT_DB
LOOP_SECS=${COMPAT_LOOP_SECS:-4}
CONN=(--no-defaults --protocol=tcp "-h$H" "-P$COMPAT_PORT" "-u$COMPAT_USER" "-p$COMPAT_PASSWORD" --default-character-set=utf8mb4)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

failures=()
facts=()
fail() { failures+=("$1"); }
jstr() { local s=${1//\\/\\\\}; s=${s//\"/\\\"}; s=${s//$'\t'/\\t}; s=${s//$'\n'/\\n}; printf '"%s"' "$s"; }
jarr() { local out="" v; for v in "$@"; do out+="${out:+,}$(jstr "$v")"; done; printf '[%s]' "$out"; }
fact() { facts+=("$(jstr "$1"):$2"); }
# sql DB_NAME SQL: runs SQL with -N -B; stdout kept, a failure is recorded.
sql() {
  local out
  if ! out=$(mariadb "${CONN[@]}" -N -B "$1" -e "$2" 2>"$TMP/err"); then
    fail "$(head -c 300 "$TMP/err")"
    return 1
  fi
  printf '%s' "$out"
}

version="$(mariadb --version | sed 's/^mariadb *//'); $(mariadb-dump --version | sed 's/^mariadb-dump *//')"

# text query
IFS=$'\t' read -r -a row <<<"$(sql "$DB" "SELECT 1 + 1, 'x'")"
fact text_query "$(jarr "${row[@]}")"

# prepared statement (text protocol PREPARE / EXECUTE ... USING)
sql "$DB" "DROP TABLE IF EXISTS t; CREATE TABLE t (id INT PRIMARY KEY, d DECIMAL(12,4), s VARCHAR(100), dt DATETIME(6), n INT NULL, b BLOB) CHARSET utf8mb4" >/dev/null
out=$(sql "$DB" "SET @i = 42, @d = '12345.6789', @s = 'héllo 😀 wörld ✓', @dt = '2024-02-29 13:14:15.123456', @n = NULL, @b = UNHEX('000102FFFE275C00');
PREPARE ins FROM 'INSERT INTO t VALUES (?, ?, ?, ?, ?, ?)';
EXECUTE ins USING @i, @d, @s, @dt, @n, @b;
PREPARE rb FROM 'SELECT id, CAST(d AS CHAR), s, CHAR_LENGTH(s), DATE_FORMAT(dt, ''%Y-%m-%d %H:%i:%s.%f''), n IS NULL, HEX(b) FROM t WHERE id = ?';
EXECUTE rb USING @i;")
IFS=$'\t' read -r -a row <<<"$out"
fact readback "$(jarr "${row[@]}")"

# a 50k-row result
sql "$DB" "SELECT seq, CONCAT('row-', seq) FROM seq_1_to_50000" >"$TMP/big"
fact big_rows "$(grep -c '' "$TMP/big")"
fact big_sum "$(awk -F'\t' '{s += $1} END {printf "%d", s}' "$TMP/big")"
[ "$(tail -n1 "$TMP/big")" = $'50000\trow-50000' ] || fail "big: last row $(tail -n1 "$TMP/big")"

# a transaction with rollback
out=$(sql "$DB" "DROP TABLE IF EXISTS tx; CREATE TABLE tx (id INT PRIMARY KEY) ENGINE=InnoDB;
BEGIN; INSERT INTO tx VALUES (1); ROLLBACK; SELECT COUNT(*) FROM tx;
START TRANSACTION; INSERT INTO tx VALUES (2); COMMIT; SELECT COUNT(*) FROM tx;")
fact after_rollback "$(sed -n 1p <<<"$out")"
fact after_commit "$(sed -n 2p <<<"$out")"

# a syntax error, then more work in the same session (--force)
out=$(mariadb "${CONN[@]}" -N -B --force "$DB" 2>"$TMP/err" <<<"SELECT CONNECTION_ID(); SELEC 1; SELECT 2; SELECT CONNECTION_ID();")
code=$(sed -n 's/^ERROR \([0-9]*\) .*/\1/p' "$TMP/err" | head -n1)
fact syntax_error_code "${code:-null}"
fact after_error "$(sed -n 2p <<<"$out")"
if [ "$(sed -n 1p <<<"$out")" = "$(sed -n 3p <<<"$out")" ] && [ -n "$(sed -n 1p <<<"$out")" ]; then
  fact same_conn_after_error true
else
  fact same_conn_after_error false
fi

# The CLI has no pool and (in 10.11) no resetconnection command: its
# `connect` (\r) reconnects and logs in again in the same CLI session.
out=$(mariadb "${CONN[@]}" -N -B "$DB" 2>"$TMP/err" <<<"SET @x = 42; BEGIN; INSERT INTO tx VALUES (10);
connect
SELECT @x IS NULL, (SELECT COUNT(*) FROM tx WHERE id = 10), 3;") || fail "reconnect: $(head -c 300 "$TMP/err")"
IFS=$'\t' read -r -a row <<<"$out"
fact reconnect_after "$(jarr "${row[@]}")"

# mariadb-dump of a schema with a procedure, a function, a trigger and a view,
# restored with the mariadb CLI into another schema
mariadb "${CONN[@]}" "$DB" 2>"$TMP/err" <<'SQL' || fail "schema: $(head -c 300 "$TMP/err")"
CREATE TABLE acct (id INT PRIMARY KEY, bal DECIMAL(10,2), note VARCHAR(50)) CHARSET utf8mb4;
CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, acct INT, delta DECIMAL(10,2));
CREATE TRIGGER acct_au AFTER UPDATE ON acct FOR EACH ROW INSERT INTO audit (acct, delta) VALUES (NEW.id, NEW.bal - OLD.bal);
CREATE FUNCTION fee(x DECIMAL(10,2)) RETURNS DECIMAL(10,2) DETERMINISTIC RETURN ROUND(x * 0.01, 2);
DELIMITER //
CREATE PROCEDURE pay(IN a INT, IN amt DECIMAL(10,2))
BEGIN
  UPDATE acct SET bal = bal - amt - fee(amt) WHERE id = a;
  SELECT bal FROM acct WHERE id = a;
END//
DELIMITER ;
CREATE VIEW rich AS SELECT id, note FROM acct WHERE bal > 100;
INSERT INTO acct VALUES (1, 500, 'café 😀'), (2, 50, 'two');
SQL
if mariadb-dump "${CONN[@]}" --routines --triggers --events --single-transaction "$DB" acct audit rich >"$TMP/dump.sql" 2>"$TMP/err"; then
  fact dump_has_routines "$(grep -c -E 'CREATE .*(PROCEDURE|FUNCTION)' "$TMP/dump.sql")"
  fact dump_has_trigger "$(grep -c 'CREATE.*TRIGGER' "$TMP/dump.sql")"
  sql "" "DROP DATABASE IF EXISTS ${DB}_r; CREATE DATABASE ${DB}_r" >/dev/null
  if mariadb "${CONN[@]}" "${DB}_r" <"$TMP/dump.sql" 2>"$TMP/err"; then
    out=$(sql "${DB}_r" "CALL pay(1, 100); SELECT COUNT(*), SUM(delta) FROM audit; SELECT note FROM rich; SELECT fee(1000);
SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE();")
    mapfile -t lines <<<"$out"
    fact restored "$(jarr "${lines[@]}")"
  else
    fail "restore: $(head -c 300 "$TMP/err")"
  fi
else
  fail "mariadb-dump: $(head -c 300 "$TMP/err")"
fi

# mariadb-import (LOAD DATA LOCAL INFILE) of a tab-separated file
sql "$DB" "CREATE TABLE imp (id INT PRIMARY KEY, v VARCHAR(40)) CHARSET utf8mb4" >/dev/null
for i in $(seq 1 2000); do printf '%d\tv%d \xe2\x9c\x93\n' "$i" "$i"; done >"$TMP/imp.txt"
if imp=$(mariadb-import "${CONN[@]}" --local "$DB" "$TMP/imp.txt" 2>"$TMP/err"); then
  fact import_report "$(jstr "${imp#*: }")"
  IFS=$'\t' read -r -a row <<<"$(sql "$DB" "SELECT COUNT(*), SUM(id), MAX(CHAR_LENGTH(v)) FROM imp")"
  fact imported "$(jarr "${row[@]}")"
else
  fail "mariadb-import: $(head -c 300 "$TMP/err")"
fi

# rotation: one CLI session reading statements for LOOP_SECS
rotation=null
if [ "${COMPAT_ROTATION:-1}" = 1 ]; then
  exec 3>&1
  {
    # the session is logged in before the loop (and the rotations) start
    echo "SELECT 'ready';"
    for _ in $(seq 1 200); do grep -q '^ready' "$TMP/loop" 2>/dev/null && break; sleep 0.05; done
    echo LOOP_START >&3
    end=$(($(date +%s%N) + LOOP_SECS * 1000000000))
    i=0
    while [ "$(date +%s%N)" -lt "$end" ]; do
      i=$((i + 1))
      echo "SELECT 'it', CURRENT_USER(), CONNECTION_ID(), $i + 1;"
      [ $((i % 10)) = 1 ] && echo "status"
      sleep 0.02
    done
    echo "SELECT 'iterations', $i;"
  } | mariadb "${CONN[@]}" -N -B --unbuffered "$DB" >"$TMP/loop" 2>"$TMP/err"
  rc=$?
  iterations=$(awk -F'\t' '$1 == "iterations" {print $2}' "$TMP/loop")
  ok=$(awk -F'\t' '$1 == "it"' "$TMP/loop" | wc -l)
  users=$(awk -F'\t' '$1 == "it" {print $2}' "$TMP/loop" | awk '!seen[$0]++')
  sids=$(awk -F'\t' '$1 == "it" {print $3}' "$TMP/loop" | awk '!seen[$0]++' | paste -sd, -)
  cids=$(sed -n 's/^Connection id:[[:space:]]*//p' "$TMP/loop" | awk '!seen[$0]++' | paste -sd, -)
  errors=$(( ${iterations:-0} - ok ))
  [ "$rc" = 0 ] || errors=$((errors + 1))
  first_error=null
  [ -s "$TMP/err" ] && first_error=$(jstr "$(head -c 300 "$TMP/err")")
  mapfile -t ua <<<"$users"
  rotation="{\"iterations\":${iterations:-0},\"errors\":$errors,\"first_error\":$first_error,\"users\":$(jarr "${ua[@]}"),\"conn_ids\":[$cids],\"server_ids\":[$sids]}"
fi

fs=""; for f in "${facts[@]}"; do fs+="${fs:+,}$f"; done
printf '{"client":"mariadb-tools","version":%s,"failures":%s,"facts":{%s},"rotation":%s}\n' \
  "$(jstr "$version")" "$(if [ ${#failures[@]} -gt 0 ]; then jarr "${failures[@]}"; else echo '[]'; fi)" "$fs" "$rotation"
