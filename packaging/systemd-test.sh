#!/usr/bin/env bash
# Installs the three Debian packages under a real systemd and checks them (issue 28):
#   DEB_PROFILE=dev packaging/build-debs.sh && packaging/systemd-test.sh     (as root)
#
# Nothing on this machine is changed. The test boots /usr/lib/systemd/systemd as PID 1 of
# new PID, mount, network, UTS, IPC and cgroup namespaces, on a private root: an overlay
# whose lower layer is this machine's / (read only) and whose upper layer is a tmpfs that
# exists only in the new mount namespace (mounts there do not propagate back). /tmp,
# /var/tmp, /run and /dev are fresh tmpfs mounts, /proc/sys and /sys are read only, so
# systemd's boot-time jobs (systemd-tmpfiles --boot cleaning /tmp, sysctl, modules) reach
# nothing real; the machine's generators and the units its sysinit/local-fs/network
# targets pull in are masked in the private /etc, and systemd starts a minimal target.
# The network namespace has only `lo`: the 3 CMA nodes, the packet-reader and the
# nanoprobes talk on 127.0.86.x.
#
# Inside, it installs ringwatch-{nanoprobe,packet-reader,cma} with dpkg -i, writes the keys
# as KEYS.md says, runs CMA node 1 through the packaged cma.service and nodes 2 and 3 through
# test copies of it (ringwatch-test-cma@.service: the packaged unit with another --config),
# forms the cluster with `cmactl cluster init`, runs the packaged packet-reader.service and
# nanoprobe.service plus two nanoprobes from test copies of nanoprobe.service, and checks
# (one PASS/FAIL line each, exit 1 on any FAIL):
#   - the postinst: the ringwatch user, /etc/ringwatch and /var/lib/ringwatch owners and modes
#     (sysusers/tmpfiles), units installed but not enabled, tmpfiles resetting a loose key mode;
#   - Type=notify readiness (ActiveState=active, SubState=running), LimitNOFILE=16384 in
#     /proc/MAINPID/limits, the user the daemons run as;
#   - the ring: 3 hosts, each watched by 2 peers;
#   - the watchdog: SIGSTOPped cma, packet-reader and nanoprobe main processes are killed and
#     restarted (NRestarts, new MainPID) within WatchdogSec + slack; the cluster answers again;
#   - `systemctl stop nanoprobe` gives a `left` verdict (cmactl --json failures --all);
#   - an upgrade (dpkg -i again) restarts running units, leaves stopped ones stopped;
#   - dpkg --remove keeps conffiles and keys; purging one package keeps the shared keys and
#     Raft data; purging the last leaves no binaries, units, enablement links, conffiles,
#     keys or /var/lib/ringwatch; the ringwatch user stays (Debian keeps system users).
# Every wait has a deadline. systemd is stopped by SIGKILL to the PID this script started
# (PID 1 of the namespace: that ends everything in it); the mounts go with the namespace.
#   On a failure the last 100 lines of the journal are printed. KEEP=1 keeps the work
#   directory (the boot script, the output of unshare and systemd).
# shellcheck disable=SC2317 # functions called through check/must/wait_for
# shellcheck disable=SC2016 # single-quoted dpkg-query formats and python
# shellcheck disable=SC2001 # sed indenting multi-line output
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "systemd-test: SKIPPED (needs root)"
    exit 0
fi
T0=$(date +%s%N)
elapsed() { awk -v ns="$(( $(date +%s%N) - T0 ))" 'BEGIN { printf "%.1f", ns / 1e9 }'; }
log() { echo "[$(printf '%7s' "$(elapsed)") s] $*"; }

debs=${CARGO_TARGET_DIR:-target}/debian
for pkg in ringwatch-nanoprobe ringwatch-packet-reader ringwatch-cma; do
    if ! ls "$debs/${pkg}"_*.deb >/dev/null 2>&1; then
        echo "systemd-test: no $pkg package in $debs (run DEB_PROFILE=dev packaging/build-debs.sh)" >&2
        exit 1
    fi
done
for tool in unshare nsenter ip python3 /usr/lib/systemd/systemd; do
    command -v "$tool" >/dev/null 2>&1 || { echo "systemd-test: $tool missing" >&2; exit 1; }
done

# The cgroup v2 hierarchy: the whole mount (unified) or /sys/fs/cgroup/unified (hybrid).
if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
    cg2=/sys/fs/cgroup
elif [ "$(stat -fc %T /sys/fs/cgroup/unified 2>/dev/null)" = cgroup2fs ]; then
    cg2=/sys/fs/cgroup/unified
else
    echo "systemd-test: no cgroup v2 hierarchy mounted" >&2
    exit 1
fi

WORK=$(mktemp -d /tmp/ringwatch-systemd-test.XXXXXX)
CG=""
UNSHARE_PID=""
SYSTEMD_PID=""
cleanup() {
    local rc=$?
    set +e
    if [ -n "$SYSTEMD_PID" ] && [ "$(cat "/proc/$SYSTEMD_PID/comm" 2>/dev/null)" = systemd ]; then
        kill -KILL "$SYSTEMD_PID"
    fi
    if [ -n "$UNSHARE_PID" ]; then
        for _ in $(seq 100); do kill -0 "$UNSHARE_PID" 2>/dev/null || break; sleep 0.1; done
        wait "$UNSHARE_PID" 2>/dev/null
    fi
    if [ -n "$CG" ] && [ -d "$CG" ]; then
        # Children first; a cgroup empties a moment after its last process died.
        for _ in $(seq 50); do
            find "$CG" -depth -type d -exec rmdir {} + 2>/dev/null
            [ -d "$CG" ] || break
            sleep 0.1
        done
        [ -d "$CG" ] && echo "systemd-test: could not remove cgroup $CG" >&2
    fi
    # The overlay and tmpfs mounts lived only in the namespace; never delete through a mount.
    if grep -qF " $WORK" /proc/self/mountinfo; then
        echo "systemd-test: something is still mounted under $WORK; left in place" >&2
    elif [ "${KEEP:-0}" = 1 ]; then
        echo "systemd-test: work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
trap 'echo "systemd-test: FAIL: aborted at line $LINENO: $BASH_COMMAND" >&2' ERR

mkdir "$WORK/layer" "$WORK/root" "$WORK/debs"
cp "$debs"/ringwatch-nanoprobe_*.deb "$debs"/ringwatch-packet-reader_*.deb \
    "$debs"/ringwatch-cma_*.deb "$WORK/debs/"

# Run as PID 1 of the new namespaces: builds the private root, then execs systemd.
cat >"$WORK/boot.sh" <<'BOOT'
#!/usr/bin/env bash
set -euo pipefail
W=$1
mount --make-rprivate /
mount -t tmpfs -o mode=0700,size=4g ringwatch-test "$W/layer"
R=$W/root
# One overlay per filesystem that holds the OS (usually only /).
n=0
for d in / /usr /etc /var; do
    if [ "$d" = / ] || mountpoint -q "$d"; then
        n=$((n + 1))
        mkdir -p "$W/layer/upper$n" "$W/layer/work$n"
        mount -t overlay ringwatch-test -o \
            "lowerdir=$d,upperdir=$W/layer/upper$n,workdir=$W/layer/work$n" "$R${d%/}"
    fi
done
# Everything below writes only under $R: make sure it is the overlay.
[ "$(stat -fc %T "$R")" = overlayfs ] || { echo "boot: $R is not the overlay" >&2; exit 1; }
mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
for p in sys sysrq-trigger; do
    [ -e "$R/proc/$p" ] || continue
    mount --bind "$R/proc/$p" "$R/proc/$p"
    mount -o remount,bind,ro "$R/proc/$p"
done
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$R/sys/fs/cgroup"
mount -t tmpfs -o mode=0755,nosuid,size=16m tmpfs "$R/dev"
for d in null zero full random urandom tty; do
    touch "$R/dev/$d"
    mount --bind "/dev/$d" "$R/dev/$d"
done
mkdir "$R/dev/pts" "$R/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$R/dev/pts"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$R/dev/shm"
ln -s pts/ptmx "$R/dev/ptmx"
ln -s /proc/self/fd "$R/dev/fd"
ln -s /proc/self/fd/0 "$R/dev/stdin"
ln -s /proc/self/fd/1 "$R/dev/stdout"
ln -s /proc/self/fd/2 "$R/dev/stderr"
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$R/run"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$R/tmp"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$R/var/tmp"
ip link set lo up
hostname ringwatch-systemd-test

# A minimal boot: the machine's generators and everything its early targets pull in are
# masked, except the journal and tmpfiles (the packages' postinst uses it too).
E=$R/etc/systemd/system
mkdir -p "$R/etc/systemd/system-generators"
for g in /usr/lib/systemd/system-generators/* /lib/systemd/system-generators/* \
    /etc/systemd/system-generators/* /usr/local/lib/systemd/system-generators/*; do
    [ -e "$g" ] && ln -sfn /dev/null "$R/etc/systemd/system-generators/${g##*/}"
done
keep=" systemd-journald.service systemd-journald.socket systemd-journald-dev-log.socket
systemd-tmpfiles-setup.service systemd-journal-flush.service "
for t in sysinit local-fs local-fs-pre remote-fs remote-fs-pre swap cryptsetup \
    integritysetup veritysetup network network-pre network-online; do
    for dir in /etc/systemd/system /usr/lib/systemd/system /lib/systemd/system \
        /usr/local/lib/systemd/system; do
        for u in "$dir/$t.target.wants"/* "$dir/$t.target.requires"/*; do
            [ -e "$u" ] || [ -L "$u" ] || continue
            u=${u##*/}
            case $keep in *" $u "* | *" $u"$'\n'*) continue ;; esac
            ln -sfn /dev/null "$E/$u"
        done
    done
done
cat >"$E/ringwatch-test.target" <<'UNIT'
[Unit]
Description=Ringwatch packaging test (minimal boot)
Requires=sysinit.target
After=sysinit.target
AllowIsolate=yes
UNIT
# A policy-rc.d that forbids service actions (container images ship one) would stop
# deb-systemd-invoke from doing what the maintainer scripts ask: removed in the private root.
if [ -e "$R/usr/sbin/policy-rc.d" ]; then
    rm -f "$R/usr/sbin/policy-rc.d"
    echo "boot: removed /usr/sbin/policy-rc.d in the private root"
fi
mkdir -p "$R/root/ringwatch-debs"
cp "$W"/debs/*.deb "$R/root/ringwatch-debs/"

cd "$R"
mkdir -p .oldroot
pivot_root . .oldroot
umount -l /.oldroot
rmdir /.oldroot
cd /
exec env -i container=ringwatch-test PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    /usr/lib/systemd/systemd --system --unit=ringwatch-test.target --show-status=no
BOOT

log "booting systemd in new namespaces (overlay root, tmpfs upper layer)"
[ -e /usr/sbin/policy-rc.d ] &&
    log "note: this machine's /usr/sbin/policy-rc.d is removed in the private root (it would stop deb-systemd-invoke)"
CG=$cg2/ringwatch-systemd-test.$$
mkdir "$CG"
# The subshell joins the test cgroup, so the new cgroup namespace is rooted there.
(
    echo "$BASHPID" >"$CG/cgroup.procs"
    exec unshare --pid --fork --kill-child=SIGKILL --mount --propagation private --uts \
        --ipc --net --cgroup bash "$WORK/boot.sh" "$WORK"
) </dev/null >"$WORK/systemd.log" 2>&1 &
UNSHARE_PID=$!
deadline=$((SECONDS + 20))
while :; do
    SYSTEMD_PID=$({ cat "/proc/$UNSHARE_PID/task/$UNSHARE_PID/children" 2>/dev/null || true; } | awk '{print $1}')
    [ -n "$SYSTEMD_PID" ] && [ "$(cat "/proc/$SYSTEMD_PID/comm" 2>/dev/null)" = systemd ] && break
    if ! kill -0 "$UNSHARE_PID" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
        echo "systemd-test: systemd did not start; its log:" >&2
        cat "$WORK/systemd.log" >&2
        exit 1
    fi
    sleep 0.1
done
log "systemd is PID $SYSTEMD_PID here, PID 1 in its namespace"

# A command inside: all the namespaces, the private root, a clean environment.
ns() {
    nsenter -t "$SYSTEMD_PID" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
        LANG=C.UTF-8 NO_COLOR=1 "$@"
}
state=""
deadline=$((SECONDS + 60))
while [ $SECONDS -lt $deadline ]; do
    state=$(ns systemctl is-system-running 2>/dev/null || true)
    case $state in running | degraded) break ;; esac
    sleep 0.2
done
PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); log "PASS: $*"; }
fail() { FAILED=$((FAILED + 1)); log "FAIL: $*"; }
check() { # description, then a command that must succeed
    local what=$1
    shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}
# Fatal: later steps need this one.
must() {
    local what=$1
    shift
    if "$@"; then
        pass "$what"
    else
        fail "$what"
        finish
    fi
}
finish() {
    if [ "$FAILED" != 0 ]; then
        echo "---- systemd's journal (last 100 lines)"
        ns journalctl --no-pager -n 100 2>&1 || true
    fi
    log "systemd-test: $PASSED passed, $FAILED failed"
    echo "$PASSED passed, $FAILED failed"
    [ "$FAILED" = 0 ] && exit 0
    exit 1
}
show() { ns systemctl show -p "$2" --value "$1"; }
is() { # unit, property, expected value
    local got
    got=$(show "$1" "$2")
    [ "$got" = "$3" ] || { echo "  $1: $2=$got, expected $3"; return 1; }
}
# Waits (at most $1 seconds) until the command succeeds.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.25
    done
}
running() { is "$1" ActiveState active >/dev/null && is "$1" SubState running >/dev/null; }

case $state in
running | degraded) pass "systemd booted: is-system-running=$state" ;;
*)
    fail "systemd booted: is-system-running=${state:-no answer} after 60 s"
    ns systemctl list-jobs --no-pager || true
    finish
    ;;
esac

# ---- install
log "dpkg -i the three packages"
must "dpkg -i ringwatch-nanoprobe ringwatch-packet-reader ringwatch-cma" \
    ns sh -c 'dpkg -i /root/ringwatch-debs/*.deb'
ns dpkg-query -W 'ringwatch-*'
user_ok() {
    local entry
    entry=$(ns getent passwd ringwatch) || { echo "  no user ringwatch"; return 1; }
    echo "  $entry"
    case $entry in ringwatch:x:*:*:*:/var/lib/ringwatch:/usr/sbin/nologin) ;; *) return 1 ;; esac
    ns getent group ringwatch >/dev/null
}
check "user and group ringwatch (sysusers: home /var/lib/ringwatch, nologin)" user_ok
mode_is() { # path, "mode owner group"
    local got
    got=$(ns stat -c '%a %U %G' "$1") || return 1
    [ "$got" = "$2" ] || { echo "  $1: $got, expected $2"; return 1; }
}
check "/etc/ringwatch is 750 root:ringwatch (tmpfiles)" mode_is /etc/ringwatch "750 root ringwatch"
check "/var/lib/ringwatch is 750 ringwatch:ringwatch (tmpfiles)" \
    mode_is /var/lib/ringwatch "750 ringwatch ringwatch"
not_enabled() {
    local u
    for u in cma nanoprobe packet-reader; do
        is "$u.service" UnitFileState disabled || return 1
        is "$u.service" ActiveState inactive || return 1
    done
}
check "units installed, not enabled, not started by the postinst" not_enabled

# ---- keys, as KEYS.md says
log "keys (KEYS.md) and configs for 3 CMA nodes, a packet-reader and 3 nanoprobes on 127.0.86.x"
must "keys.toml, cluster.secret, admin.token written as KEYS.md says" ns sh -ec '
    nanoprobe keygen --out /etc/ringwatch/keys.toml >/dev/null
    chown root:ringwatch /etc/ringwatch/keys.toml
    chmod 0640 /etc/ringwatch/keys.toml
    od -An -tx1 -N32 /dev/urandom | tr -d " \n" > /etc/ringwatch/cluster.secret
    chown root:ringwatch /etc/ringwatch/cluster.secret
    chmod 0640 /etc/ringwatch/cluster.secret
    od -An -tx1 -N32 /dev/urandom | tr -d " \n" > /etc/ringwatch/admin.token
    chown root:ringwatch /etc/ringwatch/admin.token
    chmod 0640 /etc/ringwatch/admin.token'
tmpfiles_resets() {
    ns chmod 0664 /etc/ringwatch/admin.token
    ns chown ringwatch:root /etc/ringwatch/keys.toml
    ns systemd-tmpfiles --create ringwatch-cma.conf 2>/dev/null || true
    mode_is /etc/ringwatch/admin.token "640 root ringwatch" &&
        mode_is /etc/ringwatch/keys.toml "640 root ringwatch" &&
        mode_is /etc/ringwatch/cluster.secret "640 root ringwatch"
}
check "systemd-tmpfiles resets loosened key files to 640 root:ringwatch" tmpfiles_resets

NET=127.0.86
ADMIN=17480
write() { ns sh -c "cat > '$1'"; }
cma_config() { # node id, data dir
    cat <<TOML
node_id = $1
listen = "$NET.$1:17400"
admin_listen = "$NET.$1:$ADMIN"
admin_token_file = "/etc/ringwatch/admin.token"
data_dir = "$2"
cluster_secret_file = "/etc/ringwatch/cluster.secret"

[worker]
key_file = "/etc/ringwatch/keys.toml"
command_listen = "$NET.$1:0"

[worker.timings]
interval_ms = 1000
warntime_ms = 2000
deadtime_ms = 3000
TOML
}
# Node 1 runs from the packaged unit with its default data dir; nodes 2 and 3 from copies.
cma_config 1 /var/lib/ringwatch | write /etc/ringwatch/cma.toml
cma_config 2 /var/lib/ringwatch/node2 | write /etc/ringwatch/cma-2.toml
cma_config 3 /var/lib/ringwatch/node3 | write /etc/ringwatch/cma-3.toml
write /etc/ringwatch/packet-reader.toml <<TOML
host_id = 900001
listen = ["$NET.10:17300"]
key_file = "/etc/ringwatch/keys.toml"
cma_nodes = ["$NET.1:17400", "$NET.2:17400", "$NET.3:17400"]
cluster_secret_file = "/etc/ringwatch/cluster.secret"
metrics_listen = "$NET.10:17302"
TOML
probe_config() { # host id, config file
    write "$2" <<TOML
host_id = $1
bind = "$NET.$1:17500"
packet_readers = ["$NET.10:17300"]
key_file = "/etc/ringwatch/keys.toml"

[timings]
interval_ms = 1000
warntime_ms = 2000
deadtime_ms = 3000
TOML
}
probe_config 101 /etc/ringwatch/nanoprobe.toml
probe_config 102 /etc/ringwatch/nanoprobe-102.toml
probe_config 103 /etc/ringwatch/nanoprobe-103.toml
# The packaged units, only with another --config: the extra nodes and probes get the same
# hardening, limits, watchdog and notify settings.
ns sh -ec '
    sed -e "s|^ExecStart=.*|ExecStart=/usr/bin/cma --config /etc/ringwatch/cma-%i.toml|" \
        -e "s|^Description=.*|Description=Ringwatch test CMA node %i (cma.service, other config)|" \
        /lib/systemd/system/cma.service > /etc/systemd/system/ringwatch-test-cma@.service
    sed -e "s|^ExecStart=.*|ExecStart=/usr/bin/nanoprobe --config /etc/ringwatch/nanoprobe-%i.toml|" \
        -e "s|^Description=.*|Description=Ringwatch test nanoprobe %i (nanoprobe.service, other config)|" \
        /lib/systemd/system/nanoprobe.service > /etc/systemd/system/ringwatch-test-nanoprobe@.service
    systemctl daemon-reload'

# ---- the CMA cluster
TOKEN=$(ns cat /etc/ringwatch/admin.token)
cmactl_on() { # node id, cmactl arguments
    local id=$1
    shift
    ns CMACTL_TOKEN="$TOKEN" timeout 20 cmactl --api "http://$NET.$id:$ADMIN" "$@"
}
cmactl() {
    ns CMACTL_TOKEN="$TOKEN" timeout 20 cmactl \
        --api "http://$NET.1:$ADMIN,http://$NET.2:$ADMIN,http://$NET.3:$ADMIN" "$@"
}
start_units() { # units; waits for each to be active/running (Type=notify: READY=1 sent)
    local t u
    t=$(date +%s%N)
    ns systemctl start --no-block "$@"
    for u in "$@"; do
        if wait_for 60 running "$u"; then
            pass "$u: ActiveState=active SubState=running (READY=1 after $(( ($(date +%s%N) - t) / 1000000 )) ms)"
        else
            fail "$u: not active/running within 60 s"
            ns systemctl status --no-pager -n 20 "$u" || true
        fi
    done
}
log "systemctl enable cma; start cma + ringwatch-test-cma@2 @3"
ns systemctl enable cma.service 2>&1 | sed 's/^/  /'
start_units cma.service ringwatch-test-cma@2.service ringwatch-test-cma@3.service
for id in 1 2 3; do
    wait_for 30 cmactl_on "$id" cluster status || true
done
log "cmactl cluster init"
must "cmactl cluster init: 3 members" cmactl_on 1 cluster init --wait 60 \
    --member "1=$NET.1:17400,$NET.1:$ADMIN" --member "2=$NET.2:17400,$NET.2:$ADMIN" \
    --member "3=$NET.3:17400,$NET.3:$ADMIN"

log "enable and start packet-reader, nanoprobe; start ringwatch-test-nanoprobe@102 @103"
ns systemctl enable packet-reader.service nanoprobe.service 2>&1 | sed 's/^/  /'
start_units packet-reader.service nanoprobe.service \
    ringwatch-test-nanoprobe@102.service ringwatch-test-nanoprobe@103.service

notify_type() {
    local u
    for u in cma nanoprobe packet-reader; do
        is "$u.service" Type notify && is "$u.service" NotifyAccess main &&
            is "$u.service" WatchdogUSec 10s || return 1
    done
}
check "packaged units are Type=notify, NotifyAccess=main, WatchdogSec=10s" notify_type
limits_ok() {
    local u pid line
    for u in cma nanoprobe packet-reader; do
        pid=$(show "$u.service" MainPID)
        line=$(ns grep '^Max open files' "/proc/$pid/limits") || return 1
        echo "  $u (pid $pid): $line"
        [[ $line =~ ^Max\ open\ files\ +16384\ +16384\ +files ]] || return 1
    done
}
check "LimitNOFILE=16384 (soft and hard) in /proc/MAINPID/limits" limits_ok
runs_as_ringwatch() {
    local u pid uid
    for u in cma nanoprobe packet-reader; do
        pid=$(show "$u.service" MainPID)
        uid=$(ns awk '/^Uid:/ { print $2 }' "/proc/$pid/status")
        [ "$uid" = "$(ns id -u ringwatch)" ] || { echo "  $u runs as uid $uid"; return 1; }
    done
}
check "the daemons run as user ringwatch" runs_as_ringwatch

ring_formed() {
    cmactl --json hosts | python3 -c 'import json, sys
h = json.load(sys.stdin)
sys.exit(0 if len(h) == 3 and all(len(x["watchers"]) == 2 for x in h) else 1)'
}
t=$SECONDS
if wait_for 60 ring_formed; then
    pass "ring formed: 3 hosts, each watched by 2 ($((SECONDS - t)) s)"
    cmactl hosts | sed 's/^/  /'
else
    fail "ring formed: 3 hosts, each watched by 2 (not within 60 s)"
    cmactl hosts || true
fi

# ---- the watchdog, for each daemon at once: CMA node 1 (the packaged unit), the packet-reader
# and nanoprobe 103 (a copy of nanoprobe.service; host 101 must stay up for the test below)
WD_UNITS=(cma.service packet-reader.service ringwatch-test-nanoprobe@103.service)
log "SIGSTOP the main process of ${WD_UNITS[*]} (WatchdogSec=10s)"
declare -A PID0=() NR0=() TOOK=()
done_count=0
for u in "${WD_UNITS[@]}"; do
    PID0[$u]=$(show "$u" MainPID)
    NR0[$u]=$(show "$u" NRestarts)
done
for u in "${WD_UNITS[@]}"; do ns kill -STOP "${PID0[$u]}"; done
t=$(date +%s%N)
restarted() { # unit
    local pid nr
    pid=$(show "$1" MainPID)
    nr=$(show "$1" NRestarts)
    [ "$nr" -gt "${NR0[$1]}" ] && [ "$pid" != 0 ] && [ "$pid" != "${PID0[$1]}" ] && running "$1"
}
deadline=$((SECONDS + 40))
while [ $SECONDS -lt $deadline ] && [ $done_count -lt ${#WD_UNITS[@]} ]; do
    for u in "${WD_UNITS[@]}"; do
        if [ -z "${TOOK[$u]:-}" ] && restarted "$u"; then
            TOOK[$u]=$(( ($(date +%s%N) - t) / 1000000 ))
            done_count=$((done_count + 1))
        fi
    done
    sleep 0.25
done
for u in "${WD_UNITS[@]}"; do
    if [ -n "${TOOK[$u]:-}" ]; then
        pass "watchdog: hung $u (pid ${PID0[$u]}) killed and restarted as pid $(show "$u" MainPID), NRestarts ${NR0[$u]} -> $(show "$u" NRestarts), ${TOOK[$u]} ms after SIGSTOP"
    else
        fail "watchdog: hung $u not restarted within 40 s (MainPID $(show "$u" MainPID), NRestarts $(show "$u" NRestarts))"
    fi
    check "journal: systemd names the watchdog timeout of $u" \
        sh -c "nsenter -t $SYSTEMD_PID -a journalctl --no-pager -u '$u' | grep -q 'Watchdog timeout'"
done
t=$SECONDS
check "restarted node 1 answers cmactl cluster status" wait_for 30 cmactl_on 1 cluster status
echo "  (cluster status after $((SECONDS - t)) s)"
t=$SECONDS
if wait_for 60 ring_formed; then
    pass "ring formed again after the restarts ($((SECONDS - t)) s)"
else
    fail "ring formed again after the restarts (not within 60 s)"
    cmactl hosts || true
fi

# ---- a clean stop is a departure, not a failure
log "systemctl stop nanoprobe (host 101)"
ns timeout 30 systemctl stop nanoprobe.service
stopped_clean() { is nanoprobe.service ActiveState inactive && is nanoprobe.service Result success; }
check "nanoprobe.service stopped cleanly (inactive, Result=success)" stopped_clean
verdict() { # kind, subject
    cmactl --json failures --all | python3 -c 'import json, sys
sys.exit(0 if any(f["kind"] == sys.argv[1] and f["subject"] == sys.argv[2]
                  for f in json.load(sys.stdin)) else 1)' "$1" "$2"
}
t=$(date +%s%N)
if wait_for 30 verdict left 101; then
    pass "'left' verdict about host 101 ($(( ($(date +%s%N) - t) / 1000000 )) ms after the stop)"
else
    fail "'left' verdict about host 101 within 30 s"
fi
sleep 6 # twice the deadtime
if verdict dead 101; then fail "no 'dead' verdict about host 101 (a clean stop raised an alarm)"; else pass "no 'dead' verdict about host 101 after 2 x deadtime"; fi
cmactl failures --all | sed 's/^/  /' || true

# ---- upgrade: the postinst try-restarts running units and leaves stopped ones stopped
log "dpkg -i the same packages again (an upgrade for the maintainer scripts)"
cma0=$(show cma.service MainPID)
reader0=$(show packet-reader.service MainPID)
must "dpkg -i again" ns sh -c 'dpkg -i /root/ringwatch-debs/*.deb >/dev/null'
upgrade_restarts() {
    local cma reader
    cma=$(show cma.service MainPID)
    reader=$(show packet-reader.service MainPID)
    echo "  cma: pid $cma0 -> $cma, packet-reader: pid $reader0 -> $reader"
    [ "$cma" != "$cma0" ] && [ "$reader" != "$reader0" ] && running cma.service &&
        running packet-reader.service
}
check "upgrade restarted the running cma and packet-reader (deb-systemd-invoke try-restart)" \
    wait_for 30 upgrade_restarts
check "upgrade left the stopped nanoprobe stopped" is nanoprobe.service ActiveState inactive
kept_enabled() {
    local u
    for u in cma nanoprobe packet-reader; do is "$u.service" UnitFileState enabled || return 1; done
}
check "upgrade kept the units enabled" kept_enabled

# ---- remove and purge: the shared state goes with the last package purged
log "dpkg --remove ringwatch-nanoprobe (the test's nanoprobe units and configs removed first)"
ns systemctl stop ringwatch-test-nanoprobe@102.service ringwatch-test-nanoprobe@103.service
ns rm -f /etc/systemd/system/ringwatch-test-nanoprobe@.service \
    /etc/ringwatch/nanoprobe-102.toml /etc/ringwatch/nanoprobe-103.toml
ns systemctl daemon-reload
must "dpkg --remove ringwatch-nanoprobe" ns dpkg --remove ringwatch-nanoprobe
removed_keeps() {
    ns test ! -e /usr/bin/nanoprobe && ns test -e /etc/ringwatch/nanoprobe.toml &&
        ns test -e /etc/ringwatch/keys.toml &&
        [ "$(ns dpkg-query -W -f='${db:Status-Abbrev}' ringwatch-nanoprobe)" = "rc " ]
}
check "remove: binary gone, conffile and keys kept, package in state rc" removed_keeps
log "dpkg --purge ringwatch-packet-reader (cma installed, nanoprobe rc: shared state stays)"
must "dpkg --purge ringwatch-packet-reader" ns dpkg --purge ringwatch-packet-reader
first_purge() {
    is packet-reader.service ActiveState inactive && ns test ! -e /etc/ringwatch/packet-reader.toml &&
        ns test -e /etc/ringwatch/keys.toml && ns test -e /etc/ringwatch/cluster.secret &&
        ns test -d /var/lib/ringwatch/log
}
check "purge of one: its unit stopped (prerm), its conffile gone; keys and Raft data kept" first_purge
log "dpkg --purge ringwatch-cma ringwatch-nanoprobe (the last two; the test's CMA units removed first)"
ns systemctl stop ringwatch-test-cma@2.service ringwatch-test-cma@3.service
ns rm -f /etc/systemd/system/ringwatch-test-cma@.service /etc/ringwatch/cma-2.toml \
    /etc/ringwatch/cma-3.toml
ns systemctl daemon-reload
must "dpkg --purge ringwatch-cma ringwatch-nanoprobe" \
    ns dpkg --purge ringwatch-cma ringwatch-nanoprobe
no_package() {
    local left
    left=$(ns dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' 'ringwatch-*' 2>/dev/null |
        awk 'substr($2, 2, 1) != "n"')
    [ -z "$left" ] || { echo "  $left"; return 1; }
}
check "dpkg knows no ringwatch package any more (not even config-files)" no_package
nothing_left() {
    local found
    found=$(ns sh -c 'ls -d /usr/bin/nanoprobe /usr/bin/packet-reader /usr/bin/cma /usr/bin/cmactl \
        /lib/systemd/system/cma.service /lib/systemd/system/nanoprobe.service \
        /lib/systemd/system/packet-reader.service /usr/lib/sysusers.d/ringwatch-* \
        /usr/lib/tmpfiles.d/ringwatch-* /usr/share/doc/ringwatch-* /usr/share/ringwatch \
        /usr/share/man/man1/cma.1.gz /usr/share/man/man1/cmactl.1.gz \
        /usr/share/bash-completion/completions/cmactl /etc/ringwatch /var/lib/ringwatch \
        /var/lib/systemd/deb-systemd-helper-enabled/cma.service* \
        /var/lib/systemd/deb-systemd-helper-enabled/nanoprobe.service* \
        /var/lib/systemd/deb-systemd-helper-enabled/packet-reader.service* 2>/dev/null
        find /etc/systemd/system /var/lib/systemd/deb-systemd-helper-enabled \( -name cma.service \
            -o -name nanoprobe.service -o -name packet-reader.service \) 2>/dev/null' || true)
    [ -z "$found" ] || { sed 's/^/  left: /' <<<"$found"; return 1; }
}
check "purge left no binaries, units, enablement links, conffiles, keys, /etc/ringwatch, /var/lib/ringwatch" nothing_left
no_process() {
    local procs
    procs=$(ns pgrep -a -u ringwatch) || return 0
    sed 's/^/  still running: /' <<<"$procs"
    return 1
}
check "no process of user ringwatch left (prerm stopped the units)" no_process
unknown_units() {
    ns systemctl daemon-reload
    is cma.service LoadState not-found && is nanoprobe.service LoadState not-found &&
        is packet-reader.service LoadState not-found
}
check "systemd knows none of the units after a daemon-reload" unknown_units
if ns getent passwd ringwatch >/dev/null; then
    log "note: user ringwatch stays after the purge (Debian does not remove system users)"
fi
finish
