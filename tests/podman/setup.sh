#!/usr/bin/env bash
# Sets up a private Podman that serves the Docker Engine API for the `container` executor's tests.
#
# Idempotent and fast when already done (one `_ping` and two image look-ups). Runs as root. Needs
# only Debian's package repositories (podman, runc, busybox-static); no registry is ever pulled from.
#
# Everything lives in places of its own, so the machine's global Podman configuration is untouched:
#   /var/lib/spear-podman/containers.conf   [containers] default_ulimits = [] (runc cannot set the
#                                           default rlimits here), runc, cgroupfs, file events
#   /var/lib/spear-podman/storage.conf      driver vfs, graphroot /var/lib/spear-podman/storage
#   /var/lib/spear-podman/busybox-image.tar docker-archive of `spear-busybox-tar:latest` (for the
#                                           "load the image from the artifact tarball" test)
#   /run/spear-podman/podman.sock           the API socket (`podman system service --time=0`)
#   /run/spear-podman/service.log           the service's log
# The files are selected through CONTAINERS_CONF and CONTAINERS_STORAGE_CONF, for the service and for
# the podman commands below. Images made: `spear-busybox:latest` (busybox-static imported as a
# rootfs). Prints `socket=unix:///…` and `tarball=/…` as its last lines.
#
# Environment: SPEAR_PODMAN_STATE (default /var/lib/spear-podman), SPEAR_PODMAN_RUN (default
# /run/spear-podman).
set -euo pipefail

STATE=${SPEAR_PODMAN_STATE:-/var/lib/spear-podman}
RUN=${SPEAR_PODMAN_RUN:-/run/spear-podman}
SOCK=$RUN/podman.sock
TARBALL=$STATE/busybox-image.tar
IMAGE=spear-busybox:latest
TAR_IMAGE=spear-busybox-tar:latest
export CONTAINERS_CONF=$STATE/containers.conf
export CONTAINERS_STORAGE_CONF=$STATE/storage.conf

say() { echo "podman-setup: $*" >&2; }
die() {
    say "error: $*"
    exit 1
}

ping() { curl -sf --max-time 2 --unix-socket "$SOCK" http://d/_ping >/dev/null 2>&1; }
has_image() { curl -sf --max-time 5 --unix-socket "$SOCK" "http://d/images/$1/json" >/dev/null 2>&1; }
done_already() { ping && has_image "$IMAGE" && [ -s "$TARBALL" ]; }

finish() {
    echo "socket=unix://$SOCK"
    echo "tarball=$TARBALL"
    exit 0
}

[ "$(id -u)" = 0 ] || die "run as root (it installs packages and starts a root Podman service)"
if command -v curl >/dev/null && done_already; then finish; fi

mkdir -p "$STATE" "$RUN"
# One setup at a time (several test processes may start at once).
exec 9>"$RUN/setup.lock"
flock 9
if command -v curl >/dev/null && done_already; then finish; fi

# --- packages ---------------------------------------------------------------------------------
need=()
for p in podman runc busybox-static curl util-linux; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Update the lists only when they are missing or do not know a package yet.
    if ! apt-get install -y --no-install-recommends "${need[@]}" >"$RUN/apt.log" 2>&1; then
        apt-get update >>"$RUN/apt.log" 2>&1 || { cat "$RUN/apt.log" >&2; die "apt-get update failed"; }
        apt-get install -y --no-install-recommends "${need[@]}" >>"$RUN/apt.log" 2>&1 ||
            { cat "$RUN/apt.log" >&2; die "apt-get install ${need[*]} failed"; }
    fi
fi

# --- configuration ----------------------------------------------------------------------------
write_if_changed() { # path, content
    if [ ! -f "$1" ] || [ "$(cat "$1")" != "$2" ]; then printf '%s\n' "$2" >"$1"; fi
}
write_if_changed "$CONTAINERS_CONF" "# Written by tests/podman/setup.sh.
[containers]
# Without this runc fails setting the default rlimits on these machines.
default_ulimits = []
log_driver = \"k8s-file\"

[engine]
runtime = \"runc\"
cgroup_manager = \"cgroupfs\"
events_logger = \"file\"
tmp_dir = \"$RUN/tmp\"
volume_path = \"$STATE/volumes\""
write_if_changed "$CONTAINERS_STORAGE_CONF" "# Written by tests/podman/setup.sh.
[storage]
driver = \"vfs\"
runroot = \"$RUN/storage\"
graphroot = \"$STATE/storage\""

podman_() { podman --storage-driver vfs --runtime runc "$@"; }

# --- the service ------------------------------------------------------------------------------
if ! ping; then
    rm -f "$SOCK"
    say "starting podman system service on $SOCK (log: $RUN/service.log)"
    # From its own directory: conmon writes files (such as `oom` after an OOM kill) into the
    # working directory it inherits.
    cd "$RUN"
    setsid nohup podman --storage-driver vfs --runtime runc system service --time=0 \
        "unix://$SOCK" >>"$RUN/service.log" 2>&1 </dev/null 9>&- &
    cd - >/dev/null
    for _ in $(seq 1 300); do
        ping && break
        sleep 0.1
    done
    ping || {
        tail -n 50 "$RUN/service.log" >&2
        die "podman system service did not answer on $SOCK within 30 s (log above)"
    }
fi

# --- images -----------------------------------------------------------------------------------
if ! has_image "$IMAGE"; then
    say "building $IMAGE from busybox-static"
    root=$(mktemp -d)
    trap 'rm -rf "$root"' EXIT
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,proc,sys,dev,root}
    chmod 1777 "$root/tmp"
    cp /bin/busybox "$root/bin/busybox"
    for applet in $(/bin/busybox --list-full); do
        [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
    tar -C "$root" -cf "$root.tar" .
    podman_ import --change 'CMD ["/bin/sh"]' "$root.tar" "$IMAGE" >/dev/null ||
        die "podman import of the busybox rootfs failed"
    rm -f "$root.tar"
    rm -f "$TARBALL"
fi
if [ ! -s "$TARBALL" ]; then
    say "writing $TARBALL (docker-archive of $TAR_IMAGE)"
    podman_ tag "$IMAGE" "$TAR_IMAGE"
    podman_ save --format docker-archive -o "$TARBALL.tmp" "$TAR_IMAGE" >/dev/null ||
        die "podman save failed"
    mv "$TARBALL.tmp" "$TARBALL"
    # The tests load it back from the tarball.
    podman_ rmi "$TAR_IMAGE" >/dev/null 2>&1 || true
fi
done_already || die "the setup finished but the service or $IMAGE is not there (see $RUN/service.log)"
finish
