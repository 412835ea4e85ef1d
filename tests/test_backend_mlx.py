"""The MLX backend (mlx-cpu on Linux): loading, cache reuse, quantized folders, bad files.

Tiny random llama checkpoints are converted in-session with mlx-lm (fp16, 8bit).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import edge
from edge.config import GenerationOptions, LoadOptions
from edge.errors import BackendUnavailable, BadModelFile, ContextTooLong
from edge.store import artifact_from_folder

from tiny_models import tiny

QUANTS = {"mlx": ["fp16", "8bit"]}


@pytest.fixture(scope="module")
def arts():
    return tiny("llama", QUANTS)


def load(artifact, **kw):
    from edge.backends import mlx

    kw.setdefault("threads", 1)
    kw.setdefault("n_ctx", 256)
    return mlx.Backend(artifact, LoadOptions(**kw))


@pytest.fixture(scope="module")
def fp16(arts):
    b = load(arts[("mlx", "fp16")])
    yield b
    b.close()


def broken_copy(artifact, tmp_path):
    dst = tmp_path / artifact.folder.parent.name / artifact.folder.name
    shutil.copytree(artifact.folder, dst)
    return artifact_from_folder(dst)


def test_model_facts(fp16):
    cfg = json.loads((fp16.artifact.main_path / "config.json").read_text())
    assert fp16.n_vocab == cfg["vocab_size"] and fp16.n_ctx_train == cfg["max_position_embeddings"]
    assert fp16.eos_ids == frozenset({fp16.tok.token_id("<|im_end|>")})
    assert "<|im_start|>assistant" in fp16.apply_chat_template([{"role": "user", "content": "Hi"}])


def test_score_prefill_and_rewind_agree(fp16):
    ids = fp16.tokenize("Paris is the capital of France. Berlin is the capital of")
    rows = fp16.score(ids)
    assert rows.shape == (len(ids), fp16.n_vocab) and rows.dtype == np.float32
    fp16.reset()
    np.testing.assert_allclose(fp16.prefill(ids), rows[-1], atol=2e-2)
    other = ids[:5] + ids[3:9]
    fresh = fp16.score(other)[-1]
    fp16.reset()
    fp16.prefill(ids)
    np.testing.assert_allclose(fp16.prefill(other), fresh, atol=2e-2)
    assert fp16.last_stats.cached_tokens == 5


def test_eight_bit_folder_generates_close_to_fp16(arts, fp16):
    b = load(arts[("mlx", "8bit")])
    ids = b.tokenize("Once upon a time there was a small model")
    text = "".join(c.text for c in b.generate(ids, GenerationOptions(temperature=0, max_tokens=8, ignore_eos=True)))
    assert b.last_stats.completion_tokens == 8 and text
    agree = (b.score(ids).argmax(1) == fp16.score(ids).argmax(1)).mean()
    assert agree >= 0.7, agree


def test_context_is_enforced(arts):
    b = load(arts[("mlx", "fp16")], n_ctx=32)
    with pytest.raises(ContextTooLong):
        list(b.generate(list(range(5, 45))))
    with pytest.raises(ContextTooLong, match="--ctx 512 or less"):
        load(arts[("mlx", "fp16")], n_ctx=1024)


def test_edge_load_streams(arts):
    m = edge.load("tiny-llama:mlx-fp16", backend="mlx", n_ctx=256, threads=1)
    assert m.backend_name == "mlx"
    pieces = list(m.stream("Once upon a time", temperature=0, max_tokens=6, ignore_eos=True))
    assert len(pieces) > 1 and m.stats.completion_tokens == 6


def test_runtime_imports_neither_torch_nor_transformers(arts):
    path = arts[("mlx", "8bit")].folder
    code = ("import sys; from edge.store import artifact_from_folder; from edge.backends import mlx;"
            "from edge.config import LoadOptions;"
            f"b = mlx.Backend(artifact_from_folder({str(path)!r}), LoadOptions(n_ctx=64)); b.forward(b.tokenize('hi'));"
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules));"
            "print('mlx_lm' in sys.modules, 'mlx_lm.models.llama' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    # No half-made mlx_lm package is left behind: a later `import mlx_lm` runs the real one.
    assert out.stdout.split() == ["[]", "False", "True"]


def test_missing_or_mismatched_weights(arts, tmp_path):
    a = broken_copy(arts[("mlx", "fp16")], tmp_path)
    cfg_path = a.main_path / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "hidden_size": cfg["hidden_size"] * 2}))
    with pytest.raises(BadModelFile, match="do not match its config.json"):
        load(a)
    cfg_path.write_text(json.dumps({**cfg, "model_type": "no-such-arch"}))
    with pytest.raises(BackendUnavailable, match="cannot run 'no-such-arch'"):
        load(a)
    cfg_path.write_text(json.dumps(cfg))
    for f in a.main_path.glob("model*.safetensors"):
        f.write_bytes(b"garbage")
    with pytest.raises(BadModelFile, match="cannot be read"):
        load(a)
    for f in a.main_path.glob("model*.safetensors"):
        f.unlink()
    with pytest.raises(BadModelFile, match="no model.*safetensors"):
        load(a)


def test_tokenizer_from_another_model(arts, tmp_path):
    a = broken_copy(arts[("mlx", "fp16")], tmp_path)
    from tokenizers import Tokenizer

    tj = a.main_path / "tokenizer.json"
    bigger = Tokenizer.from_file(str(tj))
    bigger.add_tokens([f"extra{i}" for i in range(1000)])
    bigger.save(str(tj))
    with pytest.raises(BadModelFile, match="belong to different models"):
        load(a)
