#!/usr/bin/env bash
# test/soak.sh: the soak.  Producers, external consumers and a consumer's
# drain workers run together against one server for SOAK_SECONDS, with a
# ledger; then everything is drained and every message is looked for.
# `make soak` runs it for 10 minutes through test/run --soak (fsync on);
# `make test` runs it for 60 seconds.  PGHOST, PGPORT and PGUSER (a
# superuser) say where the server is; it works in a database of its own
# (soak), created here and dropped at the end.
#
# Load (pgbench -M prepared, scripts in test/soak/):
#   producers   SOAK_PRODUCERS clients at SOAK_RATE transactions/s in all:
#               send_batch to both queues, single sends in a transaction
#               (delayed, with headers and group keys), sends rolled back,
#               sends with repeating deduplication keys
#   consumers   SOAK_CONSUMERS clients on soak_ext: read + ack + ledger in
#               one statement or a client transaction, archive, reads that
#               abandon their lease (redelivered after 1 s); poison
#               messages are nacked and dead-lettered after 3 deliveries
#   slow        SOAK_SLOW clients on soak_ext: acks that come 0-2 s late, after
#               their 1 s lease may have been taken over, and acks after a
#               lease extended with set_visibility (must succeed)
#   drain       the consumer soak_drainer on soak_drain (2 workers, batches
#               of 20), whose handler writes the ledger in the batch's
#               transaction, fails poison messages and raises on some
#               batches (bisected)
# Then: up to SOAK_SETTLE seconds for the drain workers and a final reader
# to empty both queues, and test/soak/check.sql.
#
# Fails (exit 1) when a message is lost, duplicated in the ledger, found in
# two places or never sent, when a queue's counter disagrees with its rows,
# when a pgbench client failed (an error, or an extended lease whose ack
# failed), or when the server restarted.
#
# Settings (environment): SOAK_SECONDS (600), SOAK_RATE (100 producer
# transactions/s, about 540 messages/s), SOAK_PRODUCERS (2),
# SOAK_CONSUMERS (3), SOAK_SLOW (2), SOAK_SETTLE (120), SOAK_SEGMENT_AGE
# (5s: queue.segment_age in the soak's database, so that the queues'
# segments are recycled under the load every few seconds).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)/soak
secs=${SOAK_SECONDS:-600}
rate=${SOAK_RATE:-100}
producers=${SOAK_PRODUCERS:-2}
consumers=${SOAK_CONSUMERS:-3}
slow=${SOAK_SLOW:-2}
settle=${SOAK_SETTLE:-120}
segment_age=${SOAK_SEGMENT_AGE:-5s}
db=soak
log=$(mktemp -d /tmp/queue-soak.XXXXXX)
trap 'rm -rf "$log"' EXIT

sql() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" "$@"; }

echo "== soak: ${secs} s, ${producers} producers at ${rate} tx/s, ${consumers}+${slow} external consumers, 2 drain workers"
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" \
  -c "ALTER DATABASE $db SET queue.segment_age = '$segment_age'"
sql -f "$here/setup.sql" >/dev/null
pm_start=$(sql -c "SELECT pg_postmaster_start_time()")

pgb() {
  local name=$1; shift
  pgbench -n -M prepared -T "$secs" "$@" "$db" >"$log/$name.out" 2>&1
}

load_start=$(sql -c "SELECT clock_timestamp()")
pids=()
pgb producers -c "$producers" -j 1 -R "$rate" \
  -f "$here/produce_batch.sql@2" -f "$here/produce_single.sql@5" \
  -f "$here/produce_rollback.sql@1" -f "$here/produce_dedup.sql@2" & pids+=($!)
pgb consumers -c "$consumers" -j 1 \
  -f "$here/consume_ack.sql@6" -f "$here/consume_ack_tx.sql@3" \
  -f "$here/consume_archive.sql@1" -f "$here/consume_abandon.sql@1" & pids+=($!)
pgb slow -c "$slow" -j 1 -f "$here/consume_late.sql@1" -f "$here/consume_extend.sql@1" & pids+=($!)

failed=0
names=(producers consumers slow)
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    echo "pgbench ${names[$i]} failed:"; grep -v "^progress" "$log/${names[$i]}.out" | head -30
    failed=1
  elif grep -q "aborted" "$log/${names[$i]}.out"; then
    echo "pgbench ${names[$i]}: clients aborted:"; grep -iE "error|aborted" "$log/${names[$i]}.out" | head -30
    failed=1
  fi
done
load_end=$(sql -c "SELECT clock_timestamp()")
load_secs=$(sql -c "SELECT extract(epoch FROM '$load_end'::timestamptz - '$load_start'::timestamptz)")

# Settle: the drain workers empty soak_drain by themselves; a final reader
# empties soak_ext (poison messages reach the dead-letter queue on their
# third delivery; leases taken by the load run out within 30 s).
deadline=$((SECONDS + settle))
while :; do
  left=$(sql -c "SELECT coalesce(sum(messages), -1) FROM queue.queues WHERE queue_name IN ('soak_ext', 'soak_drain')")
  [ "$left" = 0 ] && break
  if [ $SECONDS -ge $deadline ]; then
    echo "still $left messages in the queues after ${settle} s of settling (counted as in_queue)"
    break
  fi
  n=$(sql -f "$here/finish.sql")
  [ "$n" = 0 ] && sleep 0.5
done

declare -A r
while read -r name value; do r[$name]=$value; done < <(sql -F ' ' -v load_end="$load_end" -f "$here/check.sql")

per_min() { awk -v n="$1" -v s="$load_secs" 'BEGIN { printf "%.0f", n * 60 / s }'; }
echo "sent:           ${r[sent]} ($(per_min "${r[sent]}")/min over $(printf %.0f "$load_secs") s of load)"
echo "processed:      ${r[processed]} (drain ${r[processed_drain]}, external ${r[processed_external]}; $(per_min "${r[processed_by_load_end]}")/min during the load)"
echo "redelivered:    ${r[redelivered]} (processed on a 2nd or later delivery)"
echo "archived:       ${r[archived]}"
echo "dead-lettered:  ${r[dead_lettered]}"
echo "still queued:   ${r[in_queue]}"
echo "lost:           ${r[lost]}"
echo "duplicated:     ${r[duplicated]}"
echo "misplaced:      ${r[misplaced]} (in two places)"
echo "phantom:        ${r[phantom]} (never sent)"
echo "counter_off:    ${r[counter_off]} (queues whose messages counter differs from their rows)"
echo "anomaly:        ${r[anomaly]} (acks that failed after a successful set_visibility)"
if [ "${r[anomaly]}" != 0 ]; then
  sql -c "SELECT * FROM soak.anomaly ORDER BY seen_at LIMIT 5"
fi
for n in "${names[@]}"; do
  printf 'pgbench %-10s %s transactions, %s\n' "$n" \
    "$(sed -n 's/^number of transactions actually processed: //p' "$log/$n.out")" \
    "$(sed -n 's/^tps = \([0-9.]*\).*/\1 tps/p' "$log/$n.out")"
done

for k in lost duplicated misplaced phantom counter_off anomaly; do
  if [ "${r[$k]}" != 0 ]; then echo "FAILED: $k = ${r[$k]}"; failed=1; fi
done
if [ "$(sql -c "SELECT pg_postmaster_start_time()")" != "$pm_start" ]; then
  echo "FAILED: the server restarted during the soak"; failed=1
fi
if [ "${r[sent]}" = 0 ] || [ "${r[processed]}" = 0 ]; then
  echo "FAILED: nothing was sent or processed"; failed=1
fi

if [ $failed = 0 ]; then
  psql -X -q -d postgres -c "DROP DATABASE $db" -c "DROP ROLE soak_app"
  echo "soak passed"
else
  echo "soak FAILED (database $db kept for inspection)"
fi
exit $failed
