# A throw-away PostgreSQL cluster on loopback for the store's tests (issue 29). Source it:
#     source .ci/postgres.sh        # starts it and exports XRAY_TEST_POSTGRES_URL
#     xray_postgres_stop            # stops it and removes its folder (.ci/run does this in its EXIT trap)
# Installs Debian's `postgresql` when missing (needs root and apt). Root cannot run postgres, so as root the
# cluster belongs to the `postgres` user the package creates; anyone else runs it as themselves. Fails (returns
# non-zero, and under `set -e` stops the caller) when the server cannot start: the PostgreSQL tests must run.
xray_postgres_start() {
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq postgresql >/dev/null || return 1
  fi
  local bin run_as port
  bin="$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)")"
  XRAY_PG_DIR="$(mktemp -d -t xray-pg-XXXXXX)"
  run_as=()
  if [ "$(id -u)" = 0 ]; then
    chown postgres "$XRAY_PG_DIR"
    run_as=(runuser -u postgres --)
  fi
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  "${run_as[@]}" "$bin/initdb" -D "$XRAY_PG_DIR/data" -U postgres --auth=trust -E UTF8 >/dev/null || return 1
  "${run_as[@]}" "$bin/pg_ctl" -D "$XRAY_PG_DIR/data" -l "$XRAY_PG_DIR/log" -w \
    -o "-k $XRAY_PG_DIR -c listen_addresses=127.0.0.1 -p $port" start >/dev/null || { cat "$XRAY_PG_DIR/log"; return 1; }
  "${run_as[@]}" "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres xray_test || return 1
  XRAY_PG_CTL=("${run_as[@]}" "$bin/pg_ctl" -D "$XRAY_PG_DIR/data")
  export XRAY_TEST_POSTGRES_URL="postgresql+psycopg://postgres@127.0.0.1:$port/xray_test"
  echo "PostgreSQL for the store tests: $XRAY_TEST_POSTGRES_URL" >&2
}

xray_postgres_stop() {
  if [ -n "${XRAY_PG_DIR:-}" ]; then
    "${XRAY_PG_CTL[@]}" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$XRAY_PG_DIR"
    unset XRAY_PG_DIR XRAY_TEST_POSTGRES_URL
  fi
}

xray_postgres_start
