# shellcheck shell=bash
# Shared settings for scripts/llamacpp/*.sh. Sourced, not executed.
# Every path can be overridden from the environment.

LLAMACPP_SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LLAMACPP_REPO_ROOT="$(cd "$LLAMACPP_SCRIPT_DIR/../.." && pwd)"

# Versions verified together (see README.md).
LLAMA_CPP_PYTHON_VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
GGUF_VERSION="${GGUF_VERSION:-0.19.0}"
NUMPY_VERSION="${NUMPY_VERSION:-2.3.5}"

LLAMACPP_PYTHON="${LLAMACPP_PYTHON:-python3}"
LLAMACPP_VENV="${CLUB_LLAMACPP_VENV:-$LLAMACPP_REPO_ROOT/.venv-llamacpp}"
LLAMACPP_CACHE="${CLUB_LLAMACPP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/inference-club}"
LLAMACPP_WHEEL_DIR="$LLAMACPP_CACHE/wheels"

# The model file name carries a hash of the generator, so editing
# make_tiny_model.py yields a new file instead of a stale cached one.
_llamacpp_gen_hash="$(sha256sum "$LLAMACPP_SCRIPT_DIR/make_tiny_model.py" | cut -c1-12)"
LLAMACPP_MODEL="${CLUB_LLAMACPP_MODEL:-$LLAMACPP_CACHE/models/tiny-llama-$_llamacpp_gen_hash.gguf}"
# The same weights, saying that embeddings pool by mean (make_tiny_model.py --pooling mean).
LLAMACPP_EMBED_MODEL="${CLUB_LLAMACPP_EMBED_MODEL:-$LLAMACPP_CACHE/models/tiny-llama-embed-$_llamacpp_gen_hash.gguf}"
unset _llamacpp_gen_hash

# Runtime state of a started server (pid file, log).
LLAMACPP_RUN_DIR="${CLUB_LLAMACPP_RUN_DIR:-$LLAMACPP_REPO_ROOT/target/llamacpp}"
LLAMACPP_PID_FILE="$LLAMACPP_RUN_DIR/server.pid"
LLAMACPP_LOG_FILE="$LLAMACPP_RUN_DIR/server.log"

# The ids the server reports in /v1/models and in responses: the model for generation, and
# the model for /v1/embeddings (loaded with `embedding: true`).
LLAMACPP_MODEL_ALIAS="${CLUB_LLAMACPP_MODEL_ALIAS:-tiny-llama}"
LLAMACPP_EMBED_MODEL_ALIAS="${CLUB_LLAMACPP_EMBED_MODEL_ALIAS:-tiny-llama-embed}"
