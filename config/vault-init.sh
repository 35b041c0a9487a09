#!/usr/bin/env bash
# Configures a Vault server (real Vault or the test kit's stand-in) for sqlease,
# over Vault's HTTP API with curl, the way an operator would:
#
#   1. enable the database secrets engine at database/ ("already in use" is fine)
#   2. configure the MySQL connection with a templated URL
#      ({{username}}:{{password}}@tcp(host:port)/) and the admin credentials
#   3. create a dynamic role (default TTL 1h, max 24h)
#   4. write a minimal policy: read database/creds/<role>, update
#      sys/leases/renew and sys/leases/revoke (token self-endpoints and
#      sys/leases/lookup come from Vault's default policy)
#   5. enable AppRole ("already in use" is fine) and create an AppRole role
#   6. print the RoleID and a fresh SecretID
#
# Inputs (environment):
#   VAULT_ADDR               required, e.g. http://127.0.0.1:8200
#   VAULT_TOKEN              required, a root/admin token
#   MYSQL_HOST               default 127.0.0.1 (as seen from Vault)
#   MYSQL_PORT               default 3306
#   MYSQL_ADMIN_USER         default root
#   MYSQL_ADMIN_PASSWORD     required
#   SQLEASE_DB_CONNECTION    default mysql     (database/config/<name>)
#   SQLEASE_DB_ROLE          default sqlease   (database/roles/<name>)
#   SQLEASE_DEFAULT_TTL      default 1h
#   SQLEASE_MAX_TTL          default 24h
#   SQLEASE_DB_GRANTS        default "ALL PRIVILEGES ON *.*" (GRANT <this> TO the user)
#   SQLEASE_POLICY           default sqlease
#   SQLEASE_APPROLE          default sqlease   (auth/approle/role/<name>)
#   SQLEASE_TOKEN_TTL        default 1h
#   SQLEASE_TOKEN_MAX_TTL    default 24h
#   SQLEASE_TOKEN_TYPE       default service   (service|batch)
#   SQLEASE_ROLE_ID_FILE     optional: write the RoleID there
#   SQLEASE_SECRET_ID_FILE   optional: write the SecretID there (mode 0600)
#
# Output (stdout), one KEY=VALUE per line:
#   VLT_ROLE_ID=<role id>
#   VLT_SECRET_ID=<secret id>            (when SQLEASE_SECRET_ID_FILE is unset)
#   VLT_SECRET_ID_FILE=<path>            (when it is set; the secret is not printed)
# Progress messages go to stderr. Exits non-zero on the first failed call.
set -euo pipefail

: "${VAULT_ADDR:?VAULT_ADDR is required}"
: "${VAULT_TOKEN:?VAULT_TOKEN is required}"
: "${MYSQL_ADMIN_PASSWORD:?MYSQL_ADMIN_PASSWORD is required}"
MYSQL_HOST="${MYSQL_HOST:-127.0.0.1}"
MYSQL_PORT="${MYSQL_PORT:-3306}"
MYSQL_ADMIN_USER="${MYSQL_ADMIN_USER:-root}"
DB_CONNECTION="${SQLEASE_DB_CONNECTION:-mysql}"
DB_ROLE="${SQLEASE_DB_ROLE:-sqlease}"
DEFAULT_TTL="${SQLEASE_DEFAULT_TTL:-1h}"
MAX_TTL="${SQLEASE_MAX_TTL:-24h}"
DB_GRANTS="${SQLEASE_DB_GRANTS:-ALL PRIVILEGES ON *.*}"
POLICY="${SQLEASE_POLICY:-sqlease}"
APPROLE="${SQLEASE_APPROLE:-sqlease}"
TOKEN_TTL="${SQLEASE_TOKEN_TTL:-1h}"
TOKEN_MAX_TTL="${SQLEASE_TOKEN_MAX_TTL:-24h}"
TOKEN_TYPE="${SQLEASE_TOKEN_TYPE:-service}"

command -v curl >/dev/null 2>&1 || { echo "vault-init: curl is required" >&2; exit 2; }

log() { echo "vault-init: $*" >&2; }

# JSON string literal for $1 (escapes backslash, quote, control characters).
json_str() {
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/\\n}
  s=${s//$'\t'/\\t}
  s=${s//$'\r'/\\r}
  printf '"%s"' "$s"
}

# vault METHOD PATH [BODY] [TOLERATED_ERROR_SUBSTRING]; response body on stdout.
vault() {
  local method=$1 path=$2 body=${3:-} tolerate=${4:-} out status
  out=$(mktemp)
  local args=(-sS -o "$out" -w '%{http_code}' -X "$method"
    -H "X-Vault-Token: ${VAULT_TOKEN}" -H "X-Vault-Request: true"
    "${VAULT_ADDR%/}/v1/${path}")
  if [ -n "$body" ]; then
    args+=(-H "Content-Type: application/json" --data-binary @-)
    status=$(printf '%s' "$body" | curl "${args[@]}") || { rm -f "$out"; log "$method $path: connection failed"; return 1; }
  else
    status=$(curl "${args[@]}") || { rm -f "$out"; log "$method $path: connection failed"; return 1; }
  fi
  if [ "$status" -ge 400 ]; then
    if [ -n "$tolerate" ] && grep -q "$tolerate" "$out"; then
      log "$method $path: $tolerate (ok)"
      rm -f "$out"
      return 0
    fi
    log "$method $path: HTTP $status: $(cat "$out")"
    rm -f "$out"
    return 1
  fi
  cat "$out"
  rm -f "$out"
}

# Value of string field $1 in the JSON on stdin (flat extraction, no jq needed).
field() {
  sed -n "s/.*\"$1\":[[:space:]]*\"\\([^\"]*\\)\".*/\\1/p" | head -n 1
}

log "enabling the database secrets engine at database/"
vault POST sys/mounts/database '{"type":"database"}' "path is already in use" >/dev/null

log "configuring connection database/config/${DB_CONNECTION} -> ${MYSQL_HOST}:${MYSQL_PORT}"
vault POST "database/config/${DB_CONNECTION}" "{
  \"plugin_name\": \"mysql-database-plugin\",
  \"connection_url\": $(json_str "{{username}}:{{password}}@tcp(${MYSQL_HOST}:${MYSQL_PORT})/"),
  \"username\": $(json_str "$MYSQL_ADMIN_USER"),
  \"password\": $(json_str "$MYSQL_ADMIN_PASSWORD"),
  \"allowed_roles\": [$(json_str "$DB_ROLE")]
}" >/dev/null

log "creating dynamic role database/roles/${DB_ROLE} (default_ttl ${DEFAULT_TTL}, max_ttl ${MAX_TTL})"
vault POST "database/roles/${DB_ROLE}" "{
  \"db_name\": $(json_str "$DB_CONNECTION"),
  \"creation_statements\": [
    \"CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'\",
    $(json_str "GRANT ${DB_GRANTS} TO '{{name}}'@'%'")
  ],
  \"default_ttl\": $(json_str "$DEFAULT_TTL"),
  \"max_ttl\": $(json_str "$MAX_TTL")
}" >/dev/null

log "writing policy ${POLICY}"
POLICY_HCL="path \"database/creds/${DB_ROLE}\" {
  capabilities = [\"read\"]
}
path \"sys/leases/renew\" {
  capabilities = [\"update\"]
}
path \"sys/leases/revoke\" {
  capabilities = [\"update\"]
}
"
vault PUT "sys/policies/acl/${POLICY}" "{\"policy\": $(json_str "$POLICY_HCL")}" >/dev/null

log "enabling AppRole at auth/approle/"
vault POST sys/auth/approle '{"type":"approle"}' "path is already in use" >/dev/null

log "creating AppRole role ${APPROLE} (token_ttl ${TOKEN_TTL}, token_max_ttl ${TOKEN_MAX_TTL}, ${TOKEN_TYPE})"
vault POST "auth/approle/role/${APPROLE}" "{
  \"token_policies\": [$(json_str "$POLICY")],
  \"token_ttl\": $(json_str "$TOKEN_TTL"),
  \"token_max_ttl\": $(json_str "$TOKEN_MAX_TTL"),
  \"token_type\": $(json_str "$TOKEN_TYPE")
}" >/dev/null

ROLE_ID=$(vault GET "auth/approle/role/${APPROLE}/role-id" | field role_id)
SECRET_ID=$(vault POST "auth/approle/role/${APPROLE}/secret-id" '{}' | field secret_id)
if [ -z "$ROLE_ID" ] || [ -z "$SECRET_ID" ]; then
  log "could not read role_id/secret_id"
  exit 1
fi

if [ -n "${SQLEASE_ROLE_ID_FILE:-}" ]; then
  printf '%s\n' "$ROLE_ID" >"$SQLEASE_ROLE_ID_FILE"
fi
echo "VLT_ROLE_ID=${ROLE_ID}"
if [ -n "${SQLEASE_SECRET_ID_FILE:-}" ]; then
  (umask 077 && printf '%s\n' "$SECRET_ID" >"$SQLEASE_SECRET_ID_FILE")
  echo "VLT_SECRET_ID_FILE=${SQLEASE_SECRET_ID_FILE}"
else
  echo "VLT_SECRET_ID=${SECRET_ID}"
fi
log "done"
