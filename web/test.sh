#!/usr/bin/env bash
# Browser test of wgpu-attention: builds the library + web/ demo for wasm32-unknown-unknown,
# runs wasm-bindgen into web/www/pkg, serves web/www on 127.0.0.1 and drives headless
# Chromium (WebGPU; SwiftShader on a machine without a GPU) with puppeteer-core.
#
# Fails (non-zero exit) unless the page found a WebGPU adapter, the attention it runs on load
# passed against the f64 CPU reference (relative L2 <= 1e-5 for O, weights and LSE), the f16 and
# bf16 runs passed (O within its storage rounding), every
# case of the in-page validation matrix passed, and the heatmap canvas shows the weights.
#
# From a fresh Debian 12 machine as root: installs what is missing (apt packages, a
# wasm-bindgen-cli of the version in web/Cargo.lock, puppeteer-core via `npm ci`).
# Cold (apt packages present): ~4 min on 2 cores (wasm-bindgen-cli build ~3 min, once; wasm
# build ~1-1.3 min), plus apt downloads on a fresh machine. Warm: ~4 s.
#
# `web/test.sh --serve [PORT]` builds the same way, then serves the demo on
# http://127.0.0.1:PORT/ (default 8000) in the foreground instead of testing it.
#
# env: SCREENSHOT=path (default web/screenshot.png)  SKIP_APT=1 (never call apt-get)
#      TEST_TIMEOUT_MS (browser, default 300000)  EXTRA_CHROME_FLAGS  CHROME_FLAGS  CHROMIUM
#      (see run-browser-test.mjs)
set -euo pipefail

SERVE_PORT=
if [ "${1:-}" = "--serve" ]; then
  SERVE_PORT=${2:-8000}
  case "$SERVE_PORT" in *[!0-9]*|'') echo "test.sh: --serve takes a port number, got '$SERVE_PORT'" >&2; exit 2 ;; esac
elif [ $# -gt 0 ]; then
  echo "usage: web/test.sh [--serve [PORT]]" >&2; exit 2
fi

WEB=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SCREENSHOT=${SCREENSHOT:-$WEB/screenshot.png}
case "$SCREENSHOT" in /*) ;; *) SCREENSHOT="$PWD/$SCREENSHOT" ;; esac
export PATH="$HOME/.cargo/bin:$PATH"

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1fs", b - a }'; }
step() { echo "==> $*"; }
die() { echo "test.sh: FAILED: $*" >&2; exit 1; }
T_ALL=$(now)

# --- 1. Debian packages ---------------------------------------------------------------------
# rustc-web, cargo-web, rust-web-src: Debian's newer Rust + std sources. The rustup toolchain has
#   no wasm32 std and none can be downloaded here, so std is built with -Zbuild-std.
# lld-19: wasm-ld.  chromium: the browser (bundles SwiftShader).  nodejs/npm: puppeteer-core.
# gcc, libc6-dev: host linker for build scripts and `cargo install wasm-bindgen-cli`.
PKGS=(rustc-web cargo-web rust-web-src lld-19 chromium python3 ca-certificates gcc libc6-dev)
command -v node >/dev/null || PKGS+=(nodejs)
command -v npm >/dev/null || PKGS+=(npm)
MISSING=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || MISSING+=("$p")
done
if [ ${#MISSING[@]} -gt 0 ]; then
  [ "${SKIP_APT:-0}" = 1 ] && die "missing Debian packages (SKIP_APT=1): ${MISSING[*]}"
  [ "$(id -u)" = 0 ] || die "missing Debian packages and not root: apt-get install ${MISSING[*]}"
  step "apt-get install ${MISSING[*]}"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${MISSING[@]}"
fi
for f in /usr/bin/rustc /usr/bin/cargo /usr/lib/llvm-19/bin/wasm-ld /usr/bin/chromium; do
  [ -x "$f" ] || die "$f is missing after installing packages"
done

# Debian's toolchain for everything here. RUSTC/RUSTDOC must be set, or /usr/bin/cargo runs the
# rustup `rustc` found first on PATH. RUSTC_BOOTSTRAP=1 unlocks -Zbuild-std on a stable rustc.
DEB_RUST=(RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc)

# --- 2. the wasm build (own target dir web/target; lockfile web/Cargo.lock) -----------------
cd "$WEB"
T=$(now)
step "cargo build --release --target wasm32-unknown-unknown (web/)"
env "${DEB_RUST[@]}" RUSTC_BOOTSTRAP=1 \
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=/usr/lib/llvm-19/bin/wasm-ld \
    /usr/bin/cargo build --release --target wasm32-unknown-unknown \
    --target-dir "$WEB/target" -Zbuild-std=std,panic_abort \
  || die "wasm build failed"
T_BUILD=$(secs "$T" "$(now)")
WASM=$WEB/target/wasm32-unknown-unknown/release/wgpu_attention_web.wasm

# --- 3. wasm-bindgen (the CLI must be exactly the wasm-bindgen crate version in Cargo.lock) --
WB_VER=$(awk '$0 == "name = \"wasm-bindgen\"" { getline; gsub(/"/, "", $3); print $3 }' Cargo.lock)
[ -n "$WB_VER" ] || die "no wasm-bindgen in web/Cargo.lock"
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$WB_VER" ]; then
  T=$(now)
  step "cargo install wasm-bindgen-cli $WB_VER (once, a few minutes)"
  # --locked can fail when the CLI's own lockfile pins a crate version the registry no longer
  # serves; retry unlocked then.
  env "${DEB_RUST[@]}" /usr/bin/cargo install wasm-bindgen-cli --version "$WB_VER" --locked \
    || env "${DEB_RUST[@]}" /usr/bin/cargo install wasm-bindgen-cli --version "$WB_VER" \
    || die "could not install wasm-bindgen-cli $WB_VER"
  hash -r
  echo "wasm-bindgen-cli $WB_VER installed in $(secs "$T" "$(now)")"
fi
T=$(now)
PKG=$WEB/www/pkg
if [ ! -f "$PKG/wgpu_attention_web_bg.wasm" ] || [ "$WASM" -nt "$PKG/wgpu_attention_web_bg.wasm" ] \
   || [ "$(cat "$PKG/.wasm-bindgen-version" 2>/dev/null)" != "$WB_VER" ]; then
  step "wasm-bindgen --target web -> www/pkg"
  rm -rf "$PKG"
  wasm-bindgen --target web --no-typescript --out-dir "$PKG" "$WASM" || die "wasm-bindgen failed"
  echo "$WB_VER" > "$PKG/.wasm-bindgen-version"
fi
T_BINDGEN=$(secs "$T" "$(now)")

if [ -n "$SERVE_PORT" ]; then
  step "serving $WEB/www on http://127.0.0.1:$SERVE_PORT/ (Ctrl-C stops; open it in a browser with WebGPU)"
  exec python3 -m http.server "$SERVE_PORT" --bind 127.0.0.1 --directory "$WEB/www"
fi

# --- 4. puppeteer-core (from the committed package-lock.json; never downloads a browser) ----
if [ ! -f node_modules/puppeteer-core/package.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  step "npm ci (puppeteer-core)"
  npm ci --no-audit --no-fund || die "npm ci failed"
fi

# --- 5. serve web/www on 127.0.0.1 (WebGPU needs a secure context: 127.0.0.1 is one) -------
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
HTTP_LOG=$(mktemp)
python3 -m http.server "$PORT" --bind 127.0.0.1 --directory "$WEB/www" >"$HTTP_LOG" 2>&1 &
HTTP_PID=$!
cleanup() { kill "$HTTP_PID" 2>/dev/null || true; wait "$HTTP_PID" 2>/dev/null || true; rm -f "$HTTP_LOG"; }
trap cleanup EXIT
URL="http://127.0.0.1:$PORT/index.html"
for _ in $(seq 100); do
  python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "$URL" 2>/dev/null && break
  kill -0 "$HTTP_PID" 2>/dev/null || { cat "$HTTP_LOG"; die "http.server on port $PORT exited"; }
  sleep 0.1
done

# --- 6. headless Chromium --------------------------------------------------------------------
T=$(now)
step "headless Chromium: $URL"
set +e
node "$WEB/run-browser-test.mjs" "$URL" "$SCREENSHOT"
RC=$?
set -e
T_BROWSER=$(secs "$T" "$(now)")

echo "TIMINGS wasm-build=$T_BUILD wasm-bindgen=$T_BINDGEN browser-test=$T_BROWSER total=$(secs "$T_ALL" "$(now)")"
case $RC in
  0) echo "test.sh: PASSED (screenshot: $SCREENSHOT)" ;;
  1) echo "test.sh: FAILED: the page's checks failed (see FAIL lines above; screenshot: $SCREENSHOT)" >&2 ;;
  *) echo "test.sh: FAILED: the browser runner could not complete (rc=$RC)" >&2 ;;
esac
exit $RC
