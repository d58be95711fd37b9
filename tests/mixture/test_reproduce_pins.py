"""`llmdata reproduce` checks every pinned input before it reads one (a changed file is named in one
line, never a pyarrow traceback), and a manifest pins its paths relative to the project root, so a
copied or moved project reproduces from where it is now (`--project`); old manifests with absolute
paths still read."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from dagster_llmdata.mixture.manifest import read_manifest, write_manifest
from dagster_llmdata.mixture.plan import plan
from dagster_llmdata.mixture.reproduce import reproduce
from dagster_llmdata.spec.mixture import load_mixture_spec
from tests.mixture_helpers import mixture_project

LLMDATA = str(Path(sys.executable).parent / "llmdata")


def _reproduce(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([LLMDATA, "reproduce", *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def _planned(root: Path):
    return plan(load_mixture_spec(root / "assets" / "mix.yaml"), root)


def test_changed_inputs_are_each_named_in_one_line(tmp_path):
    root = mixture_project(tmp_path / "proj")
    manifest = _planned(root)
    files = [f["path"] for f in manifest.inputs[0]["files"]]
    assert len(files) == 4 and not any(Path(p).is_absolute() for p in files)  # pinned relative to the project
    with open(root / files[0], "ab") as fh:  # one byte appended: the footer no longer ends the file
        fh.write(b"\0")
    (root / files[2]).unlink()
    out = _reproduce(str(manifest.path))
    assert out.returncode == 2 and "Traceback" not in out.stderr and "magic bytes" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 2, out.stderr
    assert str(root / files[0]) in lines[0] and "has changed since the manifest was written" in lines[0]
    assert str(root / files[2]) in lines[1] and "is gone" in lines[1]


def test_a_file_rewritten_with_the_same_size_is_caught_by_its_hash(tmp_path):
    root = mixture_project(tmp_path / "proj")
    manifest = _planned(root)
    path = root / manifest.inputs[0]["files"][1]["path"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different bytes
    path.write_bytes(bytes(data))
    out = _reproduce(str(manifest.path))
    assert out.returncode == 2 and out.stderr.strip() == f"llmdata reproduce: {path} has changed since the manifest was written (sha256)"


def test_a_copied_project_reproduces_from_its_new_place(tmp_path):
    original = mixture_project(tmp_path / "proj")
    manifest = _planned(original)
    assert reproduce(manifest.path)["matches"]
    copy = tmp_path / "elsewhere" / "proj-copy"
    shutil.copytree(original, copy)
    shutil.rmtree(original)
    copied = copy / manifest.path.relative_to(original)

    out = _reproduce(str(copied), "--project", str(copy), "--out", str(tmp_path / "stream.jsonl"))
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["matches"] and result["project"] == str(copy.resolve()) and result["version"] == manifest.version
    assert len((tmp_path / "stream.jsonl").read_text().splitlines()) == manifest.n_samples
    # without --project: the project the manifest lies in
    assert reproduce(copied)["matches"]
    # a manifest handed over alone resolves against --project, from any working directory
    alone = tmp_path / "handed-over.json"
    shutil.copy(copied, alone)
    out = _reproduce(str(alone), "--project", str(copy), cwd=tmp_path)
    assert out.returncode == 0 and json.loads(out.stdout)["matches"], out.stderr
    out = _reproduce(str(alone), cwd=tmp_path)  # no project to resolve against: each file named, one line
    assert out.returncode == 2 and "Traceback" not in out.stderr and "is gone" in out.stderr
    # --project that is not a project is one line too
    out = _reproduce(str(alone), "--project", str(tmp_path / "nowhere"))
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "not an llmdata project" in out.stderr


def test_old_manifests_with_absolute_paths_still_reproduce(tmp_path):
    root = mixture_project(tmp_path / "proj")
    manifest = _planned(root)
    for inp in manifest.inputs:  # the way manifests were written before paths were pinned relative
        for f in inp["files"]:
            f["path"] = str((root / f["path"]).resolve())
    old = write_manifest(manifest, tmp_path / "old")
    assert read_manifest(old).inputs[0]["files"][0]["path"].startswith("/")
    result = reproduce(old, project=tmp_path / "somewhere-else")
    assert result["matches"]
