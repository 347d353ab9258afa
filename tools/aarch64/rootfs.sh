#!/usr/bin/env bash
# Build the arm64 Debian root the emulated tests run in, when it is absent or stale:
# debootstrap (first stage on the host, second stage under qemu-aarch64), then a venv
# with tools/aarch64/requirements.txt from PyPI's aarch64 wheels. Idempotent: a root
# whose stamps match is left alone; an interrupted build is started over, never used.
# Needs root. Usage: tools/aarch64/rootfs.sh   (SPRINTIFACE_AARCH64_* as in common.sh)
set -euo pipefail
. "$(dirname "$0")/common.sh"

host_checks
ensure_host_tools

stamp="$SUITE $DEBIAN_PACKAGES"
if [ ! -f "$ROOT/.sprintiface-rootfs" ] || [ "$(cat "$ROOT/.sprintiface-rootfs")" != "$stamp" ]; then
    mirror="$(debian_mirror)"
    partial="$ROOT.partial"
    rm -rf "$partial"
    mkdir -p "$(dirname "$ROOT")"
    say "debootstrap $SUITE arm64 into $partial (first stage, from $mirror)"
    start=$SECONDS
    debootstrap --arch=arm64 --variant=minbase --foreign --include="$DEBIAN_PACKAGES" \
        "$SUITE" "$partial" "$mirror" > "$partial.log" 2>&1 \
        || { tail -20 "$partial.log" >&2; die "debootstrap first stage failed (log: $partial.log)"; }
    say "second stage under qemu-aarch64"
    chroot "$partial" /debootstrap/debootstrap --second-stage >> "$partial.log" 2>&1 \
        || { tail -20 "$partial.log" >&2; die "debootstrap second stage failed (log: $partial.log)"; }
    echo "$stamp" > "$partial/.sprintiface-rootfs"
    rm -rf "$ROOT"
    mv "$partial" "$ROOT"
    rm -f "$partial.log"
    say "root built in $((SECONDS - start)) s"
fi

# What the root needs from the host, refreshed on every run: DNS, and the CA bundle
# this host's pip trusts (a proxy's CA may be in it).
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    cp -L /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/host-ca.crt"
else
    cp -L "$ROOT/etc/ssl/certs/ca-certificates.crt" "$ROOT/etc/ssl/certs/host-ca.crt"
fi

write_cpuinfo

want="$(sha256sum < "$AARCH64_DIR/requirements.txt" | cut -d' ' -f1)"
if [ ! -f "$ROOT$VENV/.requirements" ] || [ "$(cat "$ROOT$VENV/.requirements")" != "$want" ]; then
    say "venv $VENV in the root, with tools/aarch64/requirements.txt (aarch64 wheels)"
    start=$SECONDS
    # An existing venv is brought to the pins (pip changes only what differs).
    cp "$AARCH64_DIR/requirements.txt" "$ROOT/tmp-requirements.txt"
    in_root /bin/sh -c "{ [ -x $VENV/bin/python ] || python3 -m venv $VENV; } \
        && $VENV/bin/pip install -q --only-binary=:all: -r /tmp-requirements.txt" \
        || die "pip install in the root failed"
    rm -f "$ROOT/tmp-requirements.txt"
    echo "$want" > "$ROOT$VENV/.requirements"
    say "venv built in $((SECONDS - start)) s"
fi
in_root python3 -c 'import platform, sys; print("aarch64 root:", platform.machine(), "Python", sys.version.split()[0])'
