# test/cluster.sh: a throwaway PostgreSQL cluster for tests, the demo and
# benchmarks.  Sourced by test/run; runs as an unprivileged user.
#
# cluster_start MODE   initdb in a temporary directory, queue preloaded,
#                      listening on a unix socket there (and 127.0.0.1 for
#                      pgbouncer in the demo); exports PGHOST, PGPORT, PGUSER
#                      and PGDATABASE for everything that follows.
# cluster_stop         stops it and removes the directory.

# The first free port from QUEUE_PORT (default 5499) on, so that a test
# run and a benchmark can run side by side.
free_port() {
  local port=${QUEUE_PORT:-5499}
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    port=$((port + 1))
  done
  echo "$port"
}

cluster_start() {
  local mode=$1
  QUEUE_PORT=$(free_port)
  CLUSTER_DIR=$(mktemp -d /tmp/queue-cluster.XXXXXX)
  initdb -D "$CLUSTER_DIR/data" -U postgres --auth=trust -E UTF8 --locale=C >"$CLUSTER_DIR/initdb.log" 2>&1 \
    || { cat "$CLUSTER_DIR/initdb.log"; return 1; }
  cat >>"$CLUSTER_DIR/data/postgresql.conf" <<EOF
port = $QUEUE_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$CLUSTER_DIR'
shared_preload_libraries = 'queue'
max_connections = 600
shared_buffers = 512MB
log_min_messages = warning
log_line_prefix = '%m [%p] %q%a '
EOF
  if [ "$mode" = test ]; then
    # tests check behaviour, not durability of the test machine's disk
    echo "fsync = off" >>"$CLUSTER_DIR/data/postgresql.conf"
  fi
  # another run on this machine may take the port between the look and the
  # start: then try the next free one
  local tries=0
  until pg_ctl -D "$CLUSTER_DIR/data" -l "$CLUSTER_DIR/server.log" -w start >/dev/null; do
    tries=$((tries + 1))
    if [ $tries -ge 5 ] || ! grep -q "could not create any TCP/IP sockets" "$CLUSTER_DIR/server.log"; then
      cat "$CLUSTER_DIR/server.log"
      return 1
    fi
    QUEUE_PORT=$(QUEUE_PORT=$((QUEUE_PORT + 1 + RANDOM % 20)) free_port)
    sed -i "s/^port = .*/port = $QUEUE_PORT/" "$CLUSTER_DIR/data/postgresql.conf"
    : >"$CLUSTER_DIR/server.log"
  done
  export PGHOST=$CLUSTER_DIR PGPORT=$QUEUE_PORT PGUSER=postgres PGDATABASE=postgres
}

cluster_stop() {
  [ -n "${CLUSTER_DIR:-}" ] || return 0
  pg_ctl -D "$CLUSTER_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
  if grep -qE "PANIC|TRAP:|terminated by signal" "$CLUSTER_DIR/server.log"; then
    echo "==== server log shows a crash:"
    grep -E "PANIC|TRAP:|terminated by signal" "$CLUSTER_DIR/server.log" | head -20
  fi
  rm -rf "$CLUSTER_DIR"
  CLUSTER_DIR=
}
