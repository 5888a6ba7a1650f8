# Sourced by scripts/host-kind.sh and scripts/install-deps.sh: what dpkg has installed.

# is_installed PKG: true when dpkg knows PKG as fully installed.
is_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null | cut -c1-2)" = ii ]
}
