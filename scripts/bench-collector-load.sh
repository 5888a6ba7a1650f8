#!/usr/bin/env bash
# Collector under 1000 simulated agents (issue 10; figures in BENCHMARKS.md,
# "Collector under 1000 agents").
#
# For each store (SQLite, then PostgreSQL in a throwaway cluster of this script's own,
# fsync on, unix socket only) on a fresh database:
#   1. start the real collector binary (release) as its own process, default limits;
#   2. register one ingest token per host with `ballast-collector token create`, as an
#      operator would (4 in parallel);
#   3. baseline: collector/examples/load_gen.rs with LOAD_BASELINE_AGENTS agents for
#      LOAD_BASELINE_SECS;
#   4. load: LOAD_AGENTS agents x LOAD_VMS VMs every 10 s for LOAD_SECS
#      (each agent: hello + inventory, balloon changes, minute rollups, near misses,
#      OOMs with real kernel reports; see the example's doc).
# Both phases also probe GET /healthz every 100 ms (the same server's baseline under
# the same load). Prints one table; the JSON of every phase stays in the work dir
# when LOAD_KEEP=1.
#
#   scripts/bench-collector-load.sh                    # ~10 min on 2 cores
#   LOAD_SECS=30 LOAD_AGENTS=200 scripts/bench-collector-load.sh
#
# Environment (defaults): LOAD_AGENTS=1000 LOAD_VMS=50 LOAD_SECS=180
#   LOAD_BASELINE_AGENTS=20 LOAD_BASELINE_SECS=60 LOAD_STORES="sqlite postgres"
#   LOAD_KEEP=0 LOAD_NO_BUILD=0 (1: use the release binaries already built)
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
AGENTS=${LOAD_AGENTS:-1000}
VMS=${LOAD_VMS:-50}
SECS=${LOAD_SECS:-180}
BASE_AGENTS=${LOAD_BASELINE_AGENTS:-20}
BASE_SECS=${LOAD_BASELINE_SECS:-60}
STORES=${LOAD_STORES:-sqlite postgres}
KEEP=${LOAD_KEEP:-0}
WORK=$(mktemp -d /tmp/ballast-load.XXXXXX)
chmod 755 "$WORK"
BIN="$REPO/target/release/ballast-collector"
GEN="$REPO/target/release/examples/load_gen"
COLLECTOR_PID=
PG_DATA=
AS_PG=()

cleanup() {
    if [[ -n $COLLECTOR_PID ]]; then
        kill "$COLLECTOR_PID" 2>/dev/null || true
        wait "$COLLECTOR_PID" 2>/dev/null || true
    fi
    if [[ -n $PG_DATA ]]; then
        "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast stop >/dev/null 2>&1 || true
    fi
    if [[ $KEEP == 1 ]]; then
        echo "work dir kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# Each agent holds one connection, and so does the collector for each.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

if [[ ${LOAD_NO_BUILD:-0} != 1 ]]; then
    echo "building (release) ..." >&2
    (cd "$REPO" && cargo build --release -q -p ballast-collector --bin ballast-collector --example load_gen)
fi

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_healthy() {
    local url=$1
    for _ in $(seq 1 300); do
        if curl -fsS "$url/healthz" >/dev/null 2>&1; then return 0; fi
        if ! kill -0 "$COLLECTOR_PID" 2>/dev/null; then
            echo "the collector exited; its log:" >&2
            cat "$2" >&2
            return 1
        fi
        sleep 0.2
    done
    echo "the collector did not answer /healthz in 60 s" >&2
    return 1
}

start_pg() {
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    [[ -n $PG_BIN ]] || { echo "PostgreSQL server binaries not found (scripts/install-deps.sh)" >&2; exit 1; }
    local dir="$WORK/pg"
    mkdir -p "$dir"
    if [[ $(id -u) == 0 ]]; then
        chown postgres: "$dir"
        AS_PG=(runuser -u postgres --)
    fi
    PG_DATA="$dir/data"
    PG_PORT=5432
    "${AS_PG[@]}" "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -A trust -E UTF8 >/dev/null
    "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$dir/server.log" -w -t 60 \
        -o "-k $dir -p $PG_PORT -c listen_addresses='' -c max_connections=200" start >/dev/null
    "${AS_PG[@]}" "$PG_BIN/createdb" -h "$dir" -p "$PG_PORT" -U postgres ballast
    PG_URL="host=$dir port=$PG_PORT user=postgres dbname=ballast"
    PG_PID=$(head -1 "$PG_DATA/postmaster.pid")
}

run_store() {
    local store=$1 dir="$WORK/$1" port config url store_args
    mkdir -p "$dir"
    port=$(free_port)
    config="$dir/collector.yaml"
    url="http://127.0.0.1:$port"
    case $store in
        sqlite)
            printf 'listen: 127.0.0.1:%s\nstate_dir: %s\nstorage:\n  type: sqlite\n  path: %s\n' \
                "$port" "$dir/state" "$dir/ballast.sqlite" >"$config"
            store_args=(--sqlite "$dir/ballast.sqlite")
            ;;
        postgres)
            start_pg
            printf "listen: 127.0.0.1:%s\nstate_dir: %s\nstorage:\n  type: postgres\n  url: '%s'\n" \
                "$port" "$dir/state" "$PG_URL" >"$config"
            store_args=(--pg "$PG_URL" --db-pid "$PG_PID")
            ;;
    esac
    echo "[$store] registering $AGENTS host tokens ..." >&2
    seq 0 $((AGENTS - 1)) | xargs -P 4 -I{} sh -c \
        'token=$("$0" token create "lg{}" --config "$1" 2>>"$2") && printf "lg%s %s\n" {} "$token"' \
        "$BIN" "$config" "$dir/token.log" >"$dir/tokens"
    [[ $(wc -l <"$dir/tokens") -eq $AGENTS ]] || { echo "token create failed:" >&2; tail "$dir/token.log" >&2; exit 1; }
    "$BIN" serve --config "$config" 2>"$dir/collector.log" &
    COLLECTOR_PID=$!
    wait_healthy "$url" "$dir/collector.log"
    echo "[$store] baseline: $BASE_AGENTS agents for $BASE_SECS s ..." >&2
    "$GEN" --url "$url" --tokens "$dir/tokens" --agents "$BASE_AGENTS" --vms "$VMS" \
        --secs "$BASE_SECS" --pid "$COLLECTOR_PID" "${store_args[@]}" --seed 7 \
        --label "$store, $BASE_AGENTS agents (baseline)" --out "$dir/baseline.json" | tee "$dir/baseline.txt" >&2
    echo "[$store] load: $AGENTS agents for $SECS s (load average: $(cut -d' ' -f1-3 /proc/loadavg)) ..." >&2
    "$GEN" --url "$url" --tokens "$dir/tokens" --agents "$AGENTS" --vms "$VMS" \
        --secs "$SECS" --pid "$COLLECTOR_PID" "${store_args[@]}" --seed 1 \
        --label "$store, $AGENTS agents" --out "$dir/load.json" | tee "$dir/load.txt" >&2
    grep -h '^ROW|' "$dir/baseline.txt" "$dir/load.txt" | sed 's/^ROW//' >>"$WORK/rows"
    kill "$COLLECTOR_PID"
    wait "$COLLECTOR_PID" 2>/dev/null || true
    COLLECTOR_PID=
}

: >"$WORK/rows"
for store in $STORES; do
    run_store "$store"
done

echo
echo "Collector under load: $VMS VMs per agent, 10 s interval; $(nproc) cores shared by collector, load generator and database"
echo
echo "| run | agents | req/s | ingest p50 ms | p99 ms | max ms | /healthz p50 ms | p99 ms | errors | collector CPU (1 core = 100 %) | PostgreSQL CPU | collector RSS peak MiB | DB MiB per host per day |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
cat "$WORK/rows"
