# Sourced by the lab scripts: sets LAB_DIR to the harness's lab (the same default as
# crates/ballast-testvm/src/settings.rs): BALLAST_LAB_DIR, else /var/cache/ballast-lab as
# root (outside the clone, readable by the QEMU user), else <repo>/target/ballast-lab.
# Needs REPO (the clone's root).
if [ "$(id -u)" = 0 ]; then
    LAB_DIR=${BALLAST_LAB_DIR:-/var/cache/ballast-lab}
else
    LAB_DIR=${BALLAST_LAB_DIR:-$REPO/target/ballast-lab}
fi
