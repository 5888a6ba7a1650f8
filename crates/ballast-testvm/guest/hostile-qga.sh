#!/bin/sh
# A hostile guest agent for ballast's tests: /init starts it instead of qemu-ga when
# the kernel command line has lab.qga=MODE, so it is the first process ever to open
# the agent port (libvirt sees it connect, as it sees qemu-ga).
#   never   reads every command, answers none
#   slow:N  answers guest-sync with its id and any other command with {"pid": 1},
#           each N seconds late
#   huge:N  answers guest-sync at once and any other command with one JSON line of
#           N MiB
# Prints HOSTILE-QGA-OPEN on the console once it holds the port and HOSTILE-QGA-GOT
# for every line it reads.
port=/dev/virtio-ports/org.qemu.guest_agent.0
mode=${1%%:*}
arg=${1#*:}
exec 3<>"$port"
echo "HOSTILE-QGA-OPEN mode=$1" >/dev/console
while IFS= read -r line <&3; do
    echo HOSTILE-QGA-GOT >/dev/console
    # The id of {"execute":"guest-sync","arguments":{"id":N}}, or empty.
    id=${line##*\"id\":}
    id=${id%%[!0-9]*}
    case "$line" in *guest-sync*) ;; *) id= ;; esac
    case "$mode" in
        slow)
            sleep "$arg"
            if [ -n "$id" ]; then
                echo "{\"return\": $id}" >&3
            else
                echo '{"return": {"pid": 1}}' >&3
            fi
            ;;
        huge)
            if [ -n "$id" ]; then
                echo "{\"return\": $id}" >&3
            else
                printf '{"return": {"pid": 1, "junk": "' >&3
                head -c $((arg * 1048576)) /dev/zero | tr '\0' A >&3
                echo '"}}' >&3
            fi
            ;;
        *) ;;
    esac
done
echo HOSTILE-QGA-EOF >/dev/console
