#!/usr/bin/env bash
# Build sprintiface for aarch64 and run its kernel and scorer tests under emulation
# (qemu-aarch64 through binfmt_misc, in an arm64 Debian root: tools/aarch64/rootfs.sh
# builds it on first use). The extension is compiled natively there, by the root's
# aarch64 gcc, from a copy of this work tree; then `sprintiface info`,
# tools/aarch64/check_build.py (kernels, NEON code, scores against float64) and pytest.
# Speed under emulation says nothing about an aarch64 CPU: nothing here times the kernel.
#
# Usage (as root): tools/aarch64/run_tests.sh [PYTEST ARGS...]
#   default PYTEST ARGS: tests/test_score_kernel.py tests/test_scorer.py
set -euo pipefail
. "$(dirname "$0")/common.sh"

host_checks
"$AARCH64_DIR/rootfs.sh"

[ $# -gt 0 ] || set -- tests/test_score_kernel.py tests/test_scorer.py

# A fresh copy of the work tree as it is on disk (tracked and untracked files git does not
# ignore; no build products), so a run tests uncommitted changes too.
say "copying $REPO into the root"
rm -rf "$ROOT/build"
mkdir -p "$ROOT/build/sprintiface"
if git -C "$REPO" rev-parse --show-toplevel >/dev/null 2>&1; then
    (cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
        | tar --null -T - --ignore-failed-read -cf - 2>/dev/null) | tar -xf - -C "$ROOT/build/sprintiface"
else  # an unpacked sdist
    tar -C "$REPO" --exclude=./build --exclude='*.so' --exclude=__pycache__ -cf - . \
        | tar -xf - -C "$ROOT/build/sprintiface"
fi

start=$SECONDS
say "building the extension under qemu-aarch64 (pip install --no-build-isolation .)"
in_root /bin/sh -c 'cd /build/sprintiface && pip install -q --no-build-isolation --no-deps . 2>&1' \
    || die "the aarch64 build failed"
say "built and installed in $((SECONDS - start)) s"

# From / so that the installed package is the one imported, not the source tree.
in_root /bin/sh -c 'cd / && sprintiface info && python /build/sprintiface/tools/aarch64/check_build.py' \
    || die "the aarch64 checks failed"

start=$SECONDS
say "pytest $* under qemu-aarch64"
status=0
in_root /bin/sh -c 'cd /build/sprintiface && exec pytest -q -p no:cacheprovider "$@"' pytest "$@" || status=$?
say "pytest took $((SECONDS - start)) s under emulation (exit $status)"
exit $status
