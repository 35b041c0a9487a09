#!/usr/bin/env bash
# Vault side of deploy/kubernetes/sqlease-sidecar.yaml, with the vault CLI
# (run by a Vault operator). The database engine, the MySQL connection and
# the dynamic role can also be set up with config/vault-init.sh (which uses
# AppRole); this script adds the Kubernetes auth method and binds the
# service account "orders" in namespace "${NAMESPACE:-default}" to the
# minimal sqlease policy.
set -euo pipefail
NAMESPACE="${NAMESPACE:-default}"
DB_ROLE="${DB_ROLE:-orders}"

# 1. Database engine and role (skip if config/vault-init.sh did it).
vault secrets enable -path=database database 2>/dev/null || true
vault write database/config/mysql \
  plugin_name=mysql-database-plugin \
  connection_url='{{username}}:{{password}}@tcp(mysql.databases.svc.cluster.local:3306)/' \
  allowed_roles="${DB_ROLE}" \
  username="${MYSQL_ADMIN_USER:-vault_admin}" password="${MYSQL_ADMIN_PASSWORD:?set MYSQL_ADMIN_PASSWORD}"
vault write "database/roles/${DB_ROLE}" db_name=mysql \
  creation_statements="CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'; GRANT SELECT, INSERT, UPDATE, DELETE ON orders.* TO '{{name}}'@'%';" \
  default_ttl=1h max_ttl=24h

# 2. The minimal policy (token self-renewal and lookups come from Vault's
#    default policy).
vault policy write "sqlease-${DB_ROLE}" - <<POLICY
path "database/creds/${DB_ROLE}" {
  capabilities = ["read"]
}
path "sys/leases/renew" {
  capabilities = ["update"]
}
path "sys/leases/revoke" {
  capabilities = ["update"]
}
POLICY

# 3. Kubernetes auth: Vault verifies the pod's service-account JWT.
vault auth enable kubernetes 2>/dev/null || true
vault write auth/kubernetes/config kubernetes_host="https://kubernetes.default.svc:443"
vault write auth/kubernetes/role/orders-sqlease \
  bound_service_account_names=orders \
  bound_service_account_namespaces="${NAMESPACE}" \
  token_policies="sqlease-${DB_ROLE}" \
  token_ttl=1h token_max_ttl=24h
