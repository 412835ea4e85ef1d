"""The ONNX Runtime backend: a decoder graph with KV cache, run by our own loop.

Runs two graph contracts, told apart by their inputs:
- edge's fused graph (converters/onnx_graph.py): input_ids, seqlens_k,
  total_sequence_length and past_key_values.N.key/value, with
  GroupQueryAttention appending to the cache in place. Past and present are
  bound to the same buffer, so a step copies no cache and a rewind only moves
  the length.
- optimum's `text-generation-with-past` export (any architecture optimum
  knows): input_ids, attention_mask, position_ids (when present),
  past_key_values.N.key/value in, present.N.key/value out. Two flat buffers
  per tensor take turns as "past" and "present" (the graph writes past+new
  into present, which becomes the next past); a contiguous prefix of a flat
  buffer is a valid (1, heads, length, head_dim) array.
Either way every input and output is bound to preallocated numpy memory (IO
binding), so a decode step allocates nothing, and cache buffers grow in
chunks up to the context length. Only onnxruntime, numpy and tokenizers are
used at run time.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import BadModelFile, ContextTooLong
from ..formats import ONNX
from ..hf_tokenizer import HFTokenizer
from . import base

_PAST = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")
_HINT = "Re-convert the model with `edge convert MODEL --to onnx`."
_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
          "tensor(int32)": np.int32, "tensor(bool)": np.bool_}
CHUNK = 256  # cache positions added per growth step


@dataclass
class Options(base.BaseOptions):
    """ONNX Runtime settings."""

    optimization: str = field(default="all", metadata={"help": "Graph optimisation level: disable, basic, extended or all."})
    inter_op_threads: int = field(default=1, metadata={"help": "Threads across independent graph nodes (1 is best for a decoder)."})


_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[-1] if text else type(exc).__name__)[:160]


class _Cache:
    """KV-cache memory for the graph's past/present tensors, `capacity` positions long."""

    def __init__(self, past: list[str], present: list[str], heads: int, head_dim: int, dtype, capacity: int):
        self.past, self.present = past, present
        self.h, self.d, self.dtype = heads, head_dim, dtype
        self.capacity, self.cur, self.bufs = 0, 0, []
        self.grow(capacity, 0)


class _SwapCache(_Cache):
    """optimum graphs: two flat buffers per cache tensor; `cur` holds the valid cache."""

    def grow(self, capacity: int, keep: int) -> None:
        """Reallocate to hold `capacity` positions, keeping the first `keep` valid ones."""
        per = self.h * self.d
        new = [[np.empty(capacity * per, self.dtype) for _ in self.past] for _ in range(2)]
        for t in range(len(self.past) if keep else 0):
            new[0][t][: keep * per] = self.bufs[self.cur][t][: keep * per]
        self.bufs, self.cur, self.capacity = new, 0, capacity

    def bind(self, b: "_Binder", past: int, total: int) -> None:
        src, dst = self.bufs[self.cur], self.bufs[1 - self.cur]
        for t, name in enumerate(self.past):
            b.input(name, src[t], (1, self.h, past, self.d))
        for t, name in enumerate(self.present):
            b.output(name, dst[t], (1, self.h, total, self.d))

    def ran(self) -> None:
        self.cur = 1 - self.cur

    def rewind(self, length: int, n: int) -> None:
        h, d = self.h, self.d
        src, dst = self.bufs[self.cur], self.bufs[1 - self.cur]
        for s, t in zip(src, dst):
            t[: n * h * d].reshape(h, n, d)[...] = s[: length * h * d].reshape(h, length, d)[:, :n, :]
        self.cur = 1 - self.cur


class _SharedCache(_Cache):
    """Fused graphs: one (1, heads, capacity, head_dim) buffer per tensor, bound as past and present."""

    def grow(self, capacity: int, keep: int) -> None:
        new = [np.empty((1, self.h, capacity, self.d), self.dtype) for _ in self.past]
        for old, buf in zip(self.bufs if keep else (), new):
            buf[:, :, :keep] = old[:, :, :keep]
        self.bufs, self.capacity, self._bound = new, capacity, None

    def bind(self, b: "_Binder", past: int, total: int) -> None:
        # A binding stays until replaced, and these buffers only change when they grow.
        if self._bound is b:
            return
        shape = (1, self.h, self.capacity, self.d)
        for buf, p, q in zip(self.bufs, self.past, self.present):
            b.input(p, buf, shape)
            b.output(q, buf, shape)
        self._bound = b

    def ran(self) -> None:
        pass

    def rewind(self, length: int, n: int) -> None:
        pass  # positions past the length are overwritten by the next append


class Backend(base.HFTokens, base.Backend):
    name = "onnx"
    format = ONNX
    Options = Options

    def __init__(self, artifact, load=None, options=None):
        super().__init__(artifact, load, options)
        import onnxruntime as ort

        lo, op = self.load_options, self.options
        path = Path(artifact.main_path)
        folder = Path(artifact.folder) if artifact.folder else path.parent
        if not path.is_file():
            raise BadModelFile(f"The ONNX model {path} is missing.", _HINT)
        if op.optimization not in _LEVELS:
            from ..errors import InvalidOption

            raise InvalidOption(f"Unknown optimization level '{op.optimization}'.", f"Choose one of: {', '.join(_LEVELS)}.")

        tok_path = artifact.file("tokenizer") or folder / "tokenizer.json"
        self.tok = HFTokenizer(tok_path, folder)
        cfg = _read_config(folder)

        so = ort.SessionOptions()
        so.intra_op_num_threads = int(lo.threads or 1)
        so.inter_op_num_threads = int(op.inter_op_threads)
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[op.optimization])
        so.log_severity_level = 3
        # We always run one sequence: fixing the batch dimension lets onnxruntime
        # fold shape arithmetic that depends on it.
        so.add_free_dimension_override_by_name("batch_size", 1)
        try:
            self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
            raise BadModelFile(f"{path} cannot be loaded by onnxruntime ({_first_line(exc)}).", _HINT) from exc

        self._read_signature(path, cfg)
        self._adopt_hf_files(self.tok, artifact, folder, cfg, path.name, _HINT)

        self._binding = _Binder(self.session)
        kind = _SharedCache if self._fused else _SwapCache
        self._cache = kind(self._past_names, self._present_names, self._kv_heads, self._head_dim, self._kv_dtype,
                           min(self.n_ctx, CHUNK))
        self._len = 0
        self._ids = np.zeros(self.n_ctx, np.int64)
        self._mask = np.ones(self.n_ctx, np.int64)
        self._pos = np.arange(self.n_ctx, dtype=np.int64)
        self._seqlens, self._total = np.zeros(1, np.int32), np.zeros((), np.int32)
        self._logits = np.empty((1, 1, self.n_vocab), self._logits_dtype)

    # -- graph facts ------------------------------------------------------------
    def _read_signature(self, path: Path, cfg: dict) -> None:
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name: o for o in self.session.get_outputs()}
        past = sorted((int(m.group(1)), m.group(2), n) for n in inputs if (m := _PAST.match(n)))
        if "input_ids" not in inputs or "logits" not in outputs:
            raise BadModelFile(f"{path.name} is not a text-generation graph (no input_ids/logits).", _HINT)
        if not past:
            raise BadModelFile(f"{path.name} was exported without a KV cache.",
                               "Export it with task text-generation-with-past (`edge convert MODEL --to onnx` does).")
        self._past_names = [n for _, _, n in past]
        self._present_names = [f"present.{i}.{kind}" for i, kind, _ in past]
        missing = [n for n in self._present_names if n not in outputs]
        if missing:
            raise BadModelFile(f"{path.name} lacks the cache output {missing[0]}.", _HINT)
        shape = inputs[self._past_names[0]].shape
        heads = shape[1] if isinstance(shape[1], int) else cfg.get("num_key_value_heads") or cfg.get("num_attention_heads")
        head_dim = shape[3] if isinstance(shape[3], int) else (
            cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"])
        self._kv_heads, self._head_dim = int(heads), int(head_dim)
        self._kv_dtype = _TYPES.get(inputs[self._past_names[0]].type, np.float32)
        self._logits_dtype = _TYPES.get(outputs["logits"].type, np.float32)
        vocab = outputs["logits"].shape[-1]
        self.n_vocab = int(vocab if isinstance(vocab, int) else cfg.get("vocab_size") or self.tok.vocab_size)
        self._has_mask = "attention_mask" in inputs
        self._has_pos = "position_ids" in inputs
        # Merged decoders (decoder_model_merged.onnx) switch branches on this flag.
        self._branch = "use_cache_branch" in inputs
        self._fused = "seqlens_k" in inputs and "total_sequence_length" in inputs

    # -- the forward pass ---------------------------------------------------------
    def _run(self, ids: Sequence[int]) -> np.ndarray:
        """Append ids to the cache; return their logits (n, vocab)."""
        n, past = len(ids), self._len
        total = past + n
        if total > self.n_ctx:
            raise ContextTooLong(f"{total} tokens do not fit the context of {self.n_ctx}.",
                                 "Shorten the prompt or raise the context length (--ctx).")
        c = self._cache
        if total > c.capacity:
            c.grow(min(self.n_ctx, max(total, c.capacity + CHUNK)), past)
        b = self._binding
        self._ids[:n] = ids
        b.input("input_ids", self._ids, (1, n))
        if self._has_mask:
            b.input("attention_mask", self._mask, (1, total))
        if self._has_pos:
            b.input("position_ids", self._pos[past:], (1, n))
        if self._branch:
            self._flag = np.array([past > 0])
            b.input("use_cache_branch", self._flag, (1,))
        if self._fused:
            self._seqlens[0], self._total[...] = total - 1, total
            b.input("seqlens_k", self._seqlens, (1,))
            b.input("total_sequence_length", self._total, ())
        c.bind(b, past, total)
        # Decode steps reuse one logits buffer; the loop consumes it before the next step.
        out = self._logits if n == 1 else np.empty((1, n, self.n_vocab), self._logits_dtype)
        b.output("logits", out, out.shape)
        b.run()
        c.ran()
        self._len = total
        return out[0]

    def _forward(self, ids: Sequence[int]) -> np.ndarray:
        step = max(1, int(self.load_options.batch_size))
        ids = list(ids)
        for i in range(0, len(ids), step):
            out = self._run(ids[i:i + step])
        last = out[-1]
        return last if last.dtype == np.float32 else last.astype(np.float32)

    def _rewind(self, n: int) -> int:
        if n >= self._len:
            return n
        self._cache.rewind(self._len, n)
        self._len = n
        return n

    def _reset_cache(self) -> None:
        self._len = 0

    def score(self, ids: Sequence[int]) -> np.ndarray:
        """Logits at every position, computed in batches of batch_size tokens."""
        self.reset()
        step = max(1, int(self.load_options.batch_size))
        ids = list(ids)
        rows = [self._run(ids[i:i + step]).copy() for i in range(0, len(ids), step)]
        self.reset()
        return np.concatenate(rows).astype(np.float32, copy=False)

    def close(self) -> None:
        self.session = None
        self._binding = None


class _Binder:
    """IO binding of numpy memory by pointer: `buf` must hold at least prod(shape) items.

    Rebinding a name replaces its previous binding. The public IOBinding
    wrappers build a device object on every call, which is measurable per token
    with 2 x layers cache tensors, so the C binding is driven directly when
    this onnxruntime exposes it, else through the public API.
    """

    def __init__(self, session):
        import onnxruntime as ort

        self._public = session.io_binding()
        self._session = session
        try:
            self._raw = self._public._iobinding
            self._sess = session._sess
            self._dev = ort.OrtDevice.make("cpu", 0)._get_c_device()
        except AttributeError:  # pragma: no cover - other onnxruntime versions
            self._raw = None

    def input(self, name: str, buf: np.ndarray, shape) -> None:
        if self._raw is not None:
            self._raw.bind_input(name, self._dev, buf.dtype, shape, buf.ctypes.data)
        else:  # pragma: no cover
            self._public.bind_input(name, "cpu", 0, buf.dtype, list(shape), buf.ctypes.data)

    def output(self, name: str, buf: np.ndarray, shape) -> None:
        if self._raw is not None:
            self._raw.bind_output(name, self._dev, buf.dtype, shape, buf.ctypes.data)
        else:  # pragma: no cover
            self._public.bind_output(name, "cpu", 0, buf.dtype, list(shape), buf.ctypes.data)

    def run(self) -> None:
        if self._raw is not None:
            self._sess.run_with_iobinding(self._raw, None)
        else:  # pragma: no cover
            self._session.run_with_iobinding(self._public)


def _read_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BadModelFile(f"{path} is not valid JSON ({exc}).", _HINT)


def self_check() -> str:
    """doctor's check, run in a child process: a tiny graph through onnxruntime."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper
    import onnxruntime as ort

    # A 1-layer "language model": embedding gather, matmul to logits, softmax.
    rng = np.random.default_rng(0)
    emb = helper.make_tensor("emb", TensorProto.FLOAT, [16, 8], rng.standard_normal(128).astype(np.float32))
    out = helper.make_tensor("out", TensorProto.FLOAT, [8, 16], rng.standard_normal(128).astype(np.float32))
    graph = helper.make_graph(
        [helper.make_node("Gather", ["emb", "ids"], ["h"]), helper.make_node("MatMul", ["h", "out"], ["z"]),
         helper.make_node("Softmax", ["z"], ["probs"], axis=-1)],
        "tiny_lm", [helper.make_tensor_value_info("ids", TensorProto.INT64, [None])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [None, 16])], [emb, out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    probs = sess.run(None, {"ids": np.array([1, 2, 3], dtype=np.int64)})[0]
    if probs.shape != (3, 16) or abs(float(probs.sum()) - 3.0) > 1e-3:
        raise RuntimeError(f"wrong result from a tiny graph: shape {probs.shape}")
    return f"ran a tiny graph on {', '.join(sess.get_providers())} (onnx {onnx.__version__})"
