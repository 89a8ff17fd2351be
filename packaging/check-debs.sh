#!/usr/bin/env bash
# Checks the packages built by packaging/build-debs.sh: metadata (dpkg-deb --info), the
# files each must ship (dpkg-deb --contents), conffiles and maintainer scripts, and runs
# lintian when it is installed (errors and warnings fail; accepted tags, with the reason, are
# in packaging/lintian-suppressed). Prints the listings.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${CARGO_TARGET_DIR:-target}/debian"
fail=0
check() { # package, then the paths it must contain
    local pkg=$1
    shift
    local deb
    deb=$(ls "$out"/"${pkg}"_*.deb 2>/dev/null | head -1)
    if [ -z "$deb" ]; then
        echo "check-debs: no $pkg package in $out" >&2
        fail=1
        return
    fi
    echo "== $deb"
    dpkg-deb --info "$deb"
    local contents
    contents=$(dpkg-deb --contents "$deb")
    echo "$contents"
    local field
    field=$(dpkg-deb --field "$deb" Package)
    [ "$field" = "$pkg" ] || { echo "check-debs: $deb: Package is $field" >&2; fail=1; }
    for f in Version Architecture Maintainer Depends Description; do
        [ -n "$(dpkg-deb --field "$deb" "$f")" ] || { echo "check-debs: $pkg: empty $f" >&2; fail=1; }
    done
    for path in "$@"; do
        if ! grep -q -- " \./${path}\$" <<<"$contents"; then
            echo "check-debs: $pkg lacks /$path" >&2
            fail=1
        fi
    done
    # Binaries executable, configs conffiles, maintainer scripts present.
    for path in "$@"; do
        case $path in
        usr/bin/*)
            grep -q -- "^-rwxr-xr-x .* \./${path}\$" <<<"$contents" ||
                { echo "check-debs: $pkg: /$path not mode 755" >&2; fail=1; } ;;
        etc/*)
            dpkg-deb --info "$deb" conffiles | grep -qx "/$path" ||
                { echo "check-debs: $pkg: /$path not a conffile" >&2; fail=1; } ;;
        esac
    done
    for script in postinst prerm postrm; do
        dpkg-deb --info "$deb" "$script" >/dev/null 2>&1 ||
            { echo "check-debs: $pkg: no $script" >&2; fail=1; }
    done
    if command -v lintian >/dev/null 2>&1; then
        echo "-- lintian $pkg"
        lintian --fail-on error,warning --suppress-tags-from-file packaging/lintian-suppressed "$deb" || fail=1
    fi
}
common() { # package, unit name
    echo "lib/systemd/system/$2.service" "usr/lib/sysusers.d/$1.conf" \
        "usr/lib/tmpfiles.d/$1.conf" "etc/ringwatch/$2.toml" \
        "usr/share/doc/$1/install.md" "usr/share/doc/$1/KEYS.md" "usr/share/doc/$1/copyright"
}
# shellcheck disable=SC2046
check ringwatch-nanoprobe usr/bin/nanoprobe usr/share/man/man1/nanoprobe.1.gz \
    $(common ringwatch-nanoprobe nanoprobe)
# shellcheck disable=SC2046
check ringwatch-packet-reader usr/bin/packet-reader usr/share/man/man1/packet-reader.1.gz \
    $(common ringwatch-packet-reader packet-reader)
# shellcheck disable=SC2046
check ringwatch-cma usr/bin/cma usr/bin/cmactl usr/share/man/man1/cma.1.gz \
    usr/share/man/man1/cmactl.1.gz \
    usr/share/man/man1/cmactl-status.1.gz usr/share/bash-completion/completions/cmactl \
    usr/share/zsh/vendor-completions/_cmactl usr/share/fish/vendor_completions.d/cmactl.fish \
    usr/share/ringwatch/ringwatch.rules.yml usr/share/ringwatch/grafana-dashboard.json \
    $(common ringwatch-cma cma)
if [ "$fail" != 0 ]; then
    echo "check-debs: FAILED" >&2
    exit 1
fi
echo "check-debs: ok"
