"""Tokenise and pack a mixture stream: `packed(ds, tokenizer, seq_len)` turns a MixtureDataset's
documents into blocks of `seq_len` tokens with each token's domain, and `domain_losses` gives a
trainer the per-domain loss of a batch (the feedback a mixture algorithm needs) in one call.

The unit of packing is one step: the rank-local batch of `ds.batch_size` documents that the reader
hands to one DataLoader worker whole. Each batch's documents are tokenised, each followed by
`eos_id`, concatenated in stream order and cut into blocks of `seq_len`; a document longer than a
block goes on in the next block of the same step. Tokens never cross from one step into the next,
because the next step may be built by another worker: the last block of a step is padded (labels
-100, attention 0, domain -1). So the blocks of step k depend only on the stream's batch k, and a
DataLoader yields the same blocks for any `num_workers`. With `blocks_per_step=K` every step has
exactly K blocks (a fixed shape): short steps get padding blocks, and tokens past K blocks are
dropped and counted in the step's `dropped_tokens` (and `self.dropped_tokens` with no workers).

One item per step (use `DataLoader(packed, batch_size=None)`), so the reader's steps are the
trainer's steps: `packed.update(manifest, step=)`, `packed.state_dict(step=)` and `packed.mark()`
mean the same step numbers as on the reader (a running iteration and its workers take a switch
through the reader's `record`; a step is packed as soon as its last document is read, so nothing
past it has been read then). Blocks follow the Hugging Face convention: `labels`
are `input_ids` with padding set to -100 and the model shifts them (`domain_losses` does the same).

A plain iterable; when torch is installed it is also a `torch.utils.data.IterableDataset`."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from dagster_llmdata.errors import ManifestError

IGNORE = -100  # the label the loss skips (PyTorch's and Hugging Face's default ignore_index)
PAD_DOMAIN = -1

if importlib.util.find_spec("torch") is not None:
    from torch.utils.data import IterableDataset as _Base
else:  # torch is optional: without it this is a plain iterable
    class _Base:  # type: ignore[no-redef]
        pass


class ByteTokenizer:
    """UTF-8 bytes as token ids 0..255, and 256 as end of document: no vocabulary to download."""

    vocab_size = 257
    eos_token_id = 256
    pad_token_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")


bytes_tokenizer = ByteTokenizer()


def _ids_of(out: Any, mask: Sequence[int] | None = None) -> list[int]:
    if isinstance(out, Mapping):
        out, mask = out["input_ids"], out.get("attention_mask")
    elif hasattr(out, "ids"):  # a tokenizers.Encoding
        out, mask = out.ids, out.attention_mask
    if mask is not None and len(mask) == len(out):  # a tokenizer set to pad: its padding is not text
        return [int(i) for i, m in zip(out, mask) if m]
    return [int(i) for i in out]


def _encoder(tokenizer: Any):
    """texts -> lists of ids from a Hugging Face tokenizer, a `tokenizers.Tokenizer`, tiktoken, or
    any callable returning ids or a mapping with `input_ids`; a whole step's texts in one call
    where the tokenizer takes a batch (fast tokenizers then work in parallel)."""
    if limit := getattr(tokenizer, "truncation", None):  # a tokenizers.Tokenizer set to truncate
        # truncation would cut documents short without a trace; packing splits long ones itself
        raise ValueError(f"the tokenizer truncates ({limit}): call its "
                         f".no_truncation() first (packing splits long documents over blocks)")
    if hasattr(tokenizer, "encode_batch"):  # tokenizers.Tokenizer, tiktoken
        return lambda texts: [_ids_of(e) for e in tokenizer.encode_batch(texts)]
    if getattr(tokenizer, "is_fast", False) and callable(tokenizer):  # a Hugging Face fast tokenizer
        def hf(texts):
            out = tokenizer(texts)
            masks = out.get("attention_mask") or [None] * len(texts)
            return [_ids_of(ids, m) for ids, m in zip(out["input_ids"], masks, strict=True)]
        return hf
    if hasattr(tokenizer, "encode"):
        return lambda texts: [_ids_of(tokenizer.encode(t)) for t in texts]
    if callable(tokenizer):
        return lambda texts: [_ids_of(tokenizer(t)) for t in texts]
    raise TypeError(f"tokenizer must have .encode(text) or be callable, got {type(tokenizer).__name__}")


def _default_eos(tokenizer: Any) -> int | None:
    for name in ("eos_token_id", "eos_id", "sep_token_id", "eot_token"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, (int, np.integer)):
            return int(value)
    return None


class PackedMixture(_Base):
    """`for step in PackedMixture(ds, tokenizer, seq_len)`: one dict per step of the reader (its
    rank-local batch of `ds.batch_size` documents; 1 when unset), with int64 arrays of shape
    (blocks, seq_len): `input_ids`, `labels` (padding -100), `attention_mask`, `domain_ids` (the
    index in `domains` of each token's document, -1 on padding); `domains` (names, in index order:
    the manifest history's domains, sorted, each later manifest's new ones appended); `step`;
    `samples` (the documents' global sample numbers); `dropped_tokens`.

    `eos_id`: appended to every document (default: the tokenizer's eos/sep id). `pad_id`: what
    padding positions hold (default: eos). `text_field`: the column tokenised. A tokenizer set to
    truncate is refused (it would cut documents silently); one set to pad has its padding stripped."""

    def __init__(self, ds: Any, tokenizer: Any, seq_len: int, eos_id: int | None = None,
                 text_field: str = "text", blocks_per_step: int | None = None, pad_id: int | None = None):
        super().__init__()
        if seq_len is None or int(seq_len) < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        if blocks_per_step is not None and blocks_per_step < 1:
            raise ValueError(f"blocks_per_step must be >= 1, got {blocks_per_step}")
        self.ds, self.tokenizer, self.seq_len = ds, tokenizer, int(seq_len)
        self.eos_id = _default_eos(tokenizer) if eos_id is None else int(eos_id)
        if self.eos_id is None:
            raise ValueError(f"{type(tokenizer).__name__} has no eos token id: pass eos_id=")
        self.pad_id = self.eos_id if pad_id is None else int(pad_id)
        self.text_field, self.blocks_per_step = text_field, blocks_per_step
        self._encode = _encoder(tokenizer)
        self.dropped_tokens = 0  # counted here when iterating in this process (no workers)

    # ---- the reader's controls, in the same step numbers -----------------------------------------

    def update(self, manifest, step: int | None = None, sample: int | None = None) -> dict[str, Any]:
        return self.ds.update(manifest, step=step, sample=sample)

    def state_dict(self, step: int | None = None) -> dict[str, Any]:
        return self.ds.state_dict(step=step)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ds.load_state_dict(state)

    def mark(self, step: int | None = None) -> dict[str, Any]:
        return self.ds.mark(step=step)

    @property
    def domains(self) -> list[str]:
        """Domain names in `domain_ids` order: a function of the manifest history only, so every
        worker and rank numbers them alike, and a domain a switch adds gets the next index."""
        out: list[str] = []
        for seg in self.ds.segments:
            out += sorted(set(seg.manifest.domains) - set(out))
        return out

    # ---- iteration -------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, Any]]:
        ds = self.ds
        batch = ds.batch_size or 1
        current, rows = None, []
        for row in ds:  # in a DataLoader worker, only the whole batches that worker owns
            b = (row["_sample"] - ds.rank) // ds.world_size // batch
            if b != current and rows:
                yield self.pack(current, rows)
                rows = []
            current = b
            rows.append(row)
            if len(rows) == batch:  # a whole step: pack it now, not after reading into the next one
                yield self.pack(current, rows)
                rows = []
        if rows:
            yield self.pack(current, rows)

    def pack(self, step: int, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """The blocks of one step's documents (see the module docstring for the rule)."""
        domains = self.domains
        index = {d: k for k, d in enumerate(domains)}
        for row in rows:
            if not isinstance(row.get(self.text_field), str):
                raise ManifestError(f"sample {row['_sample']} has no text column {self.text_field!r} "
                                    f"(columns: {sorted(k for k in row if not k.startswith('_'))})")
        tokens, doms = [], []
        for row, ids in zip(rows, self._encode([r[self.text_field] for r in rows]), strict=True):
            ids = ids + [self.eos_id]
            tokens += ids
            doms += [index[row["_domain"]]] * len(ids)
        L = self.seq_len
        n = -(-len(tokens) // L)
        if self.blocks_per_step is not None:
            n = self.blocks_per_step
        dropped = max(0, len(tokens) - n * L)
        kept = len(tokens) - dropped
        input_ids = np.full(n * L, self.pad_id, dtype=np.int64)
        domain_ids = np.full(n * L, PAD_DOMAIN, dtype=np.int64)
        input_ids[:kept] = tokens[:kept]
        domain_ids[:kept] = doms[:kept]
        mask = np.zeros(n * L, dtype=np.int64)
        mask[:kept] = 1
        labels = np.where(mask == 1, input_ids, IGNORE)
        self.dropped_tokens += dropped
        shape = (n, L)
        return {"input_ids": input_ids.reshape(shape), "labels": labels.reshape(shape),
                "attention_mask": mask.reshape(shape), "domain_ids": domain_ids.reshape(shape),
                "domains": domains, "step": int(step), "samples": [int(r["_sample"]) for r in rows],
                "dropped_tokens": int(dropped)}


def packed(ds: Any, tokenizer: Any, seq_len: int, **kwargs: Any) -> PackedMixture:
    """`ds` (a MixtureDataset)'s documents as packed token blocks (see PackedMixture for the
    keyword arguments); `MixtureDataset(..., tokenizer=, seq_len=)` is the same. This module does
    not import the reader, so the reader can build one."""
    return PackedMixture(ds, tokenizer, seq_len, **kwargs)


def domain_losses(logits_or_token_losses, labels, domain_ids, domains: Sequence[str], shift: bool = True) -> dict[str, float]:
    """{domain: mean token loss} of one batch, over the tokens whose label is not -100, for the
    domains that have such tokens. Either logits (batch, seq, vocab): cross-entropy, with the
    Hugging Face shift (position t predicts label t+1, counted for the domain of token t+1) unless
    `shift=False`; or per-token losses (batch, seq) already aligned with `labels` and `domain_ids`.
    Torch tensors (numpy arrays are converted); no gradient is kept."""
    import torch
    import torch.nn.functional as F

    values = torch.as_tensor(logits_or_token_losses).detach()
    labels = torch.as_tensor(labels)
    domain_ids = torch.as_tensor(domain_ids).to(values.device)
    if values.dim() == labels.dim() + 1:  # logits
        if shift:
            values, labels, domain_ids = values[..., :-1, :], labels[..., 1:], domain_ids[..., 1:]
        losses = F.cross_entropy(values.reshape(-1, values.shape[-1]).float(), labels.reshape(-1).to(values.device),
                                 ignore_index=IGNORE, reduction="none")
    elif values.shape == labels.shape:
        losses = values.reshape(-1).float()
    else:
        raise ValueError(f"expected logits (..., vocab) or token losses shaped like labels {tuple(labels.shape)}, "
                         f"got {tuple(values.shape)}")
    keep = (labels.reshape(-1).to(losses.device) != IGNORE) & (domain_ids.reshape(-1) >= 0)
    losses, ids = losses[keep], domain_ids.reshape(-1)[keep].long()
    sums = torch.zeros(len(domains), dtype=torch.float64, device=losses.device).index_add_(0, ids, losses.double())
    counts = torch.bincount(ids, minlength=len(domains))
    return {d: float(sums[k] / counts[k]) for k, d in enumerate(domains) if counts[k] > 0}
