#!/bin/sh
# Rebuilds engine.wasm from engine.c (npm run build:wasm). Needs clang and wasm-ld
# (Debian: apt-get install clang lld). Compiling and linking are separate steps so that
# the clang driver does not run a wasm-opt it finds on PATH. The output is deterministic
# for a given clang: test/client/engine-wasm.test.ts rebuilds it and compares when the
# recorded toolchain (engine.toolchain) is the installed one.
set -eu
here=$(dirname "$0")
CLANG=${CLANG:-clang}
WASM_LD=${WASM_LD:-wasm-ld}
out=${1:-"$here/engine.wasm"}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$CLANG" --target=wasm32 -O3 -msimd128 -mbulk-memory -ffreestanding -fno-ident \
  -Wall -Wextra -Werror -Wno-unused-parameter \
  -c -o "$tmp/engine.o" "$here/engine.c"
"$WASM_LD" --no-entry --strip-all --export=__heap_base -z stack-size=65536 --stack-first \
  -o "$out" "$tmp/engine.o"
if [ -z "${1:-}" ]; then "$CLANG" --version | head -n 1 > "$here/engine.toolchain"; fi
