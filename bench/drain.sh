#!/usr/bin/env bash
# bench/drain.sh: how fast consumers drain a queue, next to the raw limit of
# the same server in the same run, and how soon a handler sees a committed
# message at low load.  bench/run calls it at its end (BENCH_DRAIN=0 skips
# it); it also runs alone against any server with queue preloaded, found
# through PGHOST, PGPORT, PGUSER (a superuser) and PGDATABASE.
#
# Throughput.  For each batch size and max_concurrency, a backlog of
# messages is sent to a queue whose consumer is paused (a no-op handler
# that returns NULL, owned by an ordinary role), the table is vacuumed and
# checkpointed, then the consumer is resumed and the queue polled (every
# 10 ms, from a session of its own, one short transaction a look) until it
# is empty.  The rate is the backlog over the time from the resume to the
# look that found the queue empty, so it includes the launcher starting the
# workers ("start" shows how long until the first batch committed).  The raw
# limit drains the same backlog from a plain table with pgbench, as many
# sessions as the consumer has workers, each running
#   DELETE FROM t WHERE id = ANY (ARRAY(SELECT id FROM t ORDER BY id
#     LIMIT <batch> FOR UPDATE SKIP LOCKED)) RETURNING *
# until the table is empty; its time is pgbench's, connections excluded.
# The sides of a cell run back to back (which goes first rotates), the
# repetitions are spread over the run, and the table shows medians, with
# the ratio as the median of the ratios of each repetition's pair.
#
# On a shared machine the rates move with other people's load; the CPU
# time the server spends per message moves much less.  So when the server
# runs on this host and its processes can be read in /proc, each run also
# counts the CPU time (user + system) of every server process, live or
# exited (the postmaster's reaped children), over the run: the workers,
# launcher and poller on one side, pgbench's backends on the other, WAL
# writer and checkpointer on both.  The table shows it per message.
#
# Latency.  A consumer with the default settings (batch_size 10,
# batch_window 0, max_concurrency 1) and a handler that records
# clock_timestamp() as it starts; one pgbench session sends one message a
# transaction at BENCH_LATENCY_RATE a second (Poisson arrivals), each
# carrying clock_timestamp() taken in its transaction just before the
# commit.  pgbench's log gives the time the commit returned to the client
# (same host, same clock).  The true commit lies between the two, so
#   handler start - sent_at      is an upper bound (it includes the commit's
#                                WAL flush and the reply), and
#   handler start - commit seen  is a lower bound.
# Both are reported, p50, p99 and max; the target is judged on the upper.
#
# Settings (environment):
#   BENCH_DRAIN_BATCHES      batch sizes (default "1 10 100")
#   BENCH_DRAIN_CONCURRENCY  max_concurrency, and raw sessions (default "1 2 4")
#   BENCH_DRAIN_FILL         backlog per run (default 200000; a tenth of it at
#                            batch size 1, whose drain is slow)
#   BENCH_REPEAT             runs per cell and side (default 3)
#   BENCH_LATENCY_SECONDS    length of the latency run (default 10)
#   BENCH_LATENCY_RATE       messages a second in it (default 50)
#   BENCH_QUICK=1            smoke run: a tenth of the backlog, one
#                            repetition, 3 seconds of latency
#   BENCH_OUT, BENCH_STAMP   where the files go, and their stamp (bench/run
#                            passes its own, so that one run's files sort
#                            together)
#
# Writes to BENCH_OUT: bench-STAMP-drain.txt (the printed report),
# bench-STAMP-drain-runs.csv (every run), bench-STAMP-drain-summary.csv (the
# table), bench-STAMP-drain-latency.csv (every message of the latency run)
# and bench-STAMP-drain-latency-summary.csv (its percentiles).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
command -v pgbench >/dev/null || PATH="$(pg_config --bindir):$PATH"

if [ "${BENCH_QUICK:-0}" = 1 ]; then
  fill_max=${BENCH_DRAIN_FILL:-20000}
  repeat=${BENCH_REPEAT:-1}
  lat_secs=${BENCH_LATENCY_SECONDS:-3}
else
  fill_max=${BENCH_DRAIN_FILL:-200000}
  repeat=${BENCH_REPEAT:-3}
  lat_secs=${BENCH_LATENCY_SECONDS:-10}
fi
batches=${BENCH_DRAIN_BATCHES:-"1 10 100"}
concurrencies=${BENCH_DRAIN_CONCURRENCY:-"1 2 4"}
lat_rate=${BENCH_LATENCY_RATE:-50}
out=${BENCH_OUT:-$here/out}
stamp=${BENCH_STAMP:-$(date +%Y%m%d-%H%M%S)}
ncpu=$(nproc)
hz=$(getconf CLK_TCK)

PAYLOAD='{"order_id": 12345, "customer": "c-42", "items": [1,2,3]}'
TARGET_RATIO=80		# % of the raw limit, at batch size 100
TARGET_P50_MS=5		# commit to handler, at low load

mkdir -p "$out"
report=$out/bench-$stamp-drain.txt
runs_csv=$out/bench-$stamp-drain-runs.csv
summary_csv=$out/bench-$stamp-drain-summary.csv
latency_csv=$out/bench-$stamp-drain-latency.csv
latency_summary_csv=$out/bench-$stamp-drain-latency-summary.csv
tmp=$(mktemp -d "$out/drain.XXXXXX")
chmod 755 "$tmp"

say() { printf '%s\n' "$*" | tee -a "$report"; }
sql() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }

# The poller: one session, kept open, one short transaction a look, so that
# polling neither pays a connection nor holds a snapshot (a snapshot held
# across the drain would keep every deleted index entry alive and slow both
# sides down; see bench/README.md).
coproc POLL { psql -X -q -At -F ' ' -v ON_ERROR_STOP=1 2>&1; }
poll() { printf '%s;\n' "$1" >&"${POLL[1]}"; IFS= read -r reply <&"${POLL[0]}"; printf '%s\n' "$reply"; }

# The postmaster's pid, when its /proc entry can be read (the server is on
# this host and runs as us, or we are root); else empty, and no CPU counts.
postmaster=$(poll "SELECT pg_backend_pid()")
postmaster=$(awk '{sub(/.*\) /, ""); print $2}' "/proc/$postmaster/stat" 2>/dev/null || true)
[ -r "/proc/${postmaster:-0}/stat" ] || postmaster=

# CPU clock ticks used by the server so far: every live process's user and
# system time, and the postmaster's reaped children's.
server_ticks() {
  [ -n "$postmaster" ] || return 0
  { for c in $(ps -o pid= --ppid "$postmaster"); do cat "/proc/$c/stat" 2>/dev/null || true; done
    echo "postmaster $(cat "/proc/$postmaster/stat")"; } |
    awk '{pm = ($1 == "postmaster"); sub(/.*\) /, "");
          t += $12 + $13; if (pm) t += $14 + $15} END {print t + 0}'
}

# Microseconds of server CPU per message, from two server_ticks and a count.
cpu_per_msg() {
  [ -n "$postmaster" ] || return 0
  awk -v a="$1" -v b="$2" -v m="$3" -v hz="$hz" 'BEGIN {printf "%.1f", (m > 0 ? (b - a) * 1e6 / hz / m : 0)}'
}

cleanup() {
  if [ -n "${POLL_PID:-}" ]; then kill "$POLL_PID" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# ---- setup ---------------------------------------------------------------------

# A consumer cannot be owned by a superuser: the handlers run as the
# ordinary role bench_consumer.
sql >/dev/null <<SQL
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS queue;
SELECT queue.unsubscribe('bench_drain', if_exists => true);
SELECT queue.unsubscribe('bench_latency', if_exists => true);
SELECT queue.drop('bench_drain', if_exists => true);
SELECT queue.drop('bench_latency', if_exists => true);
DROP TABLE IF EXISTS bench_drain_raw, bench_latency_ledger;
DROP FUNCTION IF EXISTS bench_noop(queue.message[]), bench_latency_handler(queue.message[]);
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bench_consumer') THEN
    CREATE ROLE bench_consumer LOGIN;
  END IF;
END \$\$;
CREATE TABLE bench_drain_raw (id bigserial PRIMARY KEY, payload jsonb NOT NULL);
CREATE TABLE bench_latency_ledger (n int, sent_at timestamptz, handled_at timestamptz, batch int);
GRANT INSERT ON bench_latency_ledger TO bench_consumer;
CREATE FUNCTION bench_noop(messages queue.message[]) RETURNS bigint[]
  LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END';
CREATE FUNCTION bench_latency_handler(messages queue.message[]) RETURNS bigint[]
  LANGUAGE plpgsql AS \$\$
DECLARE
  started timestamptz := clock_timestamp();
BEGIN
  INSERT INTO bench_latency_ledger
    SELECT (m.payload->>'n')::int, (m.payload->>'sent_at')::timestamptz, started, cardinality(messages)
      FROM unnest(messages) AS m;
  RETURN NULL;
END \$\$;
SELECT queue.create('bench_drain');
SELECT queue.create('bench_latency');
SELECT queue.grant('bench_drain', 'read', 'bench_consumer');
SELECT queue.grant('bench_latency', 'read', 'bench_consumer');
SET ROLE bench_consumer;
SELECT queue.subscribe('bench_drain', 'bench_drain', 'bench_noop(queue.message[])');
SELECT queue.pause('bench_drain');
RESET ROLE;
SQL
qtable=queue_internal.q$(sql -c "SELECT id FROM queue.queues WHERE queue_name = 'bench_drain'")

max_conc=$(tr ' ' '\n' <<<"$concurrencies" | sort -n | tail -n 1)
max_workers=$(sql -c "SELECT current_setting('queue.max_workers')")
if [ "$max_workers" -lt "$max_conc" ]; then
  echo "bench/drain.sh: queue.max_workers is $max_workers, below max_concurrency $max_conc; raise it" >&2
  exit 1
fi

setting() { sql -c "SELECT current_setting('$1')"; }
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
say "queue drain benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
say "machine: $ncpu x ${cpu:-unknown CPU}, $(uname -sr)"
say "server:  PostgreSQL $(setting server_version), fsync=$(setting fsync), synchronous_commit=$(setting synchronous_commit), shared_buffers=$(setting shared_buffers), queue.max_workers=$max_workers"
say "method:  backlog of $fill_max messages a run ($((fill_max / 10)) at batch size 1), $repeat runs per cell and side; consumer: no-op plpgsql handler; raw: pgbench -M prepared, one session per worker"
say ""

# ---- one run of each side ------------------------------------------------------

# The backlog of a run, in whole thousands (the queue is filled 1000 at a time).
fill_of() {
  local n=$fill_max
  [ "$1" = 1 ] && n=$((fill_max / 10))
  echo $(( n < 1000 ? 1000 : n / 1000 * 1000 ))
}

# Waits until the consumer runs no worker (a pause takes effect after the
# current batch).
wait_no_workers() {
  local i
  for ((i = 0; i < 3000; i++)); do
    [ "$(sql -c "SELECT count(*) FROM queue.workers WHERE consumer_name = '$1'")" = 0 ] && return 0
    sleep 0.01
  done
  echo "bench/drain.sh: the workers of $1 did not stop" >&2
  exit 1
}

consumer_counts() { sql -F ' ' -c "SELECT messages, batches, failures FROM queue.consumers WHERE consumer_name = 'bench_drain'"; }

declare -A rates=() starts=() ratios=() cpus=()
nruns=0

run_queue() {
  local rep=$1 batch=$2 conc=$3 fill=$4
  local m0 b0 f0 m1 b1 f1 cpu0 cpu t0 first="" now left workers maxw=0 secs rate start_ms left_after

  sql -c "SELECT queue.alter_consumer('bench_drain', batch_size => $batch, max_concurrency => $conc)" >/dev/null
  wait_no_workers bench_drain
  sql -c "SELECT queue.purge('bench_drain')" >/dev/null
  sql -c "DO \$\$ BEGIN FOR i IN 1..$((fill / 1000)) LOOP
            PERFORM queue.send_batch('bench_drain', array_fill('$PAYLOAD'::jsonb, ARRAY[1000]));
          END LOOP; END \$\$"
  sql -c "VACUUM (ANALYZE) $qtable"
  sql -c "CHECKPOINT"
  read -r m0 b0 f0 <<<"$(consumer_counts)"

  cpu0=$(server_ticks)
  t0=$(poll "SELECT extract(epoch FROM clock_timestamp()) FROM queue.resume('bench_drain')")
  while :; do
    read -r now left workers <<<"$(poll "SELECT extract(epoch FROM clock_timestamp()),
        (SELECT coalesce(messages, -1) FROM queue.queues WHERE queue_name = 'bench_drain'),
        (SELECT count(*) FROM queue.workers WHERE consumer_name = 'bench_drain')")"
    [ "$workers" -gt "$maxw" ] && maxw=$workers
    if [ -z "$first" ] && [ "$left" -ge 0 ] && [ "$left" -lt "$fill" ]; then first=$now; fi
    [ "$left" = 0 ] && break
    if awk -v a="$now" -v b="$t0" 'BEGIN {exit !(a - b > 900)}'; then
      say "  the consumer did not drain $fill messages in 15 minutes ($left left)"
      exit 1
    fi
    sleep 0.01
  done
  [ -n "$first" ] || first=$now
  cpu=$(cpu_per_msg "$cpu0" "$(server_ticks)" "$fill")
  sql -c "SELECT queue.pause('bench_drain')" >/dev/null
  wait_no_workers bench_drain
  read -r m1 b1 f1 <<<"$(consumer_counts)"
  left_after=$(sql -c "SELECT count(*) FROM $qtable")

  secs=$(awk -v a="$now" -v b="$t0" 'BEGIN {printf "%.3f", a - b}')
  start_ms=$(awk -v a="$first" -v b="$t0" 'BEGIN {printf "%.0f", 1000 * (a - b)}')
  rate=$(awk -v m="$fill" -v s="$secs" 'BEGIN {printf "%.0f", m / s}')
  if [ $((m1 - m0)) -ne "$fill" ] || [ $((f1 - f0)) -ne 0 ] || [ "$left_after" -ne 0 ]; then
    say "  note: the consumer handled $((m1 - m0)) of $fill messages, $((f1 - f0)) failed, $left_after left"
  fi
  rates[$batch/$conc/queue]+=" $rate"
  cpus[$batch/$conc/queue]+=" $cpu"
  starts[$batch/$conc]+=" $start_ms"
  last_rate=$rate
  echo "$stamp,$rep,$batch,$conc,queue,$fill,$((m1 - m0)),$secs,$rate,$start_ms,$((b1 - b0)),$maxw,$left_after,$cpu" >>"$runs_csv"
  nruns=$((nruns + 1))
  say "$(printf '  [%2d/%d %4ds] batch %3s  concurrency %s  consumer %8s msg/s  (%s s, %s batches, first commit after %s ms, up to %s workers, %s us CPU/msg)' \
    "$nruns" "$total_runs" "$(( $(date +%s) - started ))" "$batch" "$conc" "$rate" "$secs" "$((b1 - b0))" "$start_ms" "$maxw" "${cpu:--}")"
}

# The raw side's statement, with the batch size as a literal so that the
# prepared statement's plan knows it.
raw_script() {
  local f=$tmp/raw_drain_$1.sql
  echo "DELETE FROM bench_drain_raw WHERE id = ANY (ARRAY(SELECT id FROM bench_drain_raw ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)) RETURNING *;" >"$f"
  chmod 644 "$f"
  echo "$f"
}

run_raw() {
  local rep=$1 batch=$2 conc=$3 fill=$4
  local jobs=$(( conc < ncpu ? conc : ncpu )) per_client before after xacts tps secs rate cpu0 cpu log=$tmp/pgbench.log

  sql -c "TRUNCATE bench_drain_raw"
  sql -c "INSERT INTO bench_drain_raw (payload) SELECT '$PAYLOAD'::jsonb FROM generate_series(1, $fill)"
  sql -c "VACUUM (ANALYZE) bench_drain_raw"
  sql -c "CHECKPOINT"
  before=$(sql -c "SELECT count(*) FROM bench_drain_raw")
  # enough transactions that the sessions together empty the table
  per_client=$(( (fill + batch * conc - 1) / (batch * conc) ))
  cpu0=$(server_ticks)
  if ! pgbench -n -M prepared -c "$conc" -j "$jobs" -t "$per_client" -f "$(raw_script "$batch")" >"$log" 2>&1; then
    say "pgbench failed: raw drain, batch $batch, $conc sessions:"
    tail -n 20 "$log" | tee -a "$report"
    exit 1
  fi
  sleep 0.1	# the postmaster reaps pgbench's backends
  cpu=$(cpu_per_msg "$cpu0" "$(server_ticks)" "$fill")
  after=$(sql -c "SELECT count(*) FROM bench_drain_raw")
  xacts=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$log")
  tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$log")
  secs=$(awk -v x="$xacts" -v t="$tps" 'BEGIN {printf "%.3f", x / t}')
  rate=$(awk -v m="$((before - after))" -v s="$secs" 'BEGIN {printf "%.0f", m / s}')
  [ "$after" -eq 0 ] || say "  note: the raw side left $after of $fill rows"
  rates[$batch/$conc/raw]+=" $rate"
  cpus[$batch/$conc/raw]+=" $cpu"
  last_rate=$rate
  echo "$stamp,$rep,$batch,$conc,raw,$fill,$((before - after)),$secs,$rate,,$xacts,$conc,$after,$cpu" >>"$runs_csv"
  sql -c "TRUNCATE bench_drain_raw"
  nruns=$((nruns + 1))
  say "$(printf '  [%2d/%d %4ds] batch %3s  concurrency %s  raw      %8s msg/s  (%s s, %s transactions, %s us CPU/msg)' \
    "$nruns" "$total_runs" "$(( $(date +%s) - started ))" "$batch" "$conc" "$rate" "$secs" "$xacts" "${cpu:--}")"
}

# ---- throughput ----------------------------------------------------------------

echo "stamp,rep,batch,concurrency,side,fill,messages,seconds,msg_per_s,start_ms,transactions,workers,left_after,server_cpu_us_per_msg" >"$runs_csv"
started=$(date +%s)
total_runs=$(( repeat * 2 * $(wc -w <<<"$batches") * $(wc -w <<<"$concurrencies") ))
cell=0
for ((rep = 1; rep <= repeat; rep++)); do
  say "repetition $rep of $repeat"
  for batch in $batches; do
    for conc in $concurrencies; do
      fill=$(fill_of "$batch")
      if (( (rep + cell) % 2 )); then
        run_queue "$rep" "$batch" "$conc" "$fill"; q=$last_rate
        run_raw "$rep" "$batch" "$conc" "$fill"; r=$last_rate
      else
        run_raw "$rep" "$batch" "$conc" "$fill"; r=$last_rate
        run_queue "$rep" "$batch" "$conc" "$fill"; q=$last_rate
      fi
      ratios[$batch/$conc]+=" $(awk -v q="$q" -v r="$r" 'BEGIN {printf "%.1f", (r > 0 ? 100 * q / r : 0)}')"
      cell=$((cell + 1))
    done
  done
done

# ---- latency -------------------------------------------------------------------

say ""
say "latency: one message a transaction at $lat_rate/s for $lat_secs s (pgbench -R, Poisson arrivals), consumer with default settings"
sql >/dev/null <<SQL
SET ROLE bench_consumer;
SELECT queue.subscribe('bench_latency', 'bench_latency', 'bench_latency_handler(queue.message[])');
RESET ROLE;
SQL
# a first message, handled before the run starts, so that a worker is up
sql -c "SELECT queue.send('bench_latency', '{\"n\": 0}')" >/dev/null
for ((i = 0; i < 1000; i++)); do
  [ "$(sql -c "SELECT count(*) FROM bench_latency_ledger")" = 1 ] && break
  sleep 0.01
done
sql -c "TRUNCATE bench_latency_ledger"
if ! pgbench -n -M prepared -c 1 -j 1 -R "$lat_rate" -T "$lat_secs" -D n=0 \
     -f "$here/pgbench/latency_send.sql" --log --log-prefix="$tmp/latency" >"$tmp/pgbench.log" 2>&1; then
  say "pgbench failed: latency sender"
  tail -n 20 "$tmp/pgbench.log" | tee -a "$report"
  exit 1
fi
sent=$(cat "$tmp"/latency.* | wc -l)
for ((i = 0; i < 1000; i++)); do
  [ "$(sql -c "SELECT count(*) FROM bench_latency_ledger")" -ge "$sent" ] && break
  sleep 0.01
done
# pgbench's log: client, transaction, latency (us), script, epoch seconds,
# microseconds when the transaction ended, schedule lag.  One client sends
# message n in its n-th transaction.
awk '{printf "%d,%d.%06d,%d\n", NR, $5, $6, $3}' "$tmp"/latency.* >"$tmp/acks.csv"
sql >/dev/null <<SQL
CREATE TABLE bench_latency_acks (n int, acked_epoch numeric, send_us int);
\copy bench_latency_acks FROM '$tmp/acks.csv' WITH (FORMAT csv)
SQL
echo "n,sent_at,commit_seen_at,handled_at,batch,send_commit_ms,sent_to_handler_ms,commit_seen_to_handler_ms" >"$latency_csv"
sql -c "\copy (SELECT l.n, l.sent_at, to_timestamp(a.acked_epoch::float8), l.handled_at, l.batch,
                      round(extract(epoch FROM to_timestamp(a.acked_epoch::float8) - l.sent_at) * 1000, 3),
                      round(extract(epoch FROM l.handled_at - l.sent_at) * 1000, 3),
                      round(extract(epoch FROM l.handled_at - to_timestamp(a.acked_epoch::float8)) * 1000, 3)
                 FROM bench_latency_ledger l JOIN bench_latency_acks a USING (n) ORDER BY n)
          TO '$tmp/latency.csv' WITH (FORMAT csv)"
cat "$tmp/latency.csv" >>"$latency_csv"
read -r lat_n handled up50 up99 upmax lo50 lo99 lomax batch_avg sc50 <<<"$(sql -F ' ' -c "
  SELECT count(n), count(*),
         round(percentile_cont(0.5) WITHIN GROUP (ORDER BY up)::numeric, 2),
         round(percentile_cont(0.99) WITHIN GROUP (ORDER BY up)::numeric, 2),
         round(max(up)::numeric, 2),
         round(percentile_cont(0.5) WITHIN GROUP (ORDER BY lo)::numeric, 2),
         round(percentile_cont(0.99) WITHIN GROUP (ORDER BY lo)::numeric, 2),
         round(max(lo)::numeric, 2),
         round(avg(batch), 2),
         round(percentile_cont(0.5) WITHIN GROUP (ORDER BY sc)::numeric, 2)
    FROM (SELECT a.n, l.batch,
                 1000 * extract(epoch FROM to_timestamp(a.acked_epoch::float8) - l.sent_at) AS sc,
                 1000 * extract(epoch FROM l.handled_at - l.sent_at) AS up,
                 1000 * extract(epoch FROM l.handled_at - to_timestamp(a.acked_epoch::float8)) AS lo
            FROM bench_latency_ledger l LEFT JOIN bench_latency_acks a USING (n)) x")"
[ "$handled" -eq "$sent" ] || say "  note: $sent messages sent, $handled handled"
[ "$lat_n" -eq "$handled" ] || say "  note: $((handled - lat_n)) handled messages have no line in pgbench's log"

sql >/dev/null <<'SQL'
SET client_min_messages = warning;
SELECT queue.unsubscribe('bench_drain');
SELECT queue.unsubscribe('bench_latency');
SELECT queue.drop('bench_drain');
SELECT queue.drop('bench_latency');
DROP TABLE bench_drain_raw, bench_latency_ledger, bench_latency_acks;
DROP FUNCTION bench_noop(queue.message[]), bench_latency_handler(queue.message[]);
DROP ROLE bench_consumer;
SQL

# ---- the table -----------------------------------------------------------------

median() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR]=$1} END {if (NR==0) print 0; else if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }
minmax() { tr ' ' '\n' | grep . | sort -g | awk 'NR==1{lo=$1} {hi=$1} END {print lo+0, hi+0}'; }

say ""
say "drain: median messages per second over $repeat runs; ratio = median of each repetition's consumer / raw"
say ""
line=$(printf '%5s %11s %14s %10s %9s %11s %8s %9s %12s %15s' batch concurrency "consumer msg/s" "raw msg/s" "ratio (%)" "ratio range" target "start ms" "spread c/r" "CPU us/msg c/r")
say "$line"
say "$(printf '%s\n' "$line" | tr -c '\n' '-')"
echo "batch,concurrency,queue_msg_per_s,raw_msg_per_s,ratio_pct,ratio_min,ratio_max,target,start_ms,queue_min,queue_max,raw_min,raw_max,runs,queue_cpu_us_per_msg,raw_cpu_us_per_msg" >"$summary_csv"
for batch in $batches; do
  for conc in $concurrencies; do
    qs=${rates[$batch/$conc/queue]:-}
    rs=${rates[$batch/$conc/raw]:-}
    q=$(median <<<"$qs")
    r=$(median <<<"$rs")
    ratio=$(median <<<"${ratios[$batch/$conc]:-}")
    read -r rlo rhi <<<"$(minmax <<<"${ratios[$batch/$conc]:-}")"
    read -r qlo qhi <<<"$(minmax <<<"$qs")"
    read -r wlo whi <<<"$(minmax <<<"$rs")"
    start=$(median <<<"${starts[$batch/$conc]:-}")
    qcpu=$(median <<<"${cpus[$batch/$conc/queue]:-}")
    rcpu=$(median <<<"${cpus[$batch/$conc/raw]:-}")
    if [ -n "$postmaster" ]; then cpucol="$qcpu/$rcpu"; else cpucol=-; fi
    spread=$(awk -v q="$q" -v r="$r" -v a="$qlo" -v b="$qhi" -v c="$wlo" -v d="$whi" \
      'BEGIN {printf "%d%%/%d%%", (q > 0 ? 100 * (b - a) / q : 0), (r > 0 ? 100 * (d - c) / r : 0)}')
    if [ "$batch" = 100 ]; then
      if awk -v x="$ratio" -v t="$TARGET_RATIO" 'BEGIN {exit !(x >= t)}'; then mark=">=$TARGET_RATIO ok"; else mark=">=$TARGET_RATIO no"; fi
    else
      mark="-"
    fi
    say "$(printf '%5s %11s %14.0f %10.0f %9.0f %11s %8s %9.0f %12s %15s' "$batch" "$conc" "$q" "$r" "$ratio" \
      "$(printf '%.0f-%.0f' "$rlo" "$rhi")" "$mark" "$start" "$spread" "$cpucol")"
    echo "$batch,$conc,$q,$r,$ratio,$rlo,$rhi,${mark// /_},$start,$qlo,$qhi,$wlo,$whi,$repeat,$qcpu,$rcpu" >>"$summary_csv"
  done
done
if [ -n "$up50" ] && awk -v x="$up50" -v t="$TARGET_P50_MS" 'BEGIN {exit !(x < t)}'; then mark="<$TARGET_P50_MS ok"; else mark="<$TARGET_P50_MS no"; fi
say ""
say "latency, commit to handler start, ms ($handled messages, $lat_rate/s, $lat_secs s; mean batch $batch_avg):"
say "$(printf '  upper bound, from sent_at (before the commit):      p50 %6s  p99 %6s  max %7s  target p50 %s' "$up50" "$up99" "$upmax" "$mark")"
say "$(printf '  lower bound, from the commit seen by the client:    p50 %6s  p99 %6s  max %7s' "$lo50" "$lo99" "$lomax")"
say "  (the sender's commit, sent_at to commit seen, took p50 $sc50 ms: the upper bound includes it)"
echo "bound,p50_ms,p99_ms,max_ms,messages,rate_per_s,seconds,mean_batch,target_p50_ms,send_commit_p50_ms" >"$latency_summary_csv"
echo "upper,$up50,$up99,$upmax,$handled,$lat_rate,$lat_secs,$batch_avg,$TARGET_P50_MS,$sc50" >>"$latency_summary_csv"
echo "lower,$lo50,$lo99,$lomax,$handled,$lat_rate,$lat_secs,$batch_avg,,$sc50" >>"$latency_summary_csv"
say ""
say "consumer: queue.resume to the first look that finds the queue empty (polled every 10 ms), launcher start included"
say "raw:      pgbench sessions, as many as workers, DELETE ... WHERE id = ANY (ARRAY(SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)) RETURNING *"
say "          on a plain table holding the same backlog, until it is empty; connection time excluded"
[ -z "$postmaster" ] || say "CPU:      server processes' user + system time over the run, per message (median), consumer / raw"
say ""
say "took $(( $(date +%s) - started )) s; report and CSV files: $out/bench-$stamp-drain*"
