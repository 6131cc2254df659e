#!/usr/bin/env bash
# test/demo/burst.sh: the burst scenario, `make demo`'s main act.
#
# Several hundred clients send orders through PgBouncer (transaction pooling)
# for a fixed time, twice, against the same server with the same requests:
#
#   direct    each request runs demo.process_order in the client's own
#             transaction, as a front end hitting the database would;
#   buffered  each request is a queue.send; a consumer with a small
#             max_concurrency (and optionally a rate limit) drains the queue
#             through the same demo.process_order, in batches.
#
# test/demo/loadgen.c drives the clients and samples the server; this script
# sets up the workload (test/demo/schema.sql), starts and stops PgBouncer,
# checks each run's result against the requests the clients saw accepted
# (test/demo/check.sql), draws the plot (test/demo/plot.gp) and prints the
# table.  It runs against the cluster that PGHOST, PGPORT, PGUSER (a
# superuser) and PGDATABASE name: test/run --demo starts a throwaway one.
#
# Options (also as environment variables in brackets):
#   --clients N      concurrent clients, each one connection (DEMO_CLIENTS, 500)
#   --duration S     seconds of burst per run (DEMO_DURATION, 15)
#   --rate R         requests per second per client (DEMO_RATE, 4)
#   --timeout S      a client's patience per request (DEMO_TIMEOUT, 10)
#   --pool N         PgBouncer's server connections (DEMO_POOL, 40)
#   --workers N      the consumer's max_concurrency (DEMO_WORKERS, 2)
#   --batch N        the consumer's batch_size (DEMO_BATCH, 50)
#   --rate-limit R   the consumer's rate_limit, messages/s (DEMO_RATE_LIMIT, none)
#   --out DIR        where files go (DEMO_OUT, demo/out)
#   --check          the short version `make test` runs: 20 clients x 25
#                    requests/s, 4 seconds, files in demo/out/check; exits
#                    non-zero unless both runs pass the correctness check
#                    and the sampler saw the buffered run's workers at work,
#                    never more of them than --workers
#   --settle S       most seconds to wait for the queue to drain (DEMO_SETTLE, 300)
#
# Every run exits non-zero when a correctness check fails or the buffered
# run's processing backends exceeded --workers.
#
# Writes to DIR: burst-STAMP.png (the plot), burst-STAMP.txt (the table) and
# burst-STAMP-{direct,buffered}-*.csv/.tsv/.txt (the raw data of each run).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)

# --check changes the defaults, so it is looked for first
check=0
for arg in "$@"; do [ "$arg" = --check ] && check=1; done
if [ $check = 1 ]; then
  clients=${DEMO_CLIENTS:-20}; duration=${DEMO_DURATION:-4}; rate=${DEMO_RATE:-25}
  pool=${DEMO_POOL:-8}; batch=${DEMO_BATCH:-20}; settle=${DEMO_SETTLE:-60}
  out=${DEMO_OUT:-$top/demo/out/check}
else
  clients=${DEMO_CLIENTS:-500}; duration=${DEMO_DURATION:-15}; rate=${DEMO_RATE:-4}
  pool=${DEMO_POOL:-40}; batch=${DEMO_BATCH:-50}; settle=${DEMO_SETTLE:-300}
  out=${DEMO_OUT:-$top/demo/out}
fi
timeout=${DEMO_TIMEOUT:-10}
workers=${DEMO_WORKERS:-2}
rate_limit=${DEMO_RATE_LIMIT:-}
products=1000
hot_products=5
customers=2000

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --clients) clients=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    --pool) pool=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --rate-limit) rate_limit=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --settle) settle=$2; shift 2 ;;
    --check) shift ;;
    -h|--help) usage ;;
    *) echo "burst.sh: unknown option $1" >&2; usage ;;
  esac
done

command -v pgbouncer >/dev/null || PATH="$PATH:/usr/sbin"
for tool in pgbouncer gnuplot cc psql; do
  command -v "$tool" >/dev/null || { echo "burst.sh: $tool is missing" >&2; exit 1; }
done

mkdir -p "$out"
stamp=$(date +%Y%m%d-%H%M%S)
base=$out/burst-$stamp
scratch=$(mktemp -d /tmp/queue-burst.XXXXXX)
bouncer_pid=
loadgen_pid=

stop_bouncer() {
  [ -n "$bouncer_pid" ] || return 0
  kill -TERM "$bouncer_pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$bouncer_pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$bouncer_pid" 2>/dev/null || true
  wait "$bouncer_pid" 2>/dev/null || true
  bouncer_pid=
}
cleanup() {
  [ -n "$loadgen_pid" ] && kill -TERM "$loadgen_pid" 2>/dev/null
  stop_bouncer
  rm -rf "$scratch"
}
trap cleanup EXIT
trap 'echo; echo "burst.sh: interrupted" >&2; exit 130' INT TERM

sql() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }

# The first free TCP port from 6500 on, for PgBouncer.
bouncer_port() {
  local port=6500
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
  echo "$port"
}

start_bouncer() {
  local port conf=$scratch/pgbouncer.ini
  port=$(bouncer_port)
  cat >"$conf" <<EOF
[databases]
demo = host=$PGHOST port=$PGPORT dbname=$PGDATABASE user=demo
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = any
pool_mode = transaction
default_pool_size = $pool
max_db_connections = $pool
max_client_conn = $((2 * clients + 100))
query_wait_timeout = $(( (timeout + 1) / 2 ))
logfile = $scratch/pgbouncer.log
log_connections = 0
log_disconnections = 0
EOF
  # clients that gave up reconnect before PgBouncer has noticed, so it
  # admits twice as many as there are; raise the descriptor limit to match
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  pgbouncer -q "$conf" &
  bouncer_pid=$!
  for _ in $(seq 50); do
    psql -X -q -At -h 127.0.0.1 -p "$port" -d demo -c 'SELECT 1' >/dev/null 2>&1 && break
    sleep 0.1
  done
  psql -X -q -At -h 127.0.0.1 -p "$port" -d demo -c 'SELECT 1' >/dev/null \
    || { cat "$scratch/pgbouncer.log" >&2; exit 1; }
  target="host=127.0.0.1 port=$port dbname=demo connect_timeout=10"
}

# One run: fresh workload, PgBouncer, the burst, the drain, the check.
run() {
  local mode=$1
  local prefix=$base-$mode
  sql -v products=$products -v hot_products=$hot_products -v customers=$customers \
      -v stock=1000000000 -f "$here/schema.sql" >/dev/null
  sql -c "ALTER ROLE demo SET statement_timeout = '${timeout}s'"
  if [ "$mode" = buffered ]; then
    sql -c "SET ROLE demo" -c "SELECT queue.subscribe('orders_consumer', 'orders',
              'demo.handle_orders(queue.message[])', batch_size => $batch,
              max_concurrency => $workers, rate_limit => ${rate_limit:-NULL})" >/dev/null
  fi
  sql -c "CHECKPOINT"
  start_bouncer
  local deadlocks0
  deadlocks0=$(sql -c "SELECT sum(deadlocks) FROM pg_stat_database")

  local rc=0
  "$scratch/loadgen" --target "$target" --monitor "dbname=$PGDATABASE" \
    --mode "$mode" --clients "$clients" --duration "$duration" --rate "$rate" \
    --timeout "$timeout" --products $products --hot-products $hot_products \
    --customers $customers --out "$prefix" --settle "$settle" $([ $check = 1 ] && echo --quiet) &
  loadgen_pid=$!
  wait "$loadgen_pid" || rc=$?
  loadgen_pid=
  [ $rc -eq 0 ] || { echo "burst.sh: loadgen exited $rc" >&2; exit $rc; }
  stop_bouncer   # its server connections end, so their statistics are flushed

  local start
  start=$(sed -n 's/^start_epoch=//p' "$prefix-summary.txt")
  sql -c "COPY (SELECT floor(extract(epoch FROM created_at) - $start)::int AS second, count(*)
                  FROM demo.orders GROUP BY 1 ORDER BY 1) TO STDOUT WITH (FORMAT csv, HEADER)" \
    >"$prefix-processed.csv"
  sleep 1
  {
    echo "deadlocks=$(sql -c "SELECT sum(deadlocks) - $deadlocks0 FROM pg_stat_database")"
    sql -F= -c "SELECT 'processed', count(*) FROM demo.orders" \
            -c "SELECT 'all_processed_at', round((extract(epoch FROM max(created_at)) - $start)::numeric, 1)
                  FROM demo.orders"
    sql -F= -f "$here/check.sql" <"$prefix-requests.tsv"
  } >>"$prefix-summary.txt"
  if [ "$mode" = buffered ]; then
    sql -c "SET ROLE demo" -c "SELECT queue.unsubscribe('orders_consumer')" >/dev/null
  fi
}

echo "== building the load generator"
cc -O2 -Wall -Wextra -Werror -I"$(pg_config --includedir)" "$here/loadgen.c" \
  -o "$scratch/loadgen" -lpq -lm

sql -c "CREATE EXTENSION IF NOT EXISTS queue"
# the global cap on drain workers must let the consumer's own through
sql -c "ALTER SYSTEM SET queue.max_workers = $((workers > 4 ? workers : 4))" -c "SELECT pg_reload_conf()" >/dev/null

cat <<EOF
== the burst: $clients clients x $rate requests/s for ${duration}s through PgBouncer
   (pool of $pool server connections, client patience ${timeout}s), twice:
   direct: each request processes its order in its own transaction
   buffered: each request is a queue.send; a consumer of max_concurrency $workers,
   batches of $batch${rate_limit:+, rate_limit $rate_limit/s} drains it
EOF
run direct
run buffered

# ---- report ------------------------------------------------------------------

get() { sed -n "s/^$2=//p" "$base-$1-summary.txt" | tail -n 1; }

report=$base.txt
{
  printf '%-40s %14s %14s\n' "" direct buffered
  row() { printf '%-40s %14s %14s\n' "$1" "$2" "$3"; }
  row "requests offered" "$(get direct offered)" "$(get buffered offered)"
  row "accepted" "$(get direct accepted)" "$(get buffered accepted)"
  acc_rate() { awk -v a="$(get "$1" accepted)" -v d="$duration" 'BEGIN { printf "%.0f", a / d }'; }
  row "accepted per second of burst" "$(acc_rate direct)" "$(acc_rate buffered)"
  row "failed (error answer)" "$(get direct failed)" "$(get buffered failed)"
  row "expired (patience ran out unsent)" "$(get direct expired)" "$(get buffered expired)"
  doubt() { echo "$(get "$1" in_doubt) ($(get "$1" in_doubt_processed) done)"; }
  row "in doubt (timed out in flight)" "$(doubt direct)" "$(doubt buffered)"
  row "client latency p50 / p99, ms" "$(get direct p50_ms) / $(get direct p99_ms)" \
      "$(get buffered p50_ms) / $(get buffered p99_ms)"
  row "peak backends processing orders" "$(get direct peak_processing)" "$(get buffered peak_processing)"
  row "peak backends waiting on a lock" "$(get direct peak_lock_waits)" "$(get buffered peak_lock_waits)"
  row "lock waits, backend-seconds" "$(get direct lock_wait_seconds)" "$(get buffered lock_wait_seconds)"
  row "deadlocks" "$(get direct deadlocks)" "$(get buffered deadlocks)"
  row "orders processed" "$(get direct processed)" "$(get buffered processed)"
  row "all accepted work done at, s" "$(get direct all_processed_at)" "$(get buffered all_processed_at)"
  row "correctness check" "$(get direct check)" "$(get buffered check)"
} >"$report"
{
  for m in direct buffered; do
    if [ -s "$base-$m-errors.txt" ]; then
      echo
      echo "what the $m run's clients saw go wrong (count, first line):"
      sort -rn "$base-$m-errors.txt" | head -n 5 | sed 's/^/  /'
    fi
  done
} >>"$report"
echo
echo "== results (the burst lasts ${duration}s in each run; times count from its start)"
cat "$report"

gnuplot -e "direct='$base-direct'; buffered='$base-buffered'; png='$base.png';
            duration=$duration; workers=$workers; pool=$pool; clients=$clients; rate=$rate;
            timeout=$timeout" \
  "$here/plot.gp"
cp "$base.png" "$out/burst-latest.png"
cp "$report" "$out/burst-latest.txt"
# under the tree, paths are shown from its top: test/run copies them back
# from its unprivileged copy to the same place
show=${base#"$top"/}
echo
echo "plot: $show.png (the latest also as ${show%/*}/burst-latest.png)"
echo "data: $show-*"

status=0
for m in direct buffered; do
  if [ "$(get $m check)" != ok ]; then
    echo "FAILED: the $m run's correctness check:"
    grep -E '^(missing|extra|failed_processed|lines_wrong|stock_wrong|customers_wrong|queue_left|consumer_failures)=' \
      "$base-$m-summary.txt" | sed 's/^/  /'
    status=1
  fi
done
if [ "$(get buffered peak_processing)" -gt "$workers" ]; then
  echo "FAILED: the buffered run had $(get buffered peak_processing) processing backends, above its cap of $workers"
  status=1
fi
if [ $check = 1 ]; then
  # the cap's assertion means nothing if the sampler never saw a worker
  if [ "$(get buffered peak_processing)" -lt 1 ]; then
    echo "FAILED: the sampler never saw a drain worker in the handler"
    status=1
  fi
  [ $status = 0 ] && echo "burst check: correctness ok in both runs, buffered run within its cap of $workers workers"
fi
exit $status
