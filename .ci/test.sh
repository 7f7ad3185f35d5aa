#!/usr/bin/env bash
# The Rust test suite (README's test command starts with it): every test target of the
# workspace, as `cargo test --workspace` runs them, with the GPU suite (tests/gpu) in two
# processes at once.
#
# Why two processes: the GPU suite's time is compiling kernels on Mesa's CPU drivers
# (llvmpipe compiles each kernel on its first dispatch, ~90% of a cold run), and one process
# compiles about one kernel at a time (measured: 1.4 of 2 cores busy whatever the test
# threads or devices per adapter); two processes, each running half of the tests
# (WGPU_ATTENTION_TEST_SHARD=i/2, by the test's name), keep both cores compiling: the
# attention:: tests cold took 543 s in two shards against 695 s in one process. The
# other targets (unit tests, the shader test, the attn CLI tests, doctests) run after.
#
# Environment as for `cargo test` (WGPU_ATTENTION_REQUIRE_ADAPTER, ..._REQUIRE_BACKENDS).
# TEST_SHARDS=n runs the GPU suite in n processes (default 2; 1 = one process).
set -euo pipefail
cd "$(dirname "$0")/.."

shards=${TEST_SHARDS:-2}
case "$shards" in ''|*[!0-9]*|0) echo "test.sh: TEST_SHARDS must be a positive integer" >&2; exit 2 ;; esac

# Build every target once (tests, examples the GPU tests run, the attn binary).
cargo test --workspace --no-run

# The GPU suite's executable from cargo's JSON (with --workspace, so the features are
# those of the build above and nothing is rebuilt; -p unifies them differently).
gpu_bin=$(cargo test --workspace --test gpu --no-run --message-format=json \
  | grep '"reason":"compiler-artifact"' \
  | grep '"kind":\["test"\]' | grep '"name":"gpu"' \
  | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
[ -n "$gpu_bin" ] && [ -x "$gpu_bin" ] || { echo "test.sh: cargo did not report the gpu test binary" >&2; exit 1; }

pids=()
for ((i = 0; i < shards; i++)); do
  # A subshell with pipefail: its status is the test binary's, not the prefixer's.
  (set -o pipefail; WGPU_ATTENTION_TEST_SHARD="$i/$shards" "$gpu_bin" 2>&1 | sed -u "s|^|[gpu $i/$shards] |") &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do
  wait "$p" || status=1
done
if [ "$status" != 0 ]; then
  echo "test.sh: the GPU suite failed (see the [gpu i/$shards] lines above)" >&2
fi

# Every other target: unit tests (library, attn), the shader test, the CLI tests, doctests.
cargo test --workspace --lib --bins --test shaders --test cli
cargo test --workspace --doc
exit "$status"
