"""`llmdata mixture ...` commands."""

from __future__ import annotations

import csv

import numpy as np

from dagster_llmdata.cli.main import main

from ..mixture_helpers import mixture_project


def _csvs(tmp_path, n=200, noise_only=False):
    rng = np.random.default_rng(1)
    X = rng.dirichlet(np.ones(3), n)
    y = rng.normal(2.0, 0.1, n) if noise_only else ((X - np.array([0.2, 0.2, 0.6])) ** 2).sum(1) + 1.5
    (tmp_path / "m.csv").write_text("index,web,code,books\n" + "".join(f"run{i},{a},{b},{c}\n" for i, (a, b, c) in enumerate(X)))
    (tmp_path / "l.csv").write_text("index,val/books,val/web\n" + "".join(f"run{i},{v},0\n" for i, v in enumerate(y)))
    (tmp_path / "m2.csv").write_text("index,web,code,books\nx,0.2,0.2,0.6\ny,0.8,0.1,0.1\n")


def test_regmix_command_prints_mixture_and_spearman_and_predicts(tmp_path, capsys):
    _csvs(tmp_path)
    rc = main(["mixture", "regmix", "--mixtures", str(tmp_path / "m.csv"), "--losses", str(tmp_path / "l.csv"), "--target", "val/books",
               "--predict", str(tmp_path / "m2.csv"), "--out", str(tmp_path / "p.csv"), "--samples", "5000", "--top-k", "20"])
    out = capsys.readouterr().out
    assert rc == 0 and "cross-validated Spearman: 0." in out
    weights = {line.split()[0]: float(line.split()[1]) for line in out.splitlines() if line.startswith("  ")}
    assert set(weights) == {"web", "code", "books"} and max(weights, key=weights.get) == "books"
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert [r["index"] for r in rows] == ["x", "y"] and float(rows[0]["predicted"]) < float(rows[1]["predicted"])


def test_regmix_command_bad_input(tmp_path, capsys):
    _csvs(tmp_path)
    rc = main(["mixture", "regmix", "--mixtures", str(tmp_path / "m.csv"), "--losses", str(tmp_path / "l.csv"), "--target", "nope"])
    assert rc == 2 and "no target column 'nope'" in capsys.readouterr().err
    rc = main(["mixture", "regmix", "--mixtures", str(tmp_path / "missing.csv"), "--losses", str(tmp_path / "l.csv"), "--target", "x"])
    assert rc == 2 and "cannot read" in capsys.readouterr().err


def test_report_and_show_commands(tmp_path, capsys):
    store = str(tmp_path / "fb.sqlite")
    assert main(["mixture", "report", "r1", "10", "code=2.5", "prose=3", "--store", store]) == 0
    assert '"accepted": 2' in capsys.readouterr().out
    assert main(["mixture", "report", "r1", "11", "code=nan", "--store", store]) == 1
    assert "non_finite_loss" in capsys.readouterr().out
    assert main(["mixture", "report", "r1", "12", "code", "--store", store]) == 2
    root = mixture_project(tmp_path / "p")
    from dagster_llmdata.mixture.plan import plan
    from dagster_llmdata.spec.mixture import load_mixture_spec

    m = plan(load_mixture_spec(root / "assets" / "mix.yaml"), root)
    assert main(["mixture", "show", str(m.path.parent)]) == 0
    out = capsys.readouterr().out
    assert f"version {m.version}" in out and "prose" in out


def test_regmix_command_refuses_below_the_spearman_gate(tmp_path, capsys):
    _csvs(tmp_path, n=60, noise_only=True)  # losses unrelated to the mixtures: nothing to rank by
    rc = main(["mixture", "regmix", "--mixtures", str(tmp_path / "m.csv"), "--losses", str(tmp_path / "l.csv"), "--target", "val/books",
               "--samples", "2000", "--top-k", "16"])
    out, err = capsys.readouterr()
    assert rc == 2 and "mixture:" not in out
    assert "RegMix refused: cross-validated Spearman over 60 proxy runs is" in err and "below the gate 0.5" in err


def test_proxies_command_writes_capped_mixtures_regmix_reads(tmp_path, capsys):
    out = tmp_path / "proxies.csv"
    rc = main(["mixture", "proxies", "--tokens", '{"web": 900000, "code": 300000, "books": 20000}', "--budget", "400000",
               "--n", "32", "--out", str(out)])
    assert rc == 0 and "wrote 32 proxy mixtures over 3 domains" in capsys.readouterr().out
    rows = list(csv.DictReader(open(out, encoding="utf-8")))
    assert len(rows) == 32 and rows[0]["index"] == "proxy1"
    assert max(float(r["books"]) for r in rows) <= 20000 * 4 / 400000 + 1e-4  # books repeats at most 4 epochs
    rc = main(["mixture", "proxies", "--tokens", '{"a": 10, "b": 10}', "--budget", "1000", "--out", str(out)])
    assert rc == 2 and "without repeating some domain more than 4 epochs" in capsys.readouterr().err
