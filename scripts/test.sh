#!/usr/bin/env bash
# The test command (README): installs what the tests need when it is
# missing, then runs the gates and the whole test suite.
#
#   scripts/test.sh            # gates + all tests
#   scripts/test.sh --no-gates # tests only
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need_pkgs+=(mariadb-server)
command -v mariadb >/dev/null 2>&1 || need_pkgs+=(mariadb-client)
command -v sysbench >/dev/null 2>&1 || need_pkgs+=(sysbench)
command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)
# client compatibility tests (tests/compat.rs, docs/compat.md)
command -v php >/dev/null 2>&1 || need_pkgs+=(php-cli)
{ php -r 'exit(extension_loaded("pdo_mysql") && extension_loaded("mysqli") ? 0 : 1);'; } >/dev/null 2>&1 || need_pkgs+=(php-mysql)
ruby -e 'require "mysql2"' >/dev/null 2>&1 || need_pkgs+=(ruby-mysql2)
perl -MDBD::MariaDB -MJSON::PP -e1 >/dev/null 2>&1 || need_pkgs+=(libdbd-mariadb-perl)
command -v node >/dev/null 2>&1 || need_pkgs+=(nodejs)
command -v npm >/dev/null 2>&1 || need_pkgs+=(npm)
command -v python3 >/dev/null 2>&1 || need_pkgs+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_pkgs+=(python3-venv)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "installing: ${need_pkgs[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

# Python clients into a venv under target/, npm clients into
# tests/compat/node/node_modules, each redone only when its lock file changed.
compat_venv=target/compat-venv
compat_req=tests/compat/python/requirements.txt
if ! cmp -s "$compat_req" "$compat_venv/.installed-requirements.txt"; then
  echo "installing Python clients into $compat_venv"
  python3 -m venv "$compat_venv"
  "$compat_venv/bin/pip" install -q --disable-pip-version-check -r "$compat_req"
  cp "$compat_req" "$compat_venv/.installed-requirements.txt"
fi
compat_node=tests/compat/node
if ! cmp -s "$compat_node/package-lock.json" "$compat_node/node_modules/.installed-package-lock.json"; then
  echo "installing Node.js clients into $compat_node/node_modules"
  (cd "$compat_node" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$compat_node/package-lock.json" "$compat_node/node_modules/.installed-package-lock.json"
fi

if [ "${1:-}" != "--no-gates" ]; then
  cargo fmt --all --check
  cargo clippy --workspace --all-targets -- -D warnings
fi

if command -v vault >/dev/null 2>&1; then
  echo "note: 'vault' is on PATH: the Vault tests also run against 'vault server -dev'"
else
  echo "note: 'vault' is not on PATH: the Vault tests run against the stand-in only (real-Vault runs are reported as skipped)"
fi

cargo test --workspace -- --test-threads="${SQLEASE_TEST_THREADS:-4}"
