#!/usr/bin/env bash
# The scenario `make demo` runs on the throwaway cluster test/run started.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
echo "== queue demo: a queue at work (PostgreSQL $(psql -XAtc 'SHOW server_version'))"
psql -X -a -q -f "$here/demo.sql"
