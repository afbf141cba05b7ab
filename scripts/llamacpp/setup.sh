#!/usr/bin/env bash
# Idempotent setup for the llama.cpp test engine:
#   1. Debian build tools, curl and python3-venv (only if missing; as root or with sudo; exit
#      status 3 if it cannot),
#   2. a venv with llama-cpp-python[server] (built from source once, then the
#      wheel is cached under $XDG_CACHE_HOME/inference-club/wheels), gguf, numpy,
#   3. the tiny random-weight GGUF model and its embedding twin (generated once, cached).
# Prints the model path as its last line.
set -euo pipefail

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# shellcheck source=../lib/apt.sh
source "$LLAMACPP_REPO_ROOT/scripts/lib/apt.sh"

log() { printf '[llamacpp setup] %s\n' "$*" >&2; }

# --- 1. build tools -------------------------------------------------------
missing_pkgs=()
if ! command -v cc >/dev/null 2>&1 || ! command -v c++ >/dev/null 2>&1 || ! command -v make >/dev/null 2>&1; then
    missing_pkgs+=(build-essential)
fi
command -v curl >/dev/null 2>&1 || missing_pkgs+=(curl) # used by start.sh
if ! "$LLAMACPP_PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    missing_pkgs+=(python3-venv)
fi
# (CMake and Ninja need no package: the build backend, scikit-build-core, fetches them from PyPI
# when the system has none.)
if ((${#missing_pkgs[@]})); then
    apt_install "the llama.cpp test server" "${missing_pkgs[@]}" || exit $?
fi

# --- 2. venv + packages ---------------------------------------------------
venv_py="$LLAMACPP_VENV/bin/python"
installed_ok() {
    [[ -x $venv_py ]] || return 1
    "$venv_py" - "$LLAMA_CPP_PYTHON_VERSION" "$GGUF_VERSION" <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version
assert version("llama_cpp_python") == sys.argv[1]
assert version("gguf") == sys.argv[2]
import llama_cpp, llama_cpp.server.app, gguf, numpy, uvicorn, sse_starlette  # noqa
PY
}

if installed_ok; then
    log "venv $LLAMACPP_VENV already complete (llama-cpp-python $LLAMA_CPP_PYTHON_VERSION)"
else
    if [[ ! -x $venv_py ]]; then
        log "creating venv $LLAMACPP_VENV"
        "$LLAMACPP_PYTHON" -m venv "$LLAMACPP_VENV"
    fi
    pip_() { "$venv_py" -m pip --disable-pip-version-check "$@"; }

    mkdir -p "$LLAMACPP_WHEEL_DIR"
    wheel="$(compgen -G "$LLAMACPP_WHEEL_DIR/llama_cpp_python-${LLAMA_CPP_PYTHON_VERSION}-*.whl" | head -n1 || true)"
    if [[ -z $wheel ]]; then
        log "building llama-cpp-python $LLAMA_CPP_PYTHON_VERSION from source (several minutes on 2 cores)"
        build_dir="$(mktemp -d "$LLAMACPP_WHEEL_DIR/.build.XXXXXX")"
        build_log="$LLAMACPP_WHEEL_DIR/build-$LLAMA_CPP_PYTHON_VERSION.log"
        export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
        if ! pip_ wheel --no-deps --no-cache-dir -v --wheel-dir "$build_dir" \
            "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" >"$build_log" 2>&1; then
            log "wheel build FAILED; last lines of $build_log:"
            tail -n 60 "$build_log" >&2
            rm -rf "$build_dir"
            exit 1
        fi
        built="$(compgen -G "$build_dir/llama_cpp_python-*.whl" | head -n1)"
        mv "$built" "$LLAMACPP_WHEEL_DIR/"
        rm -rf "$build_dir"
        wheel="$LLAMACPP_WHEEL_DIR/$(basename "$built")"
        log "cached wheel $wheel"
    else
        log "using cached wheel $wheel"
    fi

    log "installing packages into $LLAMACPP_VENV"
    pip_ install -q \
        -c "$LLAMACPP_SCRIPT_DIR/constraints.txt" \
        "${wheel}[server]" "gguf==$GGUF_VERSION" "numpy==$NUMPY_VERSION" >&2
    installed_ok || { log "installed packages do not import"; exit 1; }
fi

# --- 3. models -------------------------------------------------------------
# make_model PATH [ARGS...]: writes the model unless it is there.
make_model() {
    local path="$1"
    shift
    if [[ -s $path ]]; then
        log "model present: $path"
        return
    fi
    mkdir -p "$(dirname "$path")"
    local tmp_model="$path.tmp.$$"
    "$venv_py" "$LLAMACPP_SCRIPT_DIR/make_tiny_model.py" "$tmp_model" "$@" >&2
    mv "$tmp_model" "$path"
    log "model written: $path"
}
make_model "$LLAMACPP_EMBED_MODEL" --pooling mean
make_model "$LLAMACPP_MODEL"

echo "$LLAMACPP_MODEL"
