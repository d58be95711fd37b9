"""Tokenise and pack a mixture stream: full blocks, nothing lost or reordered, each token's domain,
the same blocks for any DataLoader worker count, ranks disjoint, and per-domain losses of a batch."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from dagster_llmdata.mixture.packing import (
    IGNORE,
    bytes_tokenizer,
    domain_losses,
    packed,
)
from dagster_llmdata.mixture.plan import plan
from dagster_llmdata.mixture.reader import MixtureDataset
from dagster_llmdata.spec.mixture import MixtureSpec, load_mixture_spec

from ..mixture_helpers import mixture_project

SEQ = 32


@pytest.fixture()
def manifest(tmp_path):
    root = mixture_project(tmp_path)
    data = load_mixture_spec(root / "assets" / "mix.yaml").model_dump() | {"token_budget": 3000}
    return plan(MixtureSpec.model_validate(data), root)


def _reader(manifest, **kw):
    return MixtureDataset(manifest, limit=kw.pop("limit", 96), columns=["id", "text"], batch_size=kw.pop("batch_size", 8), **kw)


def _expected(rows, tokenizer=bytes_tokenizer, eos=256):
    """Every document's tokens + eos, in stream order, with its domain."""
    toks, doms = [], []
    for r in rows:
        ids = list(tokenizer.encode(r["text"])) + [eos]
        toks += ids
        doms += [r["_domain"]] * len(ids)
    return toks, doms


def test_blocks_are_full_and_concatenate_back_to_the_documents_in_order(manifest):
    pk = packed(_reader(manifest), bytes_tokenizer, SEQ)
    steps = list(pk)
    rows = list(_reader(manifest))
    assert len(steps) == 96 // 8 and [s["step"] for s in steps] == list(range(12))
    got_tokens, got_domains = [], []
    for s, step in enumerate(steps):
        assert step["input_ids"].dtype == np.int64 and step["input_ids"].shape[1] == SEQ
        assert step["samples"] == list(range(8 * s, 8 * s + 8))
        mask = step["attention_mask"].reshape(-1) == 1
        # only the last block of a step is padded, and padding is never a label nor a domain
        assert mask[: -SEQ].all() and mask[-SEQ]
        assert (step["labels"].reshape(-1)[~mask] == IGNORE).all() and (step["domain_ids"].reshape(-1)[~mask] == -1).all()
        assert (step["labels"].reshape(-1)[mask] == step["input_ids"].reshape(-1)[mask]).all()
        exp_tokens, exp_domains = _expected(rows[8 * s: 8 * s + 8])
        assert step["input_ids"].reshape(-1)[mask].tolist() == exp_tokens
        assert [step["domains"][k] for k in step["domain_ids"].reshape(-1)[mask]] == exp_domains
        got_tokens += exp_tokens
        got_domains += exp_domains
        assert step["dropped_tokens"] == 0
    assert (got_tokens, got_domains) == _expected(rows)
    assert steps[0]["domains"] == sorted(manifest.domains)
    # documents (about 40 bytes) are longer than one block here: they go on into the next one
    assert any(len(r["text"]) > SEQ for r in rows)


def test_a_fixed_number_of_blocks_per_step_pads_or_counts_what_it_drops(manifest):
    pk = packed(_reader(manifest, limit=32), bytes_tokenizer, SEQ, blocks_per_step=4)
    rows = list(_reader(manifest, limit=32))
    steps = list(pk)
    for s, step in enumerate(steps):
        assert step["input_ids"].shape == (4, SEQ)
        toks, _ = _expected(rows[8 * s: 8 * s + 8])
        assert step["dropped_tokens"] == len(toks) - 4 * SEQ > 0  # 8 documents of ~40 bytes exceed 128
        assert step["input_ids"].reshape(-1).tolist() == toks[: 4 * SEQ]
    assert pk.dropped_tokens == sum(s["dropped_tokens"] for s in steps)
    roomy = list(packed(_reader(manifest, limit=32), bytes_tokenizer, SEQ, blocks_per_step=20))
    assert all(s["input_ids"].shape == (20, SEQ) and s["dropped_tokens"] == 0 and (s["attention_mask"][-1] == 0).all()
               for s in roomy)


def test_the_blocks_are_the_same_for_any_worker_count_and_ranks_are_disjoint(manifest):
    torch = pytest.importorskip("torch")
    runs = []
    for workers in (0, 1, 3):
        pk = packed(_reader(manifest, limit=120, rank=1, world_size=2), bytes_tokenizer, SEQ)
        loader = torch.utils.data.DataLoader(pk, batch_size=None, num_workers=workers)
        runs.append([(s["step"], s["samples"], s["input_ids"].tolist(), s["domain_ids"].tolist()) for s in loader])
    assert runs[0] == runs[1] == runs[2]
    assert [r[0] for r in runs[0]] == list(range(60 // 8 + 1))  # 60 documents: 7 full steps and one of 4
    samples = {rank: [i for s in packed(_reader(manifest, limit=120, rank=rank, world_size=2), bytes_tokenizer, SEQ)
                      for i in s["samples"]] for rank in (0, 1)}
    assert samples[1] == [i for r in runs[0] for i in r[1]]
    assert not set(samples[0]) & set(samples[1]) and sorted(samples[0] + samples[1]) == list(range(120))


def test_packed_steps_resume_from_the_readers_state_at_a_step(manifest):
    whole = [s["input_ids"].tolist() for s in packed(_reader(manifest), bytes_tokenizer, SEQ)]
    pk = packed(_reader(manifest), bytes_tokenizer, SEQ)
    it = iter(pk)
    head = [next(it)["input_ids"].tolist() for _ in range(5)]
    state = pk.state_dict(step=5)
    resumed = packed(_reader(manifest), bytes_tokenizer, SEQ)
    resumed.load_state_dict(state)
    assert head + [s["input_ids"].tolist() for s in resumed] == whole


def test_a_real_tokenizer_from_an_installed_package(manifest):
    tokenizers = pytest.importorskip("tokenizers")
    site = sorted(Path(p) for p in sys.path if p.endswith("site-packages"))
    found = [f for d in site for f in sorted(d.glob("*/model/tokenizer.json"))]
    if not found:
        pytest.skip("no tokenizer.json ships in an installed package")
    tok = tokenizers.Tokenizer.from_file(str(found[0]))
    plain = tokenizers.Tokenizer.from_file(str(found[0]))
    plain.no_truncation()
    plain.no_padding()
    eos = tok.token_to_id("[SEP]") if tok.token_to_id("[SEP]") is not None else 0
    rows = list(_reader(manifest, limit=16))
    expected = [t for r in rows for t in plain.encode(r["text"]).ids + [eos]]
    if tok.truncation:  # a truncating tokenizer would cut documents silently: refused
        with pytest.raises(ValueError, match="no_truncation"):
            packed(_reader(manifest, limit=16), tok, 16, eos_id=eos)
        tok.no_truncation()
    for t in (tok, plain):  # the package's tokenizer may pad: padding is stripped, not packed
        steps = list(packed(_reader(manifest, limit=16), t, 16, eos_id=eos))
        assert [t for s in steps for t in s["input_ids"].reshape(-1)[s["attention_mask"].reshape(-1) == 1].tolist()] == expected
    transformers = pytest.importorskip("transformers")
    hf = transformers.PreTrainedTokenizerFast(tokenizer_file=str(found[0]))
    steps = list(packed(_reader(manifest, limit=16), hf, 16, eos_id=eos))
    assert [t for s in steps for t in s["input_ids"].reshape(-1)[s["attention_mask"].reshape(-1) == 1].tolist()] == expected


def test_a_row_without_the_text_column_is_a_clear_error(manifest):
    from dagster_llmdata.errors import ManifestError

    ds = MixtureDataset(manifest, limit=8, columns=["id"], batch_size=8)
    with pytest.raises(ManifestError, match="no text column 'text'"):
        next(iter(packed(ds, bytes_tokenizer, SEQ)))


def test_domain_losses_match_a_hand_computation():
    torch = pytest.importorskip("torch")
    domains = ["code", "news", "prose"]
    # per-token losses, aligned with labels: padding (-100) and domain -1 are left out
    losses = torch.tensor([[1.0, 2.0, 3.0, 9.0], [4.0, 5.0, 6.0, 7.0]])
    labels = torch.tensor([[5, 6, 7, IGNORE], [1, 2, 3, 4]])
    dom = torch.tensor([[0, 0, 2, -1], [2, 2, 0, 0]])
    got = domain_losses(losses, labels, dom, domains)
    assert got == pytest.approx({"code": (1 + 2 + 6 + 7) / 4, "prose": (3 + 4 + 5) / 3})
    assert "news" not in got  # no tokens of it in the batch
    # logits: the shifted cross-entropy by hand, position t predicting label t+1 of token t+1's domain
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 10, generator=g)
    labels = torch.tensor([[1, 2, 3, IGNORE], [4, 5, 6, 7]])
    dom = torch.tensor([[0, 1, 1, -1], [1, 0, 0, 1]])
    by_hand: dict[int, list[float]] = {}
    for b in range(2):
        for t in range(3):
            y = int(labels[b, t + 1])
            if y != IGNORE:
                logp = logits[b, t].log_softmax(-1)[y]
                by_hand.setdefault(int(dom[b, t + 1]), []).append(-float(logp))
    expected = {domains[k]: sum(v) / len(v) for k, v in by_hand.items()}
    got = domain_losses(logits, labels, dom, domains)
    assert got.keys() == expected.keys() and all(math.isclose(got[d], expected[d], rel_tol=1e-5) for d in got)


def test_domain_losses_of_a_packed_step_from_a_model(manifest):
    torch = pytest.importorskip("torch")
    step = next(iter(packed(_reader(manifest), bytes_tokenizer, SEQ)))
    ids = torch.as_tensor(step["input_ids"])
    logits = torch.zeros(*ids.shape, bytes_tokenizer.vocab_size)  # uniform: every token costs log(257)
    got = domain_losses(logits, step["labels"], step["domain_ids"], step["domains"])
    assert set(got) <= set(step["domains"]) and got
    assert all(math.isclose(v, math.log(257), rel_tol=1e-6) for v in got.values())


def test_a_switch_at_a_step_applies_from_that_step_of_blocks(manifest, tmp_path):
    from dagster_llmdata.mixture import with_weights

    tilted = with_weights(manifest, {"code": 0.05, "prose": 0.05, "news": 0.9})
    # with the run's switch record, a running iteration (and every worker) takes the switch
    pk = packed(_reader(manifest, record=tmp_path / "switches.jsonl"), bytes_tokenizer, SEQ)
    it = iter(pk)
    head = [next(it) for _ in range(2)]
    pk.update(tilted, step=2)  # in this process nothing of step 2 has been read yet: it can switch
    tail = list(it)
    reader = _reader(manifest)
    reader.update(tilted, sample=2 * 8)
    rows = list(reader)
    steps = head + tail
    assert [s["step"] for s in steps] == list(range(12)) and all(s["domains"] == steps[0]["domains"] for s in steps)
    for s, step in enumerate(steps):
        mask = step["attention_mask"].reshape(-1) == 1
        assert step["input_ids"].reshape(-1)[mask].tolist() == _expected(rows[8 * s: 8 * s + 8])[0]
    news = steps[0]["domains"].index("news")
    share = lambda ss: np.mean([(s["domain_ids"] == news).sum() / (s["domain_ids"] >= 0).sum() for s in ss])
    assert share(steps[2:]) > 1.5 * share(steps[:2])



def test_the_reader_built_with_a_tokenizer_is_the_packed_stream(manifest):
    from dagster_llmdata.mixture.packing import PackedMixture

    direct = MixtureDataset(manifest, limit=96, columns=["id", "text"], batch_size=8, tokenizer=bytes_tokenizer, seq_len=SEQ,
                            packing={"blocks_per_step": 4})
    assert isinstance(direct, PackedMixture) and isinstance(direct.ds, MixtureDataset)
    assert direct.seq_len == SEQ and direct.blocks_per_step == 4 and direct.ds.batch_size == 8
    by_helper = packed(_reader(manifest), bytes_tokenizer, SEQ, blocks_per_step=4)
    for a, b in zip(direct, by_helper, strict=True):
        assert a["samples"] == b["samples"] and np.array_equal(a["input_ids"], b["input_ids"])
        assert np.array_equal(a["domain_ids"], b["domain_ids"])
    # without a tokenizer it stays a reader; packing options alone are a mistake, said so
    assert type(_reader(manifest)) is MixtureDataset
    with pytest.raises(ValueError, match="give tokenizer="):
        MixtureDataset(manifest, seq_len=SEQ)
