# Shared by scripts/quickstart.sh (libvirt) and scripts/quickstart-proxmox.sh: the
# collector's config and token, the wait for the demo's OOM, the printed verdict, and
# the signal handling that makes Ctrl-C, a closed terminal or a failure clean up.
# Sourced (POSIX sh); the caller sets `set -eu` and defines `cleanup`.

qs_say() { echo "quickstart: $*"; }

# qs_collector_config WORK PORT BIN: the collector's config (embedded SQLite under
# WORK/collector) and a fresh agent token in WORK/agent.token.
qs_collector_config() {
    cat > "$1/collector.yaml" <<YAML
listen: 127.0.0.1:$2
state_dir: $1/collector
YAML
    "$3/ballast-collector" token create "$(hostname)" --config "$1/collector.yaml" > "$1/agent.token"
    chmod 600 "$1/agent.token"
}

# qs_traps: run `cleanup` on every way out. Without a trap a closed terminal (HUP) or
# a closed pipe (PIPE) would kill the script outright and leave the collector, the
# agent and the demo VM running.
qs_traps() {
    trap qs_exit_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
    trap 'exit 141' PIPE
}

# The EXIT trap: errors inside the cleanup must not stop it half-way (set -e would end
# the shell at the first failing `kill` or `wait`), nor may a closed stdout.
qs_exit_cleanup() {
    status=$?
    set +e
    trap '' PIPE HUP INT TERM
    cleanup
    exit "$status"
}

# qs_oom_id PORT NAME: the id of the newest OOM event of the VM named NAME, or nothing.
qs_oom_id() {
    curl -s "http://127.0.0.1:$1/api/v1/ooms?limit=100" | python3 -c '
import json, sys
name = sys.argv[1]
items = json.load(sys.stdin).get("items", [])
print(next((str(i["id"]) for i in items if i["vm"]["name"] == name), ""))
' "$2" 2>/dev/null || true
}

# qs_wait_for_oom PORT NAME_FILE [ALIVE_CHECK]: waits up to 300 s for the demo VM's OOM
# (the VM's name is read from NAME_FILE once it exists) and prints its id. ALIVE_CHECK,
# a command, is run every second: when it fails, the demo died and waiting is over.
qs_wait_for_oom() {
    for _ in $(seq 1 300); do
        if [ -s "$2" ]; then
            found=$(qs_oom_id "$1" "$(cat "$2")")
            if [ -n "$found" ]; then
                echo "$found"
                return 0
            fi
        fi
        if [ -n "${3:-}" ] && ! $3; then
            return 1
        fi
        sleep 1
    done
    return 1
}

# qs_print_event PORT ID: the two verdicts and the explanation of event ID.
qs_print_event() {
    echo
    curl -s "http://127.0.0.1:$1/api/v1/ooms/$2" | python3 -c '
import json, sys, textwrap
event = json.load(sys.stdin)
print("verdict:", event["analysis"]["verdict"], "/ correlation:", event["correlation"]["verdict"])
print(textwrap.fill(event["analysis"]["explanation"], 88))
'
    echo
    echo
}
