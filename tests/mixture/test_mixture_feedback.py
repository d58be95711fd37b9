"""The feedback store and its reporters (Python API, TensorBoard event files, HF TrainerCallback),
with the faults a trainer produces."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest

from dagster_llmdata.errors import EventFileError, FeedbackError, FeedbackStoreLocked
from dagster_llmdata import FeedbackStore
from dagster_llmdata import report
from dagster_llmdata.mixture.tensorboard import TensorBoardFeedback, read_scalars


@pytest.fixture
def store(tmp_path):
    s = FeedbackStore(tmp_path / "fb.sqlite")
    s.register_domains("mix", ["code", "prose"])
    return s


def test_report_and_read_back(store):
    res = report("r1", 10, {"code": 2.5, "prose": 3.0}, store=store, mixture="mix", mixture_version="v1", target_losses={"val": 2.9})
    assert res.ok and res.accepted == 3
    assert store.losses_at("r1") == {"code": 2.5, "prose": 3.0}
    assert store.losses_at("r1", kind="target") == {"val": 2.9}
    assert store.consumed("r1") == [(10, "v1")]
    assert [e.key for e in store.events_after(0)] == ["code", "prose", "val"]
    assert store.runs()[0]["last_step"] == 10 and store.runs()[0]["status"] == "running"
    store.end_run("r1")
    assert store.runs()[0]["status"] == "finished"


def test_bad_feedback_is_rejected_with_reasons_never_lost(store):
    res = store.report("r1", 5, {"code": float("nan"), "prose": float("inf"), "zz": 1.0}, mixture="mix")
    assert res.accepted == 0
    assert sorted(r.split(" ")[0] for _, r in res.rejected) == ["non_finite_loss", "non_finite_loss", "unknown_domain"]
    assert len(store.rejected("r1")) == 3 and store.count() == 0
    # duplicates: the same value again is ignored, a different one is a conflict
    assert store.report("r1", 6, {"code": 1.0}, mixture="mix").accepted == 1
    again = store.report("r1", 6, {"code": 1.0}, mixture="mix")
    assert again.accepted == 0 and again.duplicates == 1 and again.ok
    conflict = store.report("r1", 6, {"code": 1.5}, mixture="mix")
    assert "conflicting_duplicate" in conflict.rejected[0][1] and store.losses_at("r1") == {"code": 1.0}
    # steps going backwards are refused unless the trainer says it restarted from a checkpoint
    store.report("r1", 20, {"code": 0.9}, mixture="mix")
    back = store.report("r1", 15, {"code": 0.8}, mixture="mix")
    assert "step_backwards" in back.rejected[0][1] and store.runs()[0]["last_step"] == 20
    assert store.report("r1", 15, {"code": 0.8}, mixture="mix", restart=True).accepted == 1
    assert store.runs()[0]["last_step"] == 15
    for bad_run, bad_step in (("", 1), ("r", -1), ("r", 1.5), (None, 1)):
        with pytest.raises(FeedbackError):
            store.report(bad_run, bad_step, {"code": 1.0})


def test_locked_store_raises_clearly_and_writes_nothing(tmp_path):
    path = tmp_path / "fb.sqlite"
    FeedbackStore(path)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    try:
        with pytest.raises(FeedbackStoreLocked, match="locked by another writer.*nothing was written"):
            FeedbackStore(path, timeout=0.2).report("r1", 1, {"a": 1.0})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    s = FeedbackStore(path, timeout=0.2)
    assert s.count() == 0
    assert s.report("r1", 1, {"a": 1.0}).accepted == 1


def test_trainer_killed_mid_run_loses_nothing_it_reported(tmp_path):
    path = tmp_path / "fb.sqlite"
    script = textwrap.dedent(f"""
        import os, signal
        from dagster_llmdata import report
        for step in range(1, 10_000):
            report("dying", step, {{"a": 1.0 / step, "b": 2.0}}, store={str(path)!r})
            if step == 37:
                print("reported", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL and "reported" in proc.stdout
    s = FeedbackStore(path)
    assert s.count() == 74 and s.runs()[0]["last_step"] == 37
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _write_events(logdir, steps, new_style=False):
    from tensorboardX import SummaryWriter

    w = SummaryWriter(str(logdir))
    for step in steps:
        for tag, value in (("loss/code", 3.0 / step), ("loss/prose", 4.0 / step), ("target_loss", 5.0 / step), ("lr", 0.1)):
            if new_style:  # a scalar stored as a one-element float tensor, as newer writers do
                from tensorboardX.proto.summary_pb2 import Summary
                from tensorboardX.proto.tensor_pb2 import TensorProto

                tensor = TensorProto(dtype=1, float_val=[value])
                w._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, tensor=tensor)]), step)
            else:
                w.add_scalar(tag, value, step)
    w.close()
    return next(p for p in logdir.rglob("*tfevents*"))


@pytest.mark.parametrize("new_style", [False, True])
def test_tensorboard_reader_parses_real_event_files(tmp_path, new_style):
    path = _write_events(tmp_path / "tb" / "run-a", [1, 2, 4], new_style)
    scalars = [s for _, s in read_scalars(path)]
    got = {(s.step, s.tag): s.value for s in scalars}
    assert got[(2, "loss/code")] == pytest.approx(1.5) and got[(4, "lr")] == pytest.approx(0.1)
    store = FeedbackStore(tmp_path / "fb.sqlite")
    tb = TensorBoardFeedback(tmp_path / "tb", store, mixture="mix")
    res, problems = tb.poll()
    assert problems == [] and res.accepted == 9  # 3 steps x (2 domains + target); lr is not a loss
    assert store.losses_at("run-a") == {"code": pytest.approx(0.75), "prose": pytest.approx(1.0)}
    assert store.losses_at("run-a", kind="target") == {"target": pytest.approx(1.25)}
    assert tb.poll()[0].accepted == 0  # incremental: nothing new


def test_tensorboard_reader_waits_for_partial_records_and_flags_corruption(tmp_path):
    path = _write_events(tmp_path / "src", [1, 2, 3])
    data = path.read_bytes()
    run = tmp_path / "tb" / "r"
    run.mkdir(parents=True)
    target = run / path.name
    target.write_bytes(data[: len(data) * 2 // 3])  # the writer is mid-record
    store = FeedbackStore(tmp_path / "fb.sqlite")
    tb = TensorBoardFeedback(tmp_path / "tb", store)
    first, _ = tb.poll()
    target.write_bytes(data)  # the record completes
    second, _ = tb.poll()
    assert first.accepted + second.accepted == 9 and second.accepted >= 1
    bad = bytearray(data)
    bad[-3] ^= 0xFF
    (run / "events.out.tfevents.2.bad").write_bytes(bytes(bad))
    with pytest.raises(EventFileError, match="corrupt record"):
        list(read_scalars(run / "events.out.tfevents.2.bad"))
    assert "corrupt" in tb.poll()[1][0]


def test_hf_callback_reports_eval_losses(tmp_path):
    from dagster_llmdata.mixture.hf import feedback_callback

    store = FeedbackStore(tmp_path / "fb.sqlite")
    cb = feedback_callback("hf-run", store=store, mixture="mix", target_domain="prose")
    from transformers import TrainerCallback

    assert isinstance(cb, TrainerCallback)
    state = SimpleNamespace(global_step=40)
    cb.on_log(None, state, None, logs={"eval_code_loss": 2.0, "eval_prose_loss": 2.5, "loss": 3.1, "eval_runtime": 1.0})
    cb.on_evaluate(None, state, None, metrics={"eval_code_loss": 2.0, "eval_prose_loss": 2.5})  # the same numbers again
    cb.on_train_end(None, state, None)
    assert store.losses_at("hf-run") == {"code": 2.0, "prose": 2.5}
    assert store.losses_at("hf-run", kind="target") == {"target": 2.5}
    assert cb.results[1].duplicates == 3 and store.runs()[0]["status"] == "finished"


@pytest.mark.slow
def test_hf_callback_in_a_real_trainer(tmp_path):
    """A tiny GPT-2 built from a config (no download) trained by transformers' Trainer with one
    eval set per domain: the callback reports eval_<domain>_loss at each evaluation."""
    torch = pytest.importorskip("torch")
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    from dagster_llmdata.mixture.hf import feedback_callback

    class Tokens(torch.utils.data.Dataset):
        def __init__(self, seed, n=32):
            g = torch.Generator().manual_seed(seed)
            self.x = torch.randint(0, 50, (n, 16), generator=g)

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return {"input_ids": self.x[i], "labels": self.x[i]}

    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=1, n_head=2))
    store = FeedbackStore(tmp_path / "fb.sqlite")
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=6, per_device_train_batch_size=4, eval_strategy="steps",
                             eval_steps=3, logging_steps=3, report_to=[], use_cpu=True, save_strategy="no")
    trainer = Trainer(model=model, args=args, train_dataset=Tokens(0), eval_dataset={"code": Tokens(1), "prose": Tokens(2)},
                      callbacks=[feedback_callback("hf", store=store, mixture="mix")])
    trainer.train()
    events = store.events_after(0)
    assert {(e.step, e.key) for e in events} >= {(3, "code"), (3, "prose"), (6, "code"), (6, "prose")}
    assert store.runs()[0]["status"] == "finished"
