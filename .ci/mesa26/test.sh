#!/usr/bin/env bash
# CI's second driver generation: the GPU tests that Mesa 26 adds over the host's Mesa
# 22.3.6, run inside the Mesa 26 root (setup.sh) with the host-built test binary.
# Not the whole suite (the host run covers that on 22.3.6): the cooperative-matrix
# kernel (`coop::`, which needs lavapipe 26's VK_KHR_cooperative_matrix; required,
# so a root without it fails) and the validation matrix (`validation::`) as a
# smoke of every kernel on the newer compiler (LLVM 19), on Vulkan and GL adapters
# (both required). Measured 2026-12-01 on 2 cores shared with other builds (load 3-5),
# cold Mesa shader cache: 5-6 min of tests, nearly all the validation matrix (which took
# as long on the host's Mesa 22.3.6 at that load: 301 s against 323 s); 17 s with the
# shader cache warm; setup.sh took 84 s on a fresh root.
#
# Needs root (setup.sh debootstraps; run.sh chroots and bind-mounts). Builds the root
# if absent (MESA26_ROOT, default /opt/mesa26-root). WGPU_ATTENTION_SKIP_MESA26=1
# skips this step with a SKIPPED line.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=.ci/mesa26
root=${MESA26_ROOT:-/opt/mesa26-root}
export MESA26_ROOT=$root

if [ "${WGPU_ATTENTION_SKIP_MESA26:-0}" != 0 ]; then
    echo "==================================================================="
    echo "SKIPPED the Mesa 26 step (.ci/mesa26/test.sh): WGPU_ATTENTION_SKIP_MESA26 is set;"
    echo "the coop:: tests (cooperative matrices) did not run on any driver"
    echo "==================================================================="
    exit 0
fi
fail() {
    echo "mesa26/test.sh: $*" >&2
    echo "  (to skip this step: WGPU_ATTENTION_SKIP_MESA26=1)" >&2
    exit 1
}
if [ "$(id -u)" != 0 ]; then
    if [ -x "$root/bin/sh" ]; then
        fail "needs root: run.sh chroots into $root and bind-mounts the work tree there (rerun as root)"
    fi
    fail "no Mesa 26 root at $root, and building one needs root: run 'sudo bash $here/setup.sh $root' once (~2 min, ~750 MB), then this script as root"
fi

t0=$SECONDS
# Idempotent: builds the root if absent, completes an old one, ~1 s when ready.
bash "$here/setup.sh" "$root"
t_setup=$((SECONDS - t0))

t0=$SECONDS
# The gpu test binary built by `cargo test --workspace` (the same features, so
# nothing is rebuilt; `-p wgpu-attention` unifies features differently and
# rebuilt the whole graph, ~14 min in a clean clone): its path from cargo's JSON.
bin=$(cargo test --workspace --test gpu --no-run --message-format=json \
    | grep '"reason":"compiler-artifact"' \
    | grep '"kind":\["test"\]' | grep '"name":"gpu"' \
    | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
[ -n "$bin" ] && [ -x "$bin" ] || fail "cargo did not report the gpu test binary"
t_build=$((SECONDS - t0))

# run.sh mounts the git work tree; a target dir outside it (CARGO_TARGET_DIR) too.
top=$(git rev-parse --show-toplevel 2>/dev/null || pwd -P)
top=$(cd "$top" && pwd -P)
bindir=$(cd "$(dirname "$bin")" && pwd -P)
case "$bindir/" in
    "$top"/*) ;;
    *) export MESA26_MOUNTS="${MESA26_MOUNTS:+$MESA26_MOUNTS:}$bindir" ;;
esac
# Unmount afterwards what run.sh mounts for this run (a bind mount left in the root
# would put the work tree under anything that later deletes the root).
new_mounts=()
IFS=: read -r -a extra <<< "${MESA26_MOUNTS:-}"
for m in "$top" "${extra[@]}"; do
    [ -n "$m" ] && [ -d "$m" ] || continue
    m=$(cd "$m" && pwd -P)
    mountpoint -q "$root$m" 2>/dev/null || new_mounts+=("$root$m")
done
cleanup() {
    local i
    for ((i = ${#new_mounts[@]} - 1; i >= 0; i--)); do
        mountpoint -q "${new_mounts[i]}" && umount "${new_mounts[i]}" || true
    done
}
trap cleanup EXIT

# GL through EGL wants a runtime dir that exists inside the root.
xdg=/tmp/wgpu-attention-xdg
mkdir -p "$root$xdg"
chmod 700 "$root$xdg"

filters=(coop:: validation::)
echo "Mesa 26 step: ${bin#"$top"/} ${filters[*]} in $root"
tests=$("$bin" --list "${filters[@]}" 2>/dev/null | sed -n 's/: test$//p')
[ -n "$tests" ] || fail "no tests match ${filters[*]} in $bin"
sed 's/^/  will run: /' <<< "$tests"
t0=$SECONDS
# --nocapture: the adapter lines and the coop matrix's error summary show;
# one thread: the tests take turns on the one Vulkan device anyway. Each line
# gets the seconds since the start (pipefail keeps the binary's exit status).
env XDG_RUNTIME_DIR="$xdg" \
    WGPU_ATTENTION_REQUIRE_ADAPTER=1 \
    WGPU_ATTENTION_REQUIRE_BACKENDS=vulkan,gl \
    WGPU_ATTENTION_REQUIRE_COOP=1 \
    bash "$here/run.sh" "$bin" "${filters[@]}" --test-threads=1 --nocapture 2>&1 |
    while IFS= read -r line; do printf '[%4d s] %s\n' $((SECONDS - t0)) "$line"; done ||
    fail "the Mesa 26 tests failed after $((SECONDS - t0)) s (${filters[*]} in $root; output above)"
t_tests=$((SECONDS - t0))
echo "Mesa 26 step passed: setup ${t_setup} s, build ${t_build} s, tests ${t_tests} s (${filters[*]})"
