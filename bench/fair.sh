#!/usr/bin/env bash
# bench/fair.sh: the fairness check.  How soon do 100 group keys with one
# message each get through when one key has 100,000 messages waiting ahead
# of them?  A fair queue (fair => true: round-robin across group keys per
# claim) next to a plain queue, the contrast.  bench/run calls it
# (BENCH_FAIR=0 skips it); it also runs alone against any server with queue
# preloaded, found through PGHOST, PGPORT, PGUSER and PGDATABASE.
#
# Each run, for one side and one batch size:
#   1. a fresh queue; BENCH_FAIR_BACKLOG messages with group_key 'big'
#      (send_batch, 1,000 at a time); VACUUM (ANALYZE), CHECKPOINT;
#   2. one consumer, inside the server (one DO block, one transaction a
#      batch: read n, ack them with the array form, commit), first reads
#      BENCH_FAIR_WARMUP batches, so that it is busy with the big key when
#   3. the singles arrive: BENCH_FAIR_KEYS messages, keys k1, k2, ..., one
#      each, sent in one transaction (so their ids follow the backlog's);
#   4. the consumer goes on until it has had all the singles (or the queue
#      is empty), noting each batch: messages, singles, distinct keys, and
#      the time the read returned.
# Reported: the batch (counted from the first read after the singles'
# commit) that delivered the first single and the one that delivered the
# last, and the time from the singles' commit to the read that returned the
# last.  Counting runs inside the server so that the batches are exact and
# the times carry no client round trips.
#
# What "within the first 2 batches" can mean: no queue delivers 100 singles
# in fewer than ceil(keys / batch) batches (1 of 100, 10 of 10); round-robin
# at one message a key a turn may add one batch for the big key's turn
# (ceil((keys + 1) / batch): 2 of 100, 11 of 10).  The table shows the
# least possible next to what was measured.  The plain queue delivers the
# singles after the whole backlog.
#
# Until fair queues exist (queue.create(..., fair => true) raises 0A000)
# the fair side is reported as not available and the plain side runs alone.
#
# Settings (environment):
#   BENCH_FAIR_BACKLOG  messages of the big key (default 100000;
#                       BENCH_QUICK=1: 10000)
#   BENCH_FAIR_KEYS     keys with one message each (default 100)
#   BENCH_FAIR_BATCHES  batch sizes (default "10 100")
#   BENCH_FAIR_SIDES    default "fair plain"
#   BENCH_FAIR_WARMUP   batches read before the singles are sent (default 3)
#   BENCH_REPEAT        runs per side and batch size (default 3; quick: 1)
#   BENCH_OUT, BENCH_STAMP  where the files go, and their stamp
#
# Writes to BENCH_OUT: bench-STAMP-fair.txt (the printed report),
# bench-STAMP-fair-runs.csv (every run), bench-STAMP-fair-batches.csv (every
# batch of every run) and bench-STAMP-fair-summary.csv (the table).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)

if [ "${BENCH_QUICK:-0}" = 1 ]; then
  backlog=${BENCH_FAIR_BACKLOG:-10000}
  repeat=${BENCH_REPEAT:-1}
else
  backlog=${BENCH_FAIR_BACKLOG:-100000}
  repeat=${BENCH_REPEAT:-3}
fi
keys=${BENCH_FAIR_KEYS:-100}
batches=${BENCH_FAIR_BATCHES:-"10 100"}
sides=${BENCH_FAIR_SIDES:-"fair plain"}
warmup=${BENCH_FAIR_WARMUP:-3}
out=${BENCH_OUT:-$here/out}
stamp=${BENCH_STAMP:-$(date +%Y%m%d-%H%M%S)}
backlog=$(( (backlog + 999) / 1000 * 1000 ))

PAYLOAD='{"order_id": 12345, "customer": "c-42", "items": [1,2,3]}'
TARGET_BATCHES=2

mkdir -p "$out"
report=$out/bench-$stamp-fair.txt
runs_csv=$out/bench-$stamp-fair-runs.csv
batches_csv=$out/bench-$stamp-fair-batches.csv
summary_csv=$out/bench-$stamp-fair-summary.csv

say() { printf '%s\n' "$*" | tee -a "$report"; }
sql() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }

sql >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS queue;
SELECT queue.drop('bench_fair', if_exists => true);
DROP TABLE IF EXISTS bench_fair_ledger;
CREATE TABLE bench_fair_ledger (batch int, read_at timestamptz, messages int, singles int, keys int);
SQL

# Creates the queue of a side; fails (and says why) when the server cannot.
create_queue() {
  local opt=""
  [ "$1" = fair ] && opt=", fair => true"
  sql -c "SET client_min_messages = warning" -c "SELECT queue.drop('bench_fair', if_exists => true)" \
      -c "SELECT queue.create('bench_fair'$opt)" 2>&1 >/dev/null
}

setting() { sql -c "SELECT current_setting('$1')"; }
say "queue fairness check, $(date -u '+%Y-%m-%d %H:%M UTC')"
say "machine: $(nproc) CPUs, $(uname -sr); load average at start: $(cut -d ' ' -f 1-3 /proc/loadavg)"
say "server:  PostgreSQL $(setting server_version), fsync=$(setting fsync), synchronous_commit=$(setting synchronous_commit)"
say "method:  $backlog messages of key 'big', then $keys keys with one message each (one transaction);"
say "         one consumer in the server: read n + ack + commit a batch, $warmup batches before the singles are sent;"
say "         $repeat runs per side and batch size"
say ""

# Leave out a side the server does not support (fair => true before fair
# queues exist: 0A000).
run_sides=""
for side in $sides; do
  if err=$(create_queue "$side"); then
    run_sides+=" $side"
  else
    say "  $side: not available on this server: $(head -n 1 <<<"$err")"
  fi
done
sql -c "SET client_min_messages = warning" -c "SELECT queue.drop('bench_fair', if_exists => true)" >/dev/null

declare -A first_b=() last_b=() last_ms=() in1=() in2=()
nruns=0

run_one() {
  local rep=$1 batch=$2 side=$3 err f l ms s1 s2 nb left
  err=$(create_queue "$side") || { say "  could not create the $side queue: $err"; exit 1; }
  sql -c "DO \$\$ BEGIN FOR i IN 1..$((backlog / 1000)) LOOP
            PERFORM queue.send_batch('bench_fair', array_fill('$PAYLOAD'::jsonb, ARRAY[1000]), group_key => 'big');
          END LOOP; END \$\$"
  sql -c "VACUUM (ANALYZE) queue_internal.q$(sql -c "SELECT id FROM queue.queues WHERE queue_name = 'bench_fair'")"
  sql -c "CHECKPOINT"
  sql -c "TRUNCATE bench_fair_ledger"
  # batch 0: the singles' commit; batches -warmup..-1: the warm-up
  sql -c "DO \$\$
DECLARE
  ids bigint[]; receipts bigint[]; n int; s int; k int; at timestamptz;
  seen int := 0; b int := 0;
BEGIN
  FOR i IN 1..$warmup LOOP
    SELECT coalesce(array_agg(id), '{}'), coalesce(array_agg(receipt), '{}'), count(*)
      INTO ids, receipts, n FROM queue.read('bench_fair', $batch);
    PERFORM queue.ack('bench_fair', ids, receipts);
    INSERT INTO bench_fair_ledger VALUES (i - $warmup - 1, clock_timestamp(), n, 0, 1);
    COMMIT;
  END LOOP;
  PERFORM queue.send('bench_fair', jsonb_build_object('single', i), group_key => 'k' || i)
     FROM generate_series(1, $keys) AS i;
  COMMIT;
  INSERT INTO bench_fair_ledger VALUES (0, clock_timestamp(), $keys, 0, $keys);
  COMMIT;
  LOOP
    b := b + 1;
    SELECT coalesce(array_agg(id), '{}'), coalesce(array_agg(receipt), '{}'), count(*),
           count(*) FILTER (WHERE group_key IS DISTINCT FROM 'big'), count(DISTINCT group_key)
      INTO ids, receipts, n, s, k FROM queue.read('bench_fair', $batch);
    at := clock_timestamp();
    PERFORM queue.ack('bench_fair', ids, receipts);
    INSERT INTO bench_fair_ledger VALUES (b, at, n, s, k);
    COMMIT;
    seen := seen + s;
    EXIT WHEN seen >= $keys OR n = 0;
  END LOOP;
END \$\$"
  read -r f l ms s1 s2 nb <<<"$(sql -F ' ' -c "
    SELECT min(batch) FILTER (WHERE singles > 0), max(batch) FILTER (WHERE singles > 0),
           round(1000 * extract(epoch FROM max(read_at) FILTER (WHERE singles > 0)
                                         - max(read_at) FILTER (WHERE batch = 0)), 1),
           coalesce(sum(singles) FILTER (WHERE batch = 1), 0),
           coalesce(sum(singles) FILTER (WHERE batch <= 2 AND batch > 0), 0),
           count(*) FILTER (WHERE batch > 0)
      FROM bench_fair_ledger")"
  left=$(sql -c "SELECT messages FROM queue.queues WHERE queue_name = 'bench_fair'")
  sql -c "\copy (SELECT '$stamp', $rep, '$side', $batch, batch, read_at, messages, singles, keys FROM bench_fair_ledger ORDER BY batch) TO STDOUT WITH (FORMAT csv)" >>"$batches_csv"
  first_b[$side/$batch]+=" ${f:-0}"
  last_b[$side/$batch]+=" ${l:-0}"
  last_ms[$side/$batch]+=" ${ms:-0}"
  in1[$side/$batch]+=" $s1"
  in2[$side/$batch]+=" $s2"
  echo "$stamp,$rep,$side,$batch,$backlog,$keys,$warmup,${f:-},${l:-},${ms:-},$s1,$s2,$nb,$left" >>"$runs_csv"
  nruns=$((nruns + 1))
  say "$(printf '  [%2d/%d %4ds] %-5s batch %3s: singles from batch %s to %s (%s in the first, %s in the first two), last after %s ms; %s batches read' \
    "$nruns" "$total_runs" "$(( $(date +%s) - started ))" "$side" "$batch" "${f:--}" "${l:--}" "$s1" "$s2" "${ms:--}" "$nb")"
  sql -c "SET client_min_messages = warning" -c "SELECT queue.drop('bench_fair')" >/dev/null
}

echo "stamp,rep,side,batch,backlog,keys,warmup,first_batch,last_batch,last_ms,singles_in_batch_1,singles_in_batches_1_2,batches_read,left_after" >"$runs_csv"
echo "stamp,rep,side,batch_size,batch,read_at,messages,singles,keys" >"$batches_csv"
started=$(date +%s)
total_runs=$(( repeat * $(wc -w <<<"$run_sides") * $(wc -w <<<"$batches") ))
cell=0
for ((rep = 1; rep <= repeat; rep++)); do
  [ -n "$run_sides" ] && say "repetition $rep of $repeat"
  for batch in $batches; do
    read -r -a s <<<"$run_sides"
    for ((i = 0; i < ${#s[@]}; i++)); do
      run_one "$rep" "$batch" "${s[$(( (i + rep + cell) % ${#s[@]} ))]}"
    done
    cell=$((cell + 1))
  done
done
sql -c "DROP TABLE bench_fair_ledger"

# ---- the table -----------------------------------------------------------------

median() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR]=$1} END {if (NR==0) print 0; else if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }
range() { tr ' ' '\n' | grep . | sort -g | awk 'NR==1{lo=$1} {hi=$1} END {print (lo == hi ? lo : lo "-" hi)}'; }

say ""
say "fairness: $keys single messages behind $backlog of one key; batches counted from the first read after their commit"
say "first / last = the batch that delivered the first / the last single (range over $repeat runs);"
say "least = ceil($keys / batch), the fewest batches that can hold them all (round-robin may add one for the big key's turn),"
say "over least = last (median) - least; target: the last within the first $TARGET_BATCHES batches (only batches of $((keys / TARGET_BATCHES)) or more can);"
say "ms = from the singles' commit to the read that returned the last of them (median)"
say ""
line=$(printf '%-5s %5s %7s %7s %10s %11s %11s %6s %11s %8s' side batch first last "last ms" "in batch 1" "in 1 and 2" least "over least" target)
say "$line"
say "$(printf '%s\n' "$line" | tr -c '\n' '-')"
echo "side,batch,backlog,keys,first_batch_median,last_batch_median,last_batch_min_max,last_ms_median,singles_in_batch_1,singles_in_batches_1_2,least_batches,target_batches,runs" >"$summary_csv"
for batch in $batches; do
  for side in $run_sides; do
    k=$side/$batch
    bound=$(( (keys + batch - 1) / batch ))
    l=$(median <<<"${last_b[$k]}")
    if awk -v l="$l" -v t="$TARGET_BATCHES" 'BEGIN {exit !(l <= t)}'; then mark="<=$TARGET_BATCHES ok"; else mark="<=$TARGET_BATCHES no"; fi
    say "$(printf '%-5s %5s %7s %7s %10s %11s %11s %6s %11s %8s' "$side" "$batch" "$(range <<<"${first_b[$k]}")" \
      "$(range <<<"${last_b[$k]}")" "$(median <<<"${last_ms[$k]}")" "$(range <<<"${in1[$k]}")" "$(range <<<"${in2[$k]}")" \
      "$bound" "+$(awk -v l="$l" -v b="$bound" 'BEGIN {print l - b}')" "$mark")"
    echo "$side,$batch,$backlog,$keys,$(median <<<"${first_b[$k]}"),$l,$(range <<<"${last_b[$k]}"),$(median <<<"${last_ms[$k]}"),$(median <<<"${in1[$k]}"),$(median <<<"${in2[$k]}"),$bound,$TARGET_BATCHES,$repeat" >>"$summary_csv"
  done
done
say ""
say "took $(( $(date +%s) - started )) s; report and CSV files: $out/bench-$stamp-fair*"
