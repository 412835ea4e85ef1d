#!/bin/sh
# Build llama.cpp's own `llama-server` and `rpc-server` from the llama.cpp that the
# installed llama-cpp-python ships (its sdist's vendor/llama.cpp), in one cmake
# configure with the RPC backend on. Binaries land in
#   ${EDGE_HOME:-~/.cache/edge}/llama.cpp-<llama-cpp-python version>/bin/
# Usage: scripts/build_llama_tools.sh [path/to/llama_cpp_python-<ver>.tar.gz]
# Environment: PYTHON (default .venv/bin/python or python3), JOBS (default nproc),
#              LLAMA_SDIST (the sdist, instead of `pip download`), LLAMA_VERSION.
set -eu

PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
VER=${LLAMA_VERSION:-$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')}
HOME_DIR=${EDGE_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/edge}
DEST="$HOME_DIR/llama.cpp-$VER"
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
SDIST=${1:-${LLAMA_SDIST:-}}

if [ -x "$DEST/bin/llama-server" ] && [ -x "$DEST/bin/rpc-server" ]; then
  echo "llama-server and rpc-server $VER already built in $DEST/bin"
  exit 0
fi
command -v cmake >/dev/null || { echo "cmake is missing: install it (apt-get install cmake) and re-run" >&2; exit 1; }

mkdir -p "$DEST"
if [ -z "$SDIST" ]; then
  for f in "$HOME_DIR/src/llama_cpp_python-$VER.tar.gz" "$DEST/llama_cpp_python-$VER.tar.gz"; do
    [ -f "$f" ] && SDIST=$f && break
  done
fi
if [ -z "$SDIST" ]; then
  echo "downloading the llama-cpp-python $VER sdist"
  "$PYTHON" -m pip download -q --no-deps --no-binary :all: -d "$DEST" "llama-cpp-python==$VER"
  SDIST="$DEST/llama_cpp_python-$VER.tar.gz"
fi

if [ ! -f "$DEST/src/CMakeLists.txt" ]; then
  echo "unpacking vendor/llama.cpp from $SDIST"
  rm -rf "$DEST/src" "$DEST/unpack"
  mkdir -p "$DEST/unpack"
  tar -xzf "$SDIST" -C "$DEST/unpack" --wildcards "*/vendor/llama.cpp/*"
  mv "$DEST"/unpack/*/vendor/llama.cpp "$DEST/src"
  rm -rf "$DEST/unpack"
fi

# Same optimisation defaults as the llama-cpp-python build (GGML_NATIVE on, Release);
# static so the binaries do not pick up another libllama at run time; no network
# features (curl, OpenSSL, prebuilt web UI).
cmake -S "$DEST/src" -B "$DEST/build" -DCMAKE_BUILD_TYPE=Release \
  -DGGML_RPC=ON -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
  ${CMAKE_ARGS_EXTRA:-}
cmake --build "$DEST/build" --config Release -j "$JOBS" --target llama-server ggml-rpc-server

mkdir -p "$DEST/bin"
cp "$DEST/build/bin/llama-server" "$DEST/bin/llama-server"
cp "$DEST/build/bin/ggml-rpc-server" "$DEST/bin/rpc-server"
echo "built $DEST/bin/llama-server and $DEST/bin/rpc-server"
