#!/usr/bin/env bash
# bench/fifo.sh: read + ack throughput of a FIFO queue next to a plain queue
# holding the same messages, in the same run on the same server.  bench/run
# calls it (BENCH_FIFO=0 skips it); it also runs alone against any server
# with queue preloaded, found through PGHOST, PGPORT, PGUSER and PGDATABASE.
#
# Two queues: bench_fifo (fifo => true) and bench_plain.  Before each run
# the queue of that run is purged and filled with the same messages: message
# i has group_key 'g<i mod BENCH_FIFO_GROUPS>', so the groups interleave
# (each group's messages are spread over the whole queue, one per
# BENCH_FIFO_GROUPS ids), then vacuumed, analysed and checkpointed.  The
# fill is the larger of the two sides' expected consumption (rate x seconds
# x 1.5, as in bench/run), so that both sides of a cell get the same
# backlog; a run that comes near draining its queue is run again with twice
# the fill.  pgbench clients then run bench/pgbench/queue_read_ack_<batch>.sql
# (BEGIN; read; ack with the array form; COMMIT), the script bench/run uses,
# with -D queue=bench_fifo or bench_plain.  Rates count messages, from the
# rows before and after the run.
#
# A FIFO read returns at most one message per group (its head), and a group
# stays held while one of its messages is leased: with 1,000 groups, 16
# clients reading 100 at a time ask for more heads than there are groups,
# so their reads come back short.  The table shows the messages a FIFO
# transaction got on average, next to the batch size.  A third side, runs,
# reads the FIFO queue with per_group (BENCH_FIFO_PER_GROUP, default 10:
# up to that many consecutive messages of a group a read), through
# bench/pgbench/queue_read_ack_groups.sql; its table follows.
#
# The sides of a cell alternate (which goes first rotates), the repetitions
# are spread over the run, the table shows medians, and the ratio's range
# is that of the repetitions' own fifo / plain ratios (each pair run back
# to back).  pgbench -P 1 reports each second's rate: the runs CSV keeps the
# first and last second, so that a rate that decays within a run shows.
#
# Settings (environment):
#   BENCH_FIFO_GROUPS   group keys (default 1000)
#   BENCH_FIFO_BATCHES  batch sizes, each with a bench/pgbench script
#                       (default "10 100")
#   BENCH_FIFO_PER_GROUP  per_group of the runs side (default 10; 1 skips it)
#   BENCH_CLIENTS       client counts (default "1 4 16")
#   BENCH_SECONDS       seconds per run (default 5)
#   BENCH_REPEAT        runs per cell and side (default 3)
#   BENCH_QUICK=1       smoke run: 1 second, one repetition
#   BENCH_OUT, BENCH_STAMP  where the files go, and their stamp
#
# Writes to BENCH_OUT: bench-STAMP-fifo.txt (the printed report),
# bench-STAMP-fifo-runs.csv (every run) and bench-STAMP-fifo-summary.csv
# (the table).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
command -v pgbench >/dev/null || PATH="$(pg_config --bindir):$PATH"

if [ "${BENCH_QUICK:-0}" = 1 ]; then
  secs=${BENCH_SECONDS:-1}
  repeat=${BENCH_REPEAT:-1}
else
  secs=${BENCH_SECONDS:-5}
  repeat=${BENCH_REPEAT:-3}
fi
groups=${BENCH_FIFO_GROUPS:-1000}
batches=${BENCH_FIFO_BATCHES:-"10 100"}
per_group=${BENCH_FIFO_PER_GROUP:-10}
sides="fifo plain"
[ "$per_group" -gt 1 ] && sides+=" runs"
clients_list=${BENCH_CLIENTS:-"1 4 16"}
out=${BENCH_OUT:-$here/out}
stamp=${BENCH_STAMP:-$(date +%Y%m%d-%H%M%S)}
ncpu=$(nproc)

PAYLOAD='{"order_id": 12345, "customer": "c-42", "items": [1,2,3]}'
TARGET_RATIO=70		# FIFO as % of the plain queue

mkdir -p "$out"
report=$out/bench-$stamp-fifo.txt
runs_csv=$out/bench-$stamp-fifo-runs.csv
summary_csv=$out/bench-$stamp-fifo-summary.csv
pgb_log=$(mktemp "$out/pgbench-fifo.XXXXXX")
trap 'rm -f "$pgb_log"' EXIT

say() { printf '%s\n' "$*" | tee -a "$report"; }
sql() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }

# The pgbench script of a side.
script_of() {
  if [ "$1" = runs ]; then echo "$here/pgbench/queue_read_ack_groups.sql"
  else echo "$here/pgbench/queue_read_ack_$2.sql"; fi
}

for batch in $batches; do
  for side in $sides; do
    [ -f "$(script_of "$side" "$batch")" ] || {
      echo "bench/fifo.sh: no $(script_of "$side" "$batch") for batch size $batch" >&2
      exit 2
    }
  done
done

sql >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS queue;
SELECT queue.drop('bench_fifo', if_exists => true);
SELECT queue.drop('bench_plain', if_exists => true);
SELECT queue.create('bench_fifo', fifo => true);
SELECT queue.create('bench_plain');
SQL

# runs reads the FIFO queue
queue_of() { if [ "$1" = runs ]; then echo bench_fifo; else echo "bench_$1"; fi; }
table_of() { echo "queue_internal.q$(sql -c "SELECT id FROM queue.queues WHERE queue_name = '$(queue_of "$1")'")"; }
declare -A tables=([fifo]=$(table_of fifo) [plain]=$(table_of plain) [runs]=$(table_of runs))

# Fills a queue with n messages (rounded up to thousands), group keys
# interleaved: one queue.send a message, in one statement per 100,000.
fill_queue() {
  local q=$1 n=$(( ($2 + 999) / 1000 * 1000 )) from=1 to
  while [ "$from" -le "$n" ]; do
    to=$(( from + 99999 < n ? from + 99999 : n ))
    sql -c "SELECT count(queue.send('$q', '$PAYLOAD'::jsonb, group_key => 'g' || (i % $groups)))
              FROM generate_series($from, $to) AS i" >/dev/null
    from=$((to + 1))
  done
}

count_rows() { sql -c "SELECT count(*) FROM ${tables[$1]}"; }

setting() { sql -c "SELECT current_setting('$1')"; }
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
say "queue FIFO benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
say "machine: $ncpu x ${cpu:-unknown CPU}, $(uname -sr); load average at start: $(cut -d ' ' -f 1-3 /proc/loadavg)"
say "server:  PostgreSQL $(setting server_version), fsync=$(setting fsync), synchronous_commit=$(setting synchronous_commit), shared_buffers=$(setting shared_buffers)"
say "method:  pgbench -M prepared, $secs s a run, $repeat runs per cell and side, -j = min(clients, $ncpu);"
say "         read + ack (BEGIN; read; ack; COMMIT) on a FIFO queue and a plain queue filled alike:"
say "         $groups group keys, interleaved (message i in group i mod $groups); payload $PAYLOAD"
[ "$per_group" -gt 1 ] && say "         runs: the FIFO queue read with per_group => $per_group"
say ""

# ---- one run -------------------------------------------------------------------

# The expected rate of a side (messages/s), to size the fill: a guess until
# measured, then the highest rate seen; a run that drains its queue doubles it.
declare -A guess=([1]=10000 [10]=60000 [100]=150000)
declare -A est=() rates=() per_xact=() decay=() ratios=()
nruns=0

# The fill of a cell: enough for the fastest side, the same for all.
fill_of() {
  local batch=$1 clients=$2 r=0 side
  for side in $sides; do
    : "${est[$side/$batch/$clients]:=${guess[$batch]}}"
    [ "${est[$side/$batch/$clients]}" -gt "$r" ] && r=${est[$side/$batch/$clients]}
  done
  awk -v r="$r" -v s="$secs" 'BEGIN {n = int(r * s * 1.5); print (n < 10000 ? 10000 : n)}'
}

run_one() {
  local rep=$1 batch=$2 clients=$3 side=$4
  local jobs=$(( clients < ncpu ? clients : ncpu )) key=$side/$batch/$clients q
  local fill before after msgs xacts tps lat rate attempt drained first last mpx need
  q=$(queue_of "$side")

  for attempt in 1 2 3 4; do
    drained=0
    fill=$(fill_of "$batch" "$clients")
    sql -c "SELECT queue.purge('$q')" >/dev/null
    fill_queue "$q" "$fill"
    sql -c "VACUUM (ANALYZE) ${tables[$side]}"
    sql -c "CHECKPOINT"
    before=$(count_rows "$side")
    if ! pgbench -n -M prepared -c "$clients" -j "$jobs" -T "$secs" -P 1 \
         -f "$(script_of "$side" "$batch")" -D "queue=$q" -D "batch=$batch" -D "per_group=$per_group" >"$pgb_log" 2>&1; then
      say "pgbench failed: batch $batch, $clients clients, $side (attempt $attempt):"
      tail -n 20 "$pgb_log" | tee -a "$report"
      [ "$attempt" -lt 2 ] && continue
      exit 1
    fi
    after=$(count_rows "$side")
    sql -c "SELECT queue.purge('$q')" >/dev/null
    # fewer left than a batch per client (or, in the FIFO queue, than a
    # run per group): reads may have come back short for want of messages
    need=$groups
    [ "$side" = runs ] && need=$((groups * per_group))
    if [ "$after" -lt $((clients * batch)) ] || [ "$after" -lt "$need" ]; then
      drained=1
      # the fill was sized in a subshell (fill_of): from it, twice as many
      est[$key]=$(awk -v f="$fill" -v s="$secs" 'BEGIN {printf "%d", f * 2 / (s * 1.5) + 1}')
      if [ "$attempt" -lt 4 ]; then
        say "  ($side drained its $fill messages: filling twice as many and running again)"
        continue
      fi
      say "  ($side drained its $fill messages again: its rate below is a lower bound)"
    fi
    break
  done

  xacts=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$pgb_log")
  tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$pgb_log")
  lat=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' "$pgb_log")
  first=$(sed -n 's/^progress: [0-9.]* s, \([0-9.]*\) tps.*/\1/p' "$pgb_log" | head -n 1)
  last=$(sed -n 's/^progress: [0-9.]* s, \([0-9.]*\) tps.*/\1/p' "$pgb_log" | tail -n 1)
  msgs=$((before - after))
  rate=$(awk -v m="$msgs" -v x="$xacts" -v t="$tps" 'BEGIN {printf "%.0f", (x > 0 ? m * t / x : 0)}')
  mpx=$(awk -v m="$msgs" -v x="$xacts" 'BEGIN {printf "%.1f", (x > 0 ? m / x : 0)}')
  rates[$key]+=" $rate"
  per_xact[$key]+=" $mpx"
  decay[$key]+=" $(awk -v a="${first:-0}" -v b="${last:-0}" 'BEGIN {printf "%.0f", (a > 0 ? 100 * b / a : 0)}')"
  last_rate=$rate
  if [ "$drained" = 0 ]; then
    est[$key]=$(tr ' ' '\n' <<<"${rates[$key]}" | grep . | sort -g | tail -n 1)
    [ "${est[$key]}" -lt 1000 ] && est[$key]=1000
  fi
  echo "$stamp,$rep,$batch,$clients,$jobs,$side,$groups,$secs,$xacts,$tps,$msgs,$rate,$mpx,$lat,${first:-},${last:-},$fill,$after,$drained" >>"$runs_csv"
  nruns=$((nruns + 1))
  say "$(printf '  [%2d/%d %4ds] batch %3s  clients %2s  %-5s %9s msg/s  (%s transactions, %s msg each, latency %s ms, first/last second %s/%s tps)' \
    "$nruns" "$total_runs" "$(( $(date +%s) - started ))" "$batch" "$clients" "$side" "$rate" "$xacts" "$mpx" "$lat" "${first:--}" "${last:--}")"
}

# ---- the run -------------------------------------------------------------------

echo "stamp,rep,batch,clients,jobs,side,groups,seconds,transactions,tps,messages,msg_per_s,msg_per_xact,latency_ms,first_s_tps,last_s_tps,fill,left_after,drained" >"$runs_csv"
started=$(date +%s)
read -r -a side_list <<<"$sides"
nsides=${#side_list[@]}
total_runs=$(( repeat * nsides * $(wc -w <<<"$batches") * $(wc -w <<<"$clients_list") ))
cell=0
for ((rep = 1; rep <= repeat; rep++)); do
  say "repetition $rep of $repeat"
  for batch in $batches; do
    for clients in $clients_list; do
      declare -A got=()
      # which side goes first rotates
      for ((i = 0; i < nsides; i++)); do
        side=${side_list[$(( (i + rep + cell) % nsides ))]}
        run_one "$rep" "$batch" "$clients" "$side"
        got[$side]=$last_rate
      done
      for side in fifo runs; do
        [ -n "${got[$side]:-}" ] || continue
        ratios[$side/$batch/$clients]+=" $(awk -v f="${got[$side]}" -v p="${got[plain]}" \
          'BEGIN {printf "%.1f", (p > 0 ? 100 * f / p : 0)}')"
      done
      cell=$((cell + 1))
    done
  done
done

sql >/dev/null <<'SQL'
SET client_min_messages = warning;
SELECT queue.drop('bench_fifo');
SELECT queue.drop('bench_plain');
SQL

# ---- the table -----------------------------------------------------------------

median() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR]=$1} END {if (NR==0) print 0; else if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }
minmax() { tr ' ' '\n' | grep . | sort -g | awk 'NR==1{lo=$1} {hi=$1} END {print lo+0, hi+0}'; }

# The table of one FIFO side (fifo, runs) next to the plain queue.
side_table() {
  local side=$1 what=$2 batch clients fs ps f p flo fhi plo phi rlo rhi ratio mpx dec spread mark line
  say ""
  say "$what, $groups groups: median messages per second over $repeat runs of $secs s each"
  say "ratio = $side / plain of the medians; range = of each repetition's own pair; msg/xact = messages a $side transaction got;"
  say "last/first s = the $side run's last second's rate as % of its first (median); spread = (max - min) / median"
  say ""
  line=$(printf '%5s %7s %11s %12s %9s %12s %8s %12s %12s %12s' batch clients "$side msg/s" "plain msg/s" "ratio (%)" "ratio range" target "msg/xact" "last/first s" "spread f/p")
  say "$line"
  say "$(printf '%s\n' "$line" | tr -c '\n' '-')"
  for batch in $batches; do
    for clients in $clients_list; do
      fs=${rates[$side/$batch/$clients]:-}
      ps=${rates[plain/$batch/$clients]:-}
      f=$(median <<<"$fs")
      p=$(median <<<"$ps")
      read -r flo fhi <<<"$(minmax <<<"$fs")"
      read -r plo phi <<<"$(minmax <<<"$ps")"
      read -r rlo rhi <<<"$(minmax <<<"${ratios[$side/$batch/$clients]:-}")"
      ratio=$(awk -v f="$f" -v p="$p" 'BEGIN {printf "%.0f", (p > 0 ? 100 * f / p : 0)}')
      mpx=$(median <<<"${per_xact[$side/$batch/$clients]:-}")
      dec=$(median <<<"${decay[$side/$batch/$clients]:-}")
      spread=$(awk -v f="$f" -v p="$p" -v a="$flo" -v b="$fhi" -v c="$plo" -v d="$phi" \
        'BEGIN {printf "%d%%/%d%%", (f > 0 ? 100 * (b - a) / f : 0), (p > 0 ? 100 * (d - c) / p : 0)}')
      if [ "$ratio" -ge "$TARGET_RATIO" ]; then mark=">=$TARGET_RATIO ok"; else mark=">=$TARGET_RATIO no"; fi
      say "$(printf '%5s %7s %11.0f %12.0f %9s %12s %8s %12s %12s %12s' "$batch" "$clients" "$f" "$p" "$ratio" \
        "$(printf '%.0f-%.0f' "$rlo" "$rhi")" "$mark" "$mpx/$batch" "$dec%" "$spread")"
      echo "$side,$batch,$clients,$groups,$f,$p,$ratio,$rlo,$rhi,$TARGET_RATIO,$mpx,$dec,$flo,$fhi,$plo,$phi,$repeat" >>"$summary_csv"
    done
  done
}

echo "side,batch,clients,groups,msg_per_s,plain_msg_per_s,ratio_pct,ratio_min,ratio_max,target_pct,msg_per_xact,last_first_pct,min,max,plain_min,plain_max,runs" >"$summary_csv"
side_table fifo "FIFO read + ack"
[ "$per_group" -gt 1 ] && side_table runs "FIFO read + ack with per_group => $per_group"
say ""
say "took $(( $(date +%s) - started )) s; report and CSV files: $out/bench-$stamp-fifo*"
