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
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "installing: ${need_pkgs[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
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
