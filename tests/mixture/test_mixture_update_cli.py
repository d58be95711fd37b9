"""`llmdata mixture update`: replay a feedback file through DoReMi / ODM from the command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dagster_llmdata.cli.main import main
from dagster_llmdata.mixture import algorithms as alg


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


DOREMI_ROWS = [
    {"step": 10, "losses": {"code": [3.0, 1.0, 2.0], "prose": [2.0, 2.5]}, "reference": {"code": [2.0, 2.0, 1.0], "prose": [2.5, 2.5]}},
    {"step": 20, "losses": {"code": [2.0, 2.0], "prose": [3.0, 3.2, 2.0]}, "reference": {"code": [2.0, 1.5], "prose": [2.0, 2.0, 2.5]}},
    {"step": 30, "losses": {"code": [1.0], "prose": [2.8, 2.0]}, "reference": {"code": [1.5], "prose": [2.0, 2.0]}},
]


def _run(capsys, argv):
    rc = main(["mixture", "update", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_doremi_replay_prints_weights_average_and_state(tmp_path, capsys):
    fb = _write(tmp_path / "fb.jsonl", DOREMI_ROWS)
    rc, out, err = _run(capsys, ["--algorithm", "doremi", "--params", '{"eta": 0.5, "smoothing": 0.01}', "--losses", str(fb)])
    assert rc == 0 and err == ""
    res = json.loads(out)
    assert set(res) == {"weights", "average_weights", "state"}
    # the same replay through the library, from uniform over the domains seen
    s = alg.doremi_init(["code", "prose"])
    for r in DOREMI_ROWS:
        s = alg.doremi_update(s, r["losses"], r["reference"], eta=0.5, smoothing=0.01)
    assert res["weights"] == pytest.approx(s["weights"]) and res["average_weights"] == pytest.approx(s["average_weights"])
    assert res["state"]["t"] == 3 and res["state"]["excess_mode"] == "per_token"
    assert res["weights"]["prose"] > 0.5  # prose has the larger clipped excess


def test_continuing_from_a_state_equals_one_replay(tmp_path, capsys):
    whole = _write(tmp_path / "all.jsonl", DOREMI_ROWS)
    first, rest = _write(tmp_path / "a.jsonl", DOREMI_ROWS[:1]), _write(tmp_path / "b.jsonl", DOREMI_ROWS[1:])
    rc, out_all, _ = _run(capsys, ["--algorithm", "doremi", "--losses", str(whole)])
    rc1, out1, _ = _run(capsys, ["--algorithm", "doremi", "--losses", str(first)])
    (tmp_path / "state.json").write_text(out1)  # the whole previous output is accepted as a state
    rc2, out2, _ = _run(capsys, ["--algorithm", "doremi", "--state", str(tmp_path / "state.json"), "--losses", str(rest)])
    assert rc == rc1 == rc2 == 0
    assert json.loads(out2)["weights"] == pytest.approx(json.loads(out_all)["weights"])
    assert json.loads(out2)["average_weights"] == pytest.approx(json.loads(out_all)["average_weights"])
    rc3, _, err = _run(capsys, ["--algorithm", "odm", "--state", str(tmp_path / "state.json"), "--losses", str(rest)])
    assert rc3 == 2 and "the state is 'doremi''s, not 'odm''s" in err


def test_odm_replay_one_round_per_line_with_reported_probabilities(tmp_path, capsys):
    rows = [{"step": 1, "losses": {"code": 4.0}, "probabilities": {"code": 0.5}},
            {"step": 2, "losses": {"prose": 3.0}},
            {"step": 3, "losses": {"web": 5.0}, "probabilities": {"web": 0.2}}]
    fb = _write(tmp_path / "odm.jsonl", rows)
    rc, out, err = _run(capsys, ["--algorithm", "odm", "--losses", str(fb)])
    assert rc == 0, err
    res = json.loads(out)
    assert "average_weights" not in res and res["state"]["t"] == 3
    s = alg.odm_init(["code", "prose", "web"])
    s = alg.odm_update(s, {"code": 4.0}, probabilities={"code": 0.5}, step=1)
    s = alg.odm_update(s, {"prose": 3.0}, step=2)
    s = alg.odm_update(s, {"web": 5.0}, probabilities={"web": 0.2}, step=3)
    assert res["weights"] == pytest.approx(s["weights"]) and res["state"]["rewards"] == pytest.approx(s["rewards"])
    assert res["state"]["rewards"][0] == pytest.approx(0.4 / 0.5)


def test_domain_mean_losses_say_so(tmp_path, capsys):
    fb = _write(tmp_path / "fb.jsonl", [{"step": 1, "losses": {"a": 3.0, "b": 2.0}, "reference": {"a": 2.0, "b": 2.5}}])
    rc, out, err = _run(capsys, ["--algorithm", "doremi", "--losses", str(fb)])
    assert rc == 0 and "note: only per-domain mean losses were given" in err
    assert json.loads(out)["state"]["excess_mode"] == "domain_mean"


@pytest.mark.parametrize("line, message", [
    ('{"step": 2 "losses"}', "not JSON (Expecting ',' delimiter"),
    ('[1, 2]', "expected a JSON object"),
    ('{"step": "x", "losses": {"a": 1}}', "`step` must be an integer >= 0"),
    ('{"step": 1, "losses": {"a": 1}}', "step 1 is not after the previous report's step 1"),
    ('{"step": 2, "losses": {}}', "`losses` must be a non-empty object"),
    ('{"step": 2, "losses": {"a": "high"}}', "losses['a'] must be a finite number"),
    ('{"step": 2, "losses": {"a": 1}, "probabilities": {"a": 2}}', "`probabilities` must be"),
    ('{"step": 2, "loss": {"a": 1}}', "unknown keys ['loss']"),
])
def test_malformed_lines_name_file_and_line(tmp_path, capsys, line, message):
    fb = _write(tmp_path / "fb.jsonl", [{"step": 1, "losses": {"a": 1.0}}, "", line])
    rc, out, err = _run(capsys, ["--algorithm", "odm", "--losses", str(fb)])
    assert rc == 2 and out == ""
    assert err.startswith(f"llmdata mixture update: {fb}:3: ") and message in err and len(err.strip().splitlines()) == 1


def test_bad_params_state_and_missing_reference(tmp_path, capsys):
    fb = _write(tmp_path / "fb.jsonl", [{"step": 1, "losses": {"a": 1.0, "b": 2.0}}])
    rc, _, err = _run(capsys, ["--algorithm", "doremi", "--losses", str(fb)])
    assert rc == 2 and f"{fb}:1: DoReMi needs `reference` losses" in err
    rc, _, err = _run(capsys, ["--algorithm", "doremi", "--params", '{"etta": 1}', "--losses", str(fb)])
    assert rc == 2 and "doremi takes params ['eta', 'smoothing'], not ['etta']" in err
    rc, _, err = _run(capsys, ["--algorithm", "odm", "--params", "{bad", "--losses", str(fb)])
    assert rc == 2 and "--params is not JSON" in err
    rc, _, err = _run(capsys, ["--algorithm", "odm", "--state", str(tmp_path / "nope.json"), "--losses", str(fb)])
    assert rc == 2 and "cannot read" in err
    rc, _, err = _run(capsys, ["--algorithm", "odm", "--losses", str(tmp_path / "missing.jsonl")])
    assert rc == 2 and "cannot read" in err
    empty = _write(tmp_path / "empty.jsonl", [""])
    rc, _, err = _run(capsys, ["--algorithm", "odm", "--losses", str(empty)])
    assert rc == 2 and "no feedback lines" in err


def test_as_a_process_no_traceback(tmp_path):
    fb = _write(tmp_path / "fb.jsonl", [{"step": 1, "losses": {"a": 1.0}}, "{not json"])
    bad = subprocess.run([sys.executable, "-m", "dagster_llmdata.cli", "mixture", "update", "--algorithm", "odm", "--losses", str(fb)],
                         check=False, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and f"{fb}:2: not JSON" in bad.stderr
    good = _write(tmp_path / "ok.jsonl", [{"step": 1, "losses": {"a": 1.0}}, {"step": 2, "losses": {"b": 3.0}}])
    ok = subprocess.run([sys.executable, "-m", "dagster_llmdata.cli", "mixture", "update", "--algorithm", "odm", "--losses", str(good)],
                        check=False, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and sum(json.loads(ok.stdout)["weights"].values()) == pytest.approx(1)
