"""Sources for the agent's tests: real text with planted problems, and a project around them."""

from __future__ import annotations

import random
from pathlib import Path

import yaml

from tests.conftest import write_jsonl


def agent_project(root: Path, **config) -> Path:
    """An empty project (assets/, sensors/) whose agent samples little, so dry runs are quick."""
    (root / "assets").mkdir(parents=True, exist_ok=True)
    (root / "sensors").mkdir(exist_ok=True)
    entry = {"type": "agent", "inbox": "agent/inbox", "sample_docs": 80, **config}
    (root / "sensors" / "agent.yaml").write_text(yaml.safe_dump({"sensors": [entry]}, sort_keys=False))
    return root


def pii_and_dups_source(folder: Path, prose: list[str], seed: int = 0) -> Path:
    """Real prose with e-mail addresses and phone numbers planted, exact copies and near copies."""
    rng = random.Random(seed)
    rows = []
    for i, text in enumerate(prose[:24]):
        if i % 3 == 0:
            text += f"\nContact maintainer{i}@example.org or call +1 415-555-{1000 + i:04d} for details."
        rows.append({"id": f"doc{i}", "text": text})
    for i in range(0, 24, 4):  # exact copies
        rows.append({"id": f"copy{i}", "text": rows[i]["text"]})
    for i in range(1, 24, 5):  # near copies: a few words changed
        words = rows[i]["text"].split(" ")
        for _ in range(3):
            j = rng.randrange(len(words))
            words[j] = words[j].upper()
        rows.append({"id": f"near{i}", "text": " ".join(words)})
    write_jsonl(folder / "part1.jsonl", rows)
    return folder


def write_intent(path: Path, **fields) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(fields, sort_keys=False))
    return path


def translated_texts(language: str, n_docs: int, words_per_doc: int = 120) -> list[str]:
    """Real text in `language` from the gettext catalogues installed on this machine (program
    messages translated by people), joined into documents; "en" gives the English originals."""
    import gettext

    messages: list[str] = []
    for mo in sorted(Path("/usr/share/locale").glob("de/LC_MESSAGES/*.mo")):
        other = Path(str(mo).replace("/de/", f"/{language}/")) if language != "en" else mo
        if not other.exists():
            continue
        with open(other, "rb") as fh:
            try:
                catalog = gettext.GNUTranslations(fh)._catalog  # msgid -> msgstr
            except (OSError, UnicodeDecodeError, ValueError):
                continue
        for msgid, msgstr in catalog.items():
            text = msgid if language == "en" else msgstr
            if msgid and isinstance(msgid, str) and isinstance(text, str) and len(text.split()) >= 8 and "%" not in text:
                messages.append(" ".join(text.split()))
    docs, chunk = [], []
    for m in messages:
        chunk.append(m if m.endswith((".", "!", "?")) else m + ".")
        if sum(len(c.split()) for c in chunk) >= words_per_doc:
            docs.append(" ".join(chunk))
            chunk = []
            if len(docs) >= n_docs:
                break
    return docs


def mixed_language_source(folder: Path, n_per_language: int = 30) -> Path:
    rows = [{"id": f"{lang}-{i}", "text": t} for lang in ("en", "de", "fr", "es")
            for i, t in enumerate(translated_texts(lang, n_per_language))]
    write_jsonl(folder / "messages.jsonl", rows)
    return folder


def code_source(folder: Path, n_docs: int = 80) -> Path:
    """Functions and classes of Python's own standard library, one per document."""
    from dagster_llmdata.demo.sample_corpus import _stdlib_files, docstrings_and_code

    _, code = docstrings_and_code(_stdlib_files()[:60])
    write_jsonl(folder / "stdlib.jsonl", [{"id": f"code-{i}", "text": c["text"]} for i, c in enumerate(code[:n_docs])])
    return folder


def html_source(folder: Path, n_pages: int = 40) -> Path:
    """Real HTML pages (pydoc's rendering of stdlib modules, Debian's HTML docs), one file each."""
    from dagster_llmdata.demo.sample_corpus import html_pages

    folder.mkdir(parents=True, exist_ok=True)
    for name, page in html_pages(n_pages):
        if not name.endswith(".gz"):
            (folder / name).write_text(page, encoding="utf-8")
    return folder
