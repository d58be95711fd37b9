"""In-trainer mixture switching: a real (tiny, CPU) torch training loop over a MixtureDataset whose
algorithm runs every few steps; the switch lands at the batch the rule fixes, rows from it on carry
the new version, two runs give the same sequence, the HF Trainer and Lightning callbacks drive the
same updater, and a switch is recorded as a materialisation of the mixture asset."""

from __future__ import annotations

import importlib.util

import pytest

from dagster_llmdata.errors import MixtureError
from dagster_llmdata.mixture.in_trainer import (
    MixtureUpdater,
    first_safe_batch,
    logged_domain_losses,
)
from dagster_llmdata.mixture.plan import plan
from dagster_llmdata.mixture.reader import MixtureDataset, read_record
from dagster_llmdata.spec.mixture import MixtureSpec, load_mixture_spec

from ..mixture_helpers import mixture_project

torch = pytest.importorskip("torch")

BATCH, SEQ = 8, 24


@pytest.fixture()
def manifest(tmp_path):
    root = mixture_project(tmp_path)
    data = load_mixture_spec(root / "assets" / "mix.yaml").model_dump() | {"token_budget": 3000}
    return plan(MixtureSpec.model_validate(data), root)


def _bytes(text: str) -> list[int]:
    b = list(text.encode()[: SEQ + 1])
    return b + [0] * (SEQ + 1 - len(b))


def collate(rows):
    ids = torch.tensor([_bytes(r["text"]) for r in rows])
    return {"x": ids[:, :-1], "y": ids[:, 1:], "domains": [r["_domain"] for r in rows],
            "samples": [r["_sample"] for r in rows], "versions": [r["_version"] for r in rows]}


class ByteModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.out = torch.nn.Embedding(256, 16), torch.nn.Linear(16, 256)

    def forward(self, x):
        return self.out(self.emb(x))


def domain_losses(per_row: torch.Tensor, domains: list[str]) -> dict[str, float]:
    out = {}
    for d in sorted(set(domains)):
        mask = torch.tensor([x == d for x in domains])
        out[d] = float(per_row[mask].mean())
    return out


def train(manifest, record, workers: int, algorithm: str = "odm", params=None, steps: int = 12, update_step: int = 3):
    torch.manual_seed(0)
    ds = MixtureDataset(manifest, batch_size=BATCH, columns=["id", "text"], limit=steps * BATCH, record=record)
    loader = torch.utils.data.DataLoader(ds, batch_size=BATCH, num_workers=workers, prefetch_factor=2 if workers else None,
                                         collate_fn=collate)
    model = ByteModel()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    updater = MixtureUpdater(ds, algorithm, params, update_step=update_step, loader=loader)
    seen = []
    for step, batch in enumerate(loader, 1):
        logits = model(batch["x"])
        per_token = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch["y"], reduction="none")
        per_row = per_token.mean(1)
        opt.zero_grad()
        per_row.mean().backward()
        opt.step()
        seen += list(zip(batch["samples"], batch["versions"]))
        updater.observe(step, domain_losses(per_row.detach(), batch["domains"]))
    return updater, seen


def check_switches(manifest, history, seen, lag: int):
    """Every switch applies from the rule's batch and the rows carry the version in force."""
    assert [s for s, _ in seen] == list(range(len(seen)))  # nothing skipped, nothing repeated
    assert history, "no switch happened"
    for h in history:
        assert h["applies_from_batch"] == h["step"] + lag and h["sample"] == h["applies_from_batch"] * BATCH
    bounds = [(0, manifest.version)] + [(h["sample"], h["version"]) for h in history]
    for sample, version in seen:
        assert version == [v for start, v in bounds if start <= sample][-1], sample
    assert len({v for _, v in seen}) >= 2  # a switch landed inside the run


@pytest.mark.parametrize("workers", [0, 2])
def test_odm_switches_at_the_rules_batch_and_is_deterministic(manifest, tmp_path, workers):
    runs = []
    for n in range(2):
        record = tmp_path / f"run{n}" / "switches.jsonl"
        updater, seen = train(manifest, record, workers)
        lag = 2 * 2 if workers else 0
        check_switches(manifest, updater.history, seen, lag)
        assert [h["step"] for h in updater.history] == [3, 6, 9, 12]
        # the run's record holds the same switches (what workers followed, what reproduce rebuilds)
        assert [(e["sample"], e["version"]) for e in read_record(record)[1:]] == [(h["sample"], h["version"]) for h in updater.history]
        runs.append((updater.history, seen))
    assert runs[0] == runs[1]
    # ODM moved the weights away from the start
    assert updater.history[-1]["weights"] != {d: manifest.domains[d]["weight"] for d in updater.domains}


def test_doremi_with_reference_losses_and_warmup(manifest, tmp_path):
    ref = {"code": 2.0, "prose": 2.0, "news": 2.0}
    torch.manual_seed(0)
    updater, seen = train(manifest, tmp_path / "r" / "switches.jsonl", 0, "doremi", {"reference_losses": ref, "eta": 1.0})
    check_switches(manifest, updater.history, seen, 0)
    assert "average_weights" in updater.history[0]
    assert sum(updater.history[-1]["weights"].values()) == pytest.approx(1.0)
    # warmup: no update before it; the first at the first multiple of update_step at or after it
    ds = MixtureDataset(manifest, batch_size=BATCH, record=tmp_path / "w" / "switches.jsonl")
    u = MixtureUpdater(ds, "doremi", {"reference_losses": ref}, update_step=3, warmup_step=5)
    assert [u.observe(s, {"code": 3.0}) for s in range(1, 6)] == [None] * 5
    assert u.observe(6, {"code": 3.0})["applies_from_batch"] == 6


def test_the_updater_resumes_exactly_from_its_state_dict(manifest, tmp_path):
    import json

    losses = lambda s: {"code": 3.0 + 0.1 * s, "news": 2.0 + 0.05 * (s % 3), "prose": 2.5}

    def updater(record):
        ds = MixtureDataset(manifest, batch_size=BATCH, record=record)
        return ds, MixtureUpdater(ds, "odm", update_step=4, num_workers=2, prefetch_factor=2)

    _, whole = updater(tmp_path / "a" / "switches.jsonl")
    for s in range(1, 15):
        whole.observe(s, losses(s))
    ds, first = updater(tmp_path / "b" / "switches.jsonl")
    for s in range(1, 7):  # a checkpoint between two updates, with losses gathered since the last
        first.observe(s, losses(s))
    saved = json.loads(json.dumps({"ds": ds.state_dict(step=6), "updater": first.state_dict()}))
    ds2, resumed = updater(tmp_path / "b" / "switches.jsonl")
    ds2.load_state_dict(saved["ds"])
    resumed.load_state_dict(saved["updater"])
    for s in range(7, 15):
        resumed.observe(s, losses(s))
    assert resumed.history == whole.history and [h["step"] for h in whole.history] == [4, 8, 12]
    assert [(e["sample"], e["version"]) for e in read_record(tmp_path / "b" / "switches.jsonl")] == \
        [(e["sample"], e["version"]) for e in read_record(tmp_path / "a" / "switches.jsonl")]
    with pytest.raises(MixtureError, match="ran 'odm'"):
        MixtureUpdater(ds2, "doremi").load_state_dict(saved["updater"])


def test_the_rule_and_clear_errors(manifest, tmp_path):
    assert first_safe_batch(10) == 10
    assert first_safe_batch(10, num_workers=2, prefetch_factor=3) == 16
    assert first_safe_batch(10, num_workers=2) == 14  # torch's default prefetch factor
    assert first_safe_batch(10, num_workers=1, lookahead=1, gradient_accumulation=4) == 16  # a whole optimiser step
    with pytest.raises(MixtureError, match="record="):
        MixtureUpdater(MixtureDataset(manifest, batch_size=BATCH), "odm")
    u = MixtureUpdater(MixtureDataset(manifest, batch_size=BATCH, record=tmp_path / "s.jsonl"), "odm", update_step=2)
    with pytest.raises(MixtureError, match="does not draw from"):
        u.observe(1, {"poetry": 1.0})
    assert logged_domain_losses({"eval_code_loss": 1.5, "loss/news": 2.5, "loss": 9.0}, ["code", "news", "prose"]) == {"code": 1.5, "news": 2.5}


def test_record_switch_writes_a_materialisation_of_the_mixture_asset(manifest, tmp_path):
    import dagster as dg

    from dagster_llmdata.mixture.mixture_asset import mixture_key
    from dagster_llmdata.mixture.switch_record import switch_recorder

    instance = dg.DagsterInstance.ephemeral()
    record = tmp_path / "run" / "switches.jsonl"
    ds = MixtureDataset(manifest, batch_size=BATCH, record=record)
    u = MixtureUpdater(ds, "odm", update_step=2, on_switch=switch_recorder(instance, "mix", "run-42"))
    u.observe(1, {"code": 3.0, "news": 1.0})
    assert instance.get_latest_materialization_event(mixture_key("mix")) is None
    u.observe(2, {"code": 3.0, "prose": 2.0})
    u.observe(4, {"news": 2.5})
    event = instance.get_latest_materialization_event(mixture_key("mix"))
    meta = event.asset_materialization.metadata
    last = u.history[-1]
    assert meta["version"].value == last["version"] and meta["run_id"].value == "run-42"
    assert meta["step"].value == 4 and meta["applies_from_step"].value == 4 and meta["sample"].value == 4 * BATCH
    assert meta["weights"].value == pytest.approx(last["weights"])
    assert {d: meta[f"weight/{d}"].value for d in last["weights"]} == pytest.approx(last["weights"])
    assert meta["manifest"].value == str(u.schedule[-1][1].path)
    records = instance.fetch_materializations(mixture_key("mix"), limit=10).records
    assert len(records) == 2


HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None


def hf_train(manifest, record, out, workers: int, stop_at: int | None = None, resume: str | None = None):
    """A tiny Llama trained by a real HF Trainer on `ds` (eval every 2 steps on per-domain sets),
    with the mixture callback; returns the callback and the (sample, version) of every row trained."""
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from dagster_llmdata.mixture.in_trainer import mixture_callback

    torch.manual_seed(0)
    ds = MixtureDataset(manifest, batch_size=4, columns=["id", "text"], record=record)
    seen = []

    def hf_collate(rows):
        if "input_ids" in rows[0]:  # the eval sets
            ids = torch.stack([r["input_ids"] for r in rows])
            return {"input_ids": ids, "labels": ids}
        ids = torch.tensor([_bytes(r["text"])[:SEQ] for r in rows])
        return {"input_ids": ids, "labels": ids, "meta": [(r["_sample"], r["_version"]) for r in rows]}

    class Recording(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if "meta" in inputs:
                seen.extend(inputs.pop("meta"))
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    class Crash(TrainerCallback):  # stops the run after a step, as a killed job would
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == stop_at:
                control.should_training_stop = True

    evals = {d: [{"input_ids": torch.tensor(_bytes(f"{d} doc {i} w w w")[:SEQ])} for i in range(2)] for d in ("code", "prose", "news")}
    config = LlamaConfig(vocab_size=256, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2, max_position_embeddings=64)
    args = TrainingArguments(output_dir=str(out), max_steps=10, per_device_train_batch_size=4,
                             per_device_eval_batch_size=2, gradient_accumulation_steps=2, eval_strategy="steps",
                             eval_steps=2, logging_steps=2, save_strategy="steps" if stop_at else "no", save_steps=stop_at or 500,
                             report_to=[], use_cpu=True, dataloader_num_workers=workers, learning_rate=1e-2, disable_tqdm=True,
                             remove_unused_columns=False)
    cb = mixture_callback(ds, "odm", update_step=4)
    trainer = Recording(model=LlamaForCausalLM(config), args=args, train_dataset=ds, eval_dataset=evals,
                        data_collator=hf_collate, callbacks=[cb, Crash()])
    trainer.train(resume_from_checkpoint=resume)
    return cb, seen


@pytest.mark.skipif(not HAS_TRANSFORMERS, reason="transformers is not installed")
@pytest.mark.parametrize("workers", [0, 2])
def test_hf_trainer_callback_switches_from_eval_losses(manifest, tmp_path, workers):
    cb, seen = hf_train(manifest, tmp_path / "hf" / "switches.jsonl", tmp_path / "out", workers)
    history = cb.updater.history
    assert [h["step"] for h in history] == [4, 8]
    # 4 steps * 2 accumulated batches done, + workers * prefetch 2, + accelerate's one batch ahead,
    # rounded up to a whole step of 2 batches
    expected = [10, 18] if workers == 0 else [14, 22]
    assert [h["applies_from_batch"] for h in history] == expected and [h["applies_from_step"] for h in history] == [b // 2 for b in expected]
    assert [s for s, _ in seen] == list(range(10 * 2 * 4))
    bounds = [(0, manifest.version)] + [(h["sample"], h["version"]) for h in history]
    for sample, version in seen:
        assert version == [v for start, v in bounds if start <= sample][-1], sample
    assert {v for _, v in seen} == {manifest.version, history[0]["version"]} | ({history[1]["version"]} if workers == 0 else set())


@pytest.mark.skipif(importlib.util.find_spec("lightning") is None and importlib.util.find_spec("pytorch_lightning") is None,
                    reason="neither lightning nor pytorch_lightning is installed (the `train` extra)")
@pytest.mark.parametrize("workers", [0, 2])
def test_lightning_callback_switches_from_step_losses(manifest, tmp_path, workers):
    try:
        import lightning.pytorch as pl
    except ImportError:
        import pytorch_lightning as pl

    from dagster_llmdata.mixture.in_trainer import lightning_mixture_callback

    torch.manual_seed(0)
    ds = MixtureDataset(manifest, batch_size=BATCH, columns=["id", "text"], limit=12 * BATCH, record=tmp_path / "pl" / "switches.jsonl")
    loader = torch.utils.data.DataLoader(ds, batch_size=BATCH, num_workers=workers, prefetch_factor=2 if workers else None,
                                         collate_fn=collate)
    seen = []

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = ByteModel()

        def training_step(self, batch, batch_idx):
            seen.extend(zip(batch["samples"], batch["versions"]))
            logits = self.model(batch["x"])
            per_row = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch["y"], reduction="none").mean(1)
            return {"loss": per_row.mean(), "domain_losses": domain_losses(per_row.detach(), batch["domains"])}

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.5)

    cb = lightning_mixture_callback(ds, "odm", update_step=3)  # workers and prefetch from the trainer's loader
    trainer = pl.Trainer(max_steps=12, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[cb])
    trainer.fit(Module(), loader)
    history = cb.updater.history
    assert [h["step"] for h in history] == [3, 6, 9, 12]
    check_switches(manifest, history, seen, 2 * 2 * bool(workers) + 1)  # Lightning's fetcher is one batch ahead


@pytest.mark.skipif(not HAS_TRANSFORMERS, reason="transformers is not installed")
def test_hf_trainer_resumed_from_a_checkpoint_switches_as_an_unbroken_run(manifest, tmp_path):
    whole, _ = hf_train(manifest, tmp_path / "a" / "switches.jsonl", tmp_path / "a" / "out", 0)
    record = tmp_path / "b" / "switches.jsonl"
    broken, _ = hf_train(manifest, record, tmp_path / "b" / "out", 0, stop_at=6)
    assert [h["step"] for h in broken.updater.history] == [4]
    assert (tmp_path / "b" / "out" / "checkpoint-6" / "mixture_updater.json").exists()
    resumed, _ = hf_train(manifest, record, tmp_path / "b" / "out", 0, resume=str(tmp_path / "b" / "out" / "checkpoint-6"))
    assert resumed.updater.history == whole.updater.history
    assert [(e["sample"], e["version"]) for e in read_record(record)] == \
        [(e["sample"], e["version"]) for e in read_record(tmp_path / "a" / "switches.jsonl")]
