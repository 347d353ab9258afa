# Shared by tools/aarch64/*.sh (sourced, not run): where the arm64 root lives and how to
# enter it. Nothing here is kept in the repository: the root is built on first use.
#
#   SPRINTIFACE_AARCH64_ROOT    the arm64 Debian root (default /work/aarch64-root, outside the repo)
#   SPRINTIFACE_AARCH64_SUITE   its Debian suite (default bookworm: Python 3.11)
#   SPRINTIFACE_AARCH64_MIRROR  the Debian mirror (default: the one this host's apt uses for SUITE)

AARCH64_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$AARCH64_DIR/../.." && pwd)"
ROOT="${SPRINTIFACE_AARCH64_ROOT:-/work/aarch64-root}"
SUITE="${SPRINTIFACE_AARCH64_SUITE:-bookworm}"
VENV=/opt/sprintiface-venv          # inside the root
# What the root is built from: a change here (or in requirements.txt) rebuilds what depends on it.
DEBIAN_PACKAGES="python3,python3-venv,python3-dev,gcc,libc6-dev,binutils,ca-certificates"

die() { echo "aarch64: $*" >&2; exit 1; }
say() { echo "aarch64: $*" >&2; }

host_checks() {
    [ "$(uname -s)" = Linux ] || die "needs Linux (qemu-user and binfmt_misc)"
    [ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, mounts in a private namespace)"
    case "$(uname -m)" in
        x86_64) ;;
        aarch64) die "this machine is aarch64: build and test natively (pip install '.[test]' && pytest)" ;;
        *) die "written for an x86-64 host, this is $(uname -m)" ;;
    esac
}

# qemu-user-static registers qemu-aarch64 with binfmt_misc's F flag: the kernel holds the
# emulator open, so binaries inside the chroot run without a copy of qemu there.
ensure_host_tools() {
    local missing=()
    command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
    command -v update-binfmts >/dev/null || missing+=(binfmt-support)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v unshare >/dev/null || missing+=(util-linux)
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing ${missing[*]}"
        command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
        apt-get update -q >/dev/null || die "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null \
            || die "apt-get install ${missing[*]} failed"
    fi
    if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || die "cannot mount binfmt_misc"
    fi
    if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        update-binfmts --enable qemu-aarch64 || die "cannot register qemu-aarch64 with binfmt_misc"
    fi
    grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 || die "binfmt qemu-aarch64 is disabled"
    grep -q '^flags:.*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 \
        || die "binfmt qemu-aarch64 lacks the F flag (register it with Debian's qemu-user-static)"
}

debian_mirror() {
    if [ -n "${SPRINTIFACE_AARCH64_MIRROR:-}" ]; then
        echo "$SPRINTIFACE_AARCH64_MIRROR"
        return
    fi
    local site
    site="$(apt-get indextargets --format '$(SITE) $(CODENAME) $(COMPONENT)' 'Identifier: Packages' 2>/dev/null \
        | awk -v suite="$SUITE" '$2 == suite && $3 == "main" {print $1; exit}')"
    [ -n "$site" ] || die "no Debian mirror for $SUITE in this host's apt sources: set SPRINTIFACE_AARCH64_MIRROR"
    echo "$site"
}

# ONNX Runtime reads /proc/cpuinfo at import (its cpuinfo library) and qemu-user 7.2 passes
# the host's through: on an x86 one, `import onnxruntime` segfaults in the arm64 root. The
# root sees this one instead, of an aarch64 CPU (Neoverse N1's fields, one per host CPU).
write_cpuinfo() {
    local i
    for ((i = 0; i < $(nproc); i++)); do
        printf 'processor\t: %d\nBogoMIPS\t: 50.00\n' "$i"
        printf 'Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\n'
        printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: 0xd0c\nCPU revision\t: 1\n\n'
    done > "$ROOT/etc/sprintiface-cpuinfo"
}

# in_root COMMAND...: run COMMAND in the arm64 root, with /proc (and the aarch64 cpuinfo
# above), /sys, /dev and /tmp mounted in a private mount namespace (they go away with it,
# whatever happens).
in_root() {
    [ -f "$ROOT/etc/sprintiface-cpuinfo" ] || write_cpuinfo
    unshare --mount --propagation private -- /bin/bash -c '
        set -e
        root="$1"; shift
        mount -t proc proc "$root/proc"
        mount --bind "$root/etc/sprintiface-cpuinfo" "$root/proc/cpuinfo"
        mount --rbind /sys "$root/sys"
        mount --rbind /dev "$root/dev"
        mount -t tmpfs tmpfs "$root/tmp"
        exec chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 \
            PATH='"$VENV"'/bin:/usr/local/bin:/usr/bin:/bin \
            PIP_CERT=/etc/ssl/certs/host-ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1 \
            PIP_DEFAULT_TIMEOUT=180 "$@"
    ' in_root "$ROOT" "$@"
}
