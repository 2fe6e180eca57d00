#!/usr/bin/env bash
# Build llama-cpp-python for the CPUs we ship to, then install it.
#
#   scripts/install-llama-cpp.sh PYTHON
#
# pip would compile llama.cpp with -march=native and cache the wheel by name
# and version alone, so a wheel built on (or for) another CPU is reused
# silently; one built on an AMX machine segfaulted in llama_decode. Instead we
# build it here, once per (version, flags), into a cache directory whose name
# carries both, and install exactly that wheel. make install and the
# Dockerfile both run this script, so the flags live in this one place.
#
# The default is x86-64-v3 (Haswell, 2013, and every x86 server since): AVX2,
# FMA, F16C, BMI2, and no AVX-512 or AMX, which not every CPU has. On other
# architectures ggml ignores these flags and builds its generic kernels.
# LLAMA_CMAKE_ARGS replaces them (for example "-DGGML_NATIVE=ON" for a
# machine that only ever runs what it built).
set -euo pipefail

python="${1:?usage: $0 PYTHON}"
here="$(cd "$(dirname "$0")/.." && pwd)"
# The pin in pyproject.toml, unless LLAMA_CPP_VERSION names it (the Dockerfile
# does, so that editing another dependency does not recompile llama.cpp).
version="${LLAMA_CPP_VERSION:-$(sed -n 's/.*"llama-cpp-python==\([^"]*\)".*/\1/p' "$here/pyproject.toml")}"
[ -n "$version" ] || { echo "llama-cpp-python's pin not found in pyproject.toml" >&2; exit 1; }

cmake_args="${LLAMA_CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_BMI2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AVX_VNNI=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF}"
key="$(printf '%s\n%s\n%s\n' "$version" "$cmake_args" "$(uname -m)" | sha256sum | cut -c1-16)"
cache="${LLAMA_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gptmini-graphql/wheels}"
wheels="$cache/llama-cpp-python-$version-$key"
marker="$("$python" -c 'import sys; print(sys.prefix)')/.llama-cpp-build"

if [ "$(cat "$marker" 2>/dev/null)" = "$key" ]; then
  exit 0  # this very build is installed already
fi

if ! ls "$wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  echo "Compiling llama-cpp-python $version (about 5 minutes on 2 cores) with"
  echo "  CMAKE_ARGS=$cmake_args"
  rm -rf "$wheels.partial"
  CMAKE_ARGS="$cmake_args" "$python" -m pip wheel --quiet --no-deps --no-cache-dir \
    --no-binary llama-cpp-python --wheel-dir "$wheels.partial" "llama-cpp-python==$version"
  printf '%s\n' "$cmake_args" >"$wheels.partial/CMAKE_ARGS"
  rm -rf "$wheels" && mv "$wheels.partial" "$wheels"
fi

# --force-reinstall: whatever llama-cpp-python was there (pip's cached native
# build, say) is replaced by ours.
"$python" -m pip install --quiet --no-deps --force-reinstall "$wheels"/llama_cpp_python-*.whl

# llama.cpp's own CMake install rules also put a second copy of its libraries
# (site-packages/lib, ~37 MB) and its headers (site-packages/include) beside
# the package; llama_cpp loads only its own copy, from llama_cpp/lib.
"$python" - <<'PY'
from importlib.metadata import distribution

for file in distribution("llama-cpp-python").files or ():
    if file.parts[0] in ("lib", "include"):
        file.locate().unlink(missing_ok=True)
PY
printf '%s\n' "$key" >"$marker"
