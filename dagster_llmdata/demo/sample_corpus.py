"""The built-in sample corpus: real text that is already on this machine (Python's own docs,
docstrings and stdlib source, Debian's package docs), with the duplicates, near-duplicates,
boilerplate and junk of a real crawl, written as landing files. No download."""

from __future__ import annotations

import ast
import gzip
import json
import random
import re
import sysconfig
from collections.abc import Iterator
from pathlib import Path

DEFAULT_DOCS = 20_000


def _stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = ("site-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__")
    return sorted(p for p in root.rglob("*.py") if not any(part in skip for part in p.relative_to(root).parts))


def python_docs() -> Iterator[dict]:
    """Sections of the language reference that pydoc ships (pydoc_data.topics)."""
    from pydoc_data.topics import topics

    for name in sorted(topics):
        for i, section in enumerate(re.split(r"\n(?=\S[^\n]*\n[=*-]{3,}\n)", topics[name])):
            if section.strip():
                yield {"text": section, "domain": "python_docs", "title": f"{name}#{i}"}


def docstrings_and_code(files: list[Path]) -> tuple[list[dict], list[dict]]:
    docs, code = [], []
    for path in files:
        try:
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        lines = source.splitlines()
        module_doc = ast.get_docstring(tree)
        if module_doc:
            docs.append({"text": module_doc, "domain": "docstrings", "title": path.stem})
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                doc = ast.get_docstring(node)
                if doc:
                    docs.append({"text": doc, "domain": "docstrings", "title": f"{path.stem}.{node.name}"})
                if isinstance(node, ast.ClassDef) or node.col_offset == 0:
                    body = "\n".join(lines[node.lineno - 1 : node.end_lineno])
                    if 3 <= body.count("\n") <= 400:
                        code.append({"text": body, "domain": "code", "title": f"{path.stem}.{node.name}"})
    return docs, code


def debian_docs(limit: int = 4000) -> Iterator[dict]:
    """Package changelogs (with their maintainers' e-mail addresses), copyright files (many
    identical licence texts) and READMEs from /usr/share/doc and the common licences."""
    base = Path("/usr/share/doc")
    n = 0
    for pkg in sorted(base.iterdir()) if base.is_dir() else []:
        for f in sorted(pkg.iterdir()) if pkg.is_dir() else []:
            if n >= limit:
                return
            try:
                if f.name.startswith("changelog") and f.suffix == ".gz":
                    with gzip.open(f) as fh:
                        raw = fh.read().decode("utf-8", "replace")
                    for entry in re.split(r"\n(?=\S+ \([^)]*\) )", raw)[:5]:
                        yield {"text": entry, "domain": "debian", "title": f"{pkg.name}/{f.name}"}
                        n += 1
                elif f.name == "copyright" or f.name.lower().startswith("readme") and f.suffix in ("", ".txt", ".md"):
                    yield {"text": f.read_text("utf-8", "replace"), "domain": "debian", "title": f"{pkg.name}/{f.name}"}
                    n += 1
            except OSError:
                continue
    licences = Path("/usr/share/common-licenses")
    for f in sorted(licences.iterdir()) if licences.is_dir() else []:
        if f.is_file():
            yield {"text": f.read_text("utf-8", "replace"), "domain": "debian", "title": f"licence/{f.name}"}


def html_pages(limit: int = 300) -> Iterator[tuple[str, str]]:
    """HTML from /usr/share/doc, topped up with pydoc's HTML rendering of stdlib modules."""
    n = 0
    for f in sorted(Path("/usr/share/doc").rglob("*.htm*")) if Path("/usr/share/doc").is_dir() else []:
        if n >= limit // 2:
            break
        try:
            yield f"{n:03d}_{f.parent.name}_{f.name}", f.read_text("utf-8", "replace")
            n += 1
        except OSError:
            continue
    import importlib
    import pydoc

    for name in ("json", "csv", "textwrap", "string", "heapq", "bisect", "fractions", "statistics", "shlex", "difflib",
                 "calendar", "colorsys", "fnmatch", "glob", "gzip", "hmac", "ipaddress", "keyword", "netrc", "pprint"):
        if n >= limit:
            break
        try:
            module = importlib.import_module(name)
            page = pydoc.html.page(pydoc.describe(module), pydoc.html.document(module, name))
        except Exception:  # a module pydoc can't render is simply not in the sample
            continue
        yield f"pydoc_{name}.html", page
        n += 1


def _cap(doc: dict, max_chars: int = 20_000) -> dict:
    text = doc["text"]
    if len(text) > max_chars:
        cut = text.rfind("\n\n", 0, max_chars)
        doc = {**doc, "text": text[: cut if cut > 0 else max_chars]}
    return doc


def _mojibake(text: str) -> str:
    return text.encode("utf-8").decode("latin-1", "replace")


def _near_duplicate(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    for _ in range(max(1, len(words) // 50)):
        i = rng.randrange(len(words))
        words[i] = words[i].upper() if rng.random() < 0.5 else words[i] + ","
    return " ".join(words)


def _junk(rng: random.Random, real: list[dict]) -> str:
    """Crawl junk made from real text: menus, symbol lines, log spam, coloured terminal output."""
    sample = rng.choice(real)["text"]
    words = sample.split()[:40] or ["menu"]
    kind = rng.randrange(5)
    if kind == 0:
        return " | ".join(w.capitalize() for w in words[:12])  # a navigation bar
    if kind == 1:
        return "\n".join("* " + w for w in words)  # a bullet list of single words
    if kind == 2:
        return "\n".join([sample.splitlines()[0] if sample.splitlines() else "x"] * rng.randint(10, 30))  # repeated line
    if kind == 3:
        return "".join(f"\x1b[3{rng.randrange(8)}m{w}\x1b[0m " for w in words)  # ANSI colour codes
    return "#" * rng.randint(20, 200)


def build_sample_corpus(dest: str | Path, n_docs: int = DEFAULT_DOCS, seed: int = 0) -> dict[str, int]:
    """Write the landing files of the sample corpus under `dest` (one source folder). Returns docs per file."""
    rng = random.Random(seed)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    docs, code = docstrings_and_code(_stdlib_files())
    real = {"python_docs": list(python_docs()), "docstrings": docs, "code": code, "debian": list(debian_docs())}
    # long changelogs/licences are cut at a paragraph break: a sample, not an archive
    real = {k: [_cap(d) for d in v] for k, v in real.items() if v}
    shares = {"python_docs": 0.08, "docstrings": 0.42, "code": 0.25, "debian": 0.25}
    total_share = sum(shares[k] for k in real)
    html = list(html_pages())
    n_text = max(0, n_docs - len(html))
    counts: dict[str, int] = {}
    for i, (domain, pool) in enumerate(real.items()):
        target = int(n_text * shares[domain] / total_share)
        if i == len(real) - 1:
            target = n_text - sum(counts.values())
        rows = _expand(pool, target, rng)
        counts.update(_write_jsonl(dest, domain, rows, rng, real_pool=pool))
    html_dir = dest / "html_pages"
    html_dir.mkdir(exist_ok=True)
    for name, page in html:
        (html_dir / name).write_text(page, encoding="utf-8")
    counts["html_pages"] = len(html)
    return counts


def _expand(pool: list[dict], target: int, rng: random.Random) -> list[dict]:
    """`target` docs from a pool of real ones: all of them first, then new documents stitched from
    paragraphs of random pool docs (how a bigger corpus is made for benchmarks)."""
    rows = [dict(d) for d in pool[:target]]
    while len(rows) < target:
        parts = []
        for d in rng.sample(pool, k=min(3, len(pool))):
            paras = d["text"].split("\n\n")
            start = rng.randrange(len(paras))
            parts.append("\n\n".join(paras[start : start + rng.randint(1, 3)]))
        rows.append({"text": "\n\n".join(parts), "domain": pool[0]["domain"], "title": "stitched"})
    return rows


def _write_jsonl(dest: Path, domain: str, rows: list[dict], rng: random.Random, real_pool: list[dict]) -> dict[str, int]:
    """One landing file per domain, with ~4% exact copies, ~4% near copies, ~3% junk, ~1% mojibake."""
    out: list[dict] = []
    for row in rows:
        out.append(row)
        r = rng.random()
        if r < 0.04:
            out.append(dict(row))
        elif r < 0.08:
            out.append({**row, "text": _near_duplicate(row["text"], rng)})
        elif r < 0.11:
            out.append({"text": _junk(rng, real_pool), "domain": domain, "title": "junk"})
        elif r < 0.12:
            out.append({**row, "text": _mojibake(row["text"])})
    rng.shuffle(out)
    out = out[: len(rows)]
    opener, name = (gzip.open, f"{domain}.jsonl.gz") if domain == "debian" else (open, f"{domain}.jsonl")
    with opener(dest / name, "wt", encoding="utf-8") as fh:
        for i, row in enumerate(out):
            fh.write(json.dumps({"id": f"{domain}-{i:07d}", **row}, ensure_ascii=False) + "\n")
    return {name: len(out)}


def write_bad_input(dest: str | Path) -> Path:
    """A landing file with the usual breakage, so the demo shows quarantine at work."""
    path = Path(dest) / "broken_export.jsonl"
    good = json.dumps({"id": "ok-1", "text": "A perfectly ordinary line of text that survives ingest.", "domain": "misc"})
    with open(path, "wb") as fh:
        fh.write((good + "\n").encode())
        fh.write(b'{"id": "trunc-1", "text": "a line cut off in the midd\n')
        fh.write(b'{"id": "bytes-1", "text": "caf\xe9 au lait in latin-1"}\n')
        fh.write(b'{"id": "notext-1", "body": "the text is under another key"}\n')
        fh.write(b'{"id": "empty-1", "text": "   "}\n')
        fh.write(b"[1, 2, 3]\n")
    return path
