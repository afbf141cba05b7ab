#!/usr/bin/env python3
"""Write a tiny llama-architecture GGUF with random weights.

Usage: make_tiny_model.py OUTPUT.gguf [--pooling mean]

With `--pooling mean` the file also says that embeddings pool by averaging the tokens
(GGUF key `llama.pooling_type`), so that a server started with `embedding: true` answers one
vector per input instead of one per token. The weights are the same either way.

The model is for wire-level tests of an inference server only: 2 layers,
n_embd 64, 4 heads, a ~700-token SentencePiece-style ("llama") vocabulary
with byte fallback, ChatML control tokens and a ChatML chat template.
Weights come from a fixed seed, so the file is byte-for-byte reproducible.
Its output is gibberish by design.

Needs the PyPI packages `gguf` and `numpy`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import gguf

SEED = 20240611
N_LAYER = 2
N_EMBD = 64
N_HEAD = 4
N_HEAD_KV = 4
N_FF = 768
N_CTX_TRAIN = 2048

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPACE = "\u2581"  # SentencePiece's word-boundary marker

WORDS = """
the of and to in is you that it he was for on are as with his they at be this
have from or one had by word but not what all were we when your can said there
use an each which she do how their if will up other about out many then them
these so some her would make like him into time has look two more write go see
number no way could people my than first water been call who oil its now find
long down day did get come made may part hello world model token test stream
chat server client engine request response reply answer question small tiny
random llama inference club rust yes ok done stop start end good bad new old
""".split()

SUBWORDS = """
ing ed er es ly tion ment ness able al an ar at en in on or re st th he ou it
is to of nd ha ve le se ur as ro co ri ne de me ll ea ch sh wh qu ck ng
""".split()


def build_vocab() -> tuple[list[str], list[float], list[int]]:
    T = gguf.TokenType
    tokens: list[str] = []
    scores: list[float] = []
    types: list[int] = []

    def add(piece: str, score: float, ttype: int) -> None:
        if piece in tokens:
            return
        tokens.append(piece)
        scores.append(score)
        types.append(int(ttype))

    add("<unk>", 0.0, T.UNKNOWN)
    add("<s>", 0.0, T.CONTROL)
    add("</s>", 0.0, T.CONTROL)
    for b in range(256):
        add(f"<0x{b:02X}>", 0.0, T.BYTE)
    add("<|im_start|>", 0.0, T.CONTROL)
    add("<|im_end|>", 0.0, T.CONTROL)

    # Ordinary pieces. SentencePiece merges the highest-scoring pair first,
    # so longer pieces get higher (less negative) scores.
    normal: list[str] = [SPACE]
    chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'\":;-()"
    normal += list(chars)
    normal += [SPACE + c for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"]
    normal += SUBWORDS
    normal += [SPACE + w for w in WORDS]
    normal += [SPACE + w.capitalize() for w in WORDS[:60]]
    normal += WORDS[:80]
    for i, piece in enumerate(normal):
        add(piece, -1000.0 + 10.0 * len(piece) - i * 0.001, T.NORMAL)
    return tokens, scores, types


def main() -> int:
    args = sys.argv[1:]
    pooling = None
    if len(args) == 3 and args[1] == "--pooling" and args[2] == "mean":
        pooling = gguf.PoolingType.MEAN
        args = args[:1]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(args[0])
    out.parent.mkdir(parents=True, exist_ok=True)

    tokens, scores, types = build_vocab()
    n_vocab = len(tokens)
    head_dim = N_EMBD // N_HEAD
    rng = np.random.default_rng(SEED)

    def rand(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    w = gguf.GGUFWriter(str(out), "llama")
    w.add_name("inference-club tiny random llama")
    w.add_context_length(N_CTX_TRAIN)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(n_vocab)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    if pooling is not None:
        w.add_pooling_type(pooling)

    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_eot_token_id(tokens.index("<|im_end|>"))
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)

    # numpy shapes are (rows, cols) = (out_features, in_features); the gguf
    # writer reverses them into ggml's ne order.
    w.add_tensor("token_embd.weight", rand(n_vocab, N_EMBD))
    for i in range(N_LAYER):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", ones(N_EMBD))
        w.add_tensor(p + "attn_q.weight", rand(N_HEAD * head_dim, N_EMBD))
        w.add_tensor(p + "attn_k.weight", rand(N_HEAD_KV * head_dim, N_EMBD))
        w.add_tensor(p + "attn_v.weight", rand(N_HEAD_KV * head_dim, N_EMBD))
        w.add_tensor(p + "attn_output.weight", rand(N_EMBD, N_HEAD * head_dim))
        w.add_tensor(p + "ffn_norm.weight", ones(N_EMBD))
        w.add_tensor(p + "ffn_gate.weight", rand(N_FF, N_EMBD))
        w.add_tensor(p + "ffn_up.weight", rand(N_FF, N_EMBD))
        w.add_tensor(p + "ffn_down.weight", rand(N_EMBD, N_FF))
    w.add_tensor("output_norm.weight", ones(N_EMBD))
    w.add_tensor("output.weight", rand(n_vocab, N_EMBD))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {out} ({out.stat().st_size} bytes, vocab {n_vocab})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
