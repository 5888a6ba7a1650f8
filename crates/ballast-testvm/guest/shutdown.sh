#!/bin/sh
# /sbin/shutdown of the ballast lab guest: qemu-ga runs "shutdown -r|-h|-P +0"
# for guest-shutdown (virsh reboot --mode agent); busybox has no shutdown applet.
sync
case " $* " in
    *" -r "*) exec reboot -f ;;
    *) exec poweroff -f ;;
esac
