"""A planted near-duplicate corpus from real text already on this machine (docstrings of the
installed Python packages, manual pages, Python's reference), for measuring a dedup's precision
and recall with the ground truth known. Base documents are first made distinct from each other
(no pair above a low similarity), then a share of them gets copies with 1-8% of words replaced
by other real words. No download."""

from __future__ import annotations

import gzip
import random
import re
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from dagster_llmdata.dedup.minhash import MinhashScheme
from dagster_llmdata.dedup.near import find_near_duplicates, signatures_of
from dagster_llmdata.dedup.shingles import Shingler

_DOCSTRING = re.compile(r'"""(.*?)"""', re.S)
_GROFF_ESCAPE = re.compile(r"\\f[A-Z1-9]|\\f\(..|\\[-&|^ ]|\\\(..|\\\*.|\\s[-+]?\d")
_WS_TOKEN = re.compile(r"(\s+)")


def _docstrings() -> Iterator[str]:
    paths = sysconfig.get_paths()
    for root in dict.fromkeys([paths["stdlib"], paths["purelib"]]):
        for p in sorted(Path(root).rglob("*.py")):
            try:
                source = p.read_text("utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            for m in _DOCSTRING.finditer(source):
                yield m.group(1)


def _man_pages() -> Iterator[str]:
    # English pages first, then their translations (real text too)
    for p in sorted(Path("/usr/share/man").glob("man[1-8]/*.gz")) + sorted(Path("/usr/share/man").glob("*/man[1-8]/*.gz")):
        try:
            raw = gzip.open(p).read().decode("utf-8", "replace")
        except (OSError, EOFError):
            continue
        # a macro line (.PP, .SH, .TP, ...) ends a paragraph
        lines = ["" if line.startswith((".", "'")) else _GROFF_ESCAPE.sub("", line) for line in raw.splitlines()]
        yield "\n\n".join(p.strip() for p in "\n".join(lines).split("\n\n") if p.strip())


def _reference() -> Iterator[str]:
    from pydoc_data.topics import topics

    yield from topics.values()


def real_texts(min_words: int = 30, max_words: int = 200) -> Iterator[str]:
    """Pieces of real text of `min_words`..`max_words` words (long texts are cut at paragraph
    breaks), exact repeats left out."""
    seen: set[int] = set()
    for source in (_reference(), _docstrings(), _man_pages()):
        for text in source:
            piece: list[str] = []
            for para in re.split(r"\n\s*\n", text):
                piece.append(para.strip())
                n = sum(len(p.split()) for p in piece)
                if n >= max_words // 2:
                    out, piece = "\n\n".join(piece), []
                    if min_words <= n <= max_words and hash(out) not in seen:
                        seen.add(hash(out))
                        yield out
            rest = "\n\n".join(piece)
            if min_words <= len(rest.split()) <= max_words and hash(rest) not in seen:
                seen.add(hash(rest))
                yield rest


def distinct_texts(n: int, seed: int = 0) -> list[str]:
    """`n` real texts no two of which are near each other (character 5-gram Jaccard below 0.3,
    checked exactly on every candidate of a sensitive LSH): base docs that are never duplicates."""

    pool = []
    for text in real_texts():
        pool.append(text)
        if len(pool) >= 2 * n:
            break
    random.Random(seed).shuffle(pool)
    scheme = MinhashScheme(Shingler("char", 5), bands=25, rows=2, seed=seed + 7)
    sig = signatures_of(scheme, (pool[i : i + 512] for i in range(0, len(pool), 512)))
    verdict = find_near_duplicates(scheme, 0.3, sig, [str(i) for i in range(len(pool))], lambda o: [pool[int(i)] for i in o], [])
    out = [t for t, keep in zip(pool, verdict.kept) if keep]
    if len(out) < n:
        raise ValueError(f"only {len(out)} distinct real texts on this machine; asked for {n}")
    return out[:n]


def substitute_words(text: str, rate: float, vocabulary: list[str], rng: random.Random) -> str:
    """`text` with round(rate * words) of its words (at least one) replaced by random real words,
    layout kept."""
    tokens = _WS_TOKEN.split(text)
    words = [i for i in range(0, len(tokens), 2) if tokens[i]]
    for i in rng.sample(words, max(1, round(rate * len(words)))):
        tokens[i] = rng.choice(vocabulary)
    return "".join(tokens)


@dataclass(frozen=True)
class PlantedDoc:
    id: str
    text: str
    group: int  # docs with the same group are one original and its planted copies


def planted_corpus(n_docs: int, copy_share: float = 0.1, rate: tuple[float, float] = (0.01, 0.08), seed: int = 0) -> list[PlantedDoc]:
    """`n_docs` documents in random order: distinct real texts plus, for `copy_share` of them, a
    copy with a uniform `rate` of words substituted."""
    rng = random.Random(seed)
    n_copies = int(n_docs * copy_share)
    base = distinct_texts(n_docs - n_copies, seed)
    vocabulary = [w for t in base[:2000] for w in t.split()]
    docs = [PlantedDoc(f"base-{i}", t, i) for i, t in enumerate(base)]
    docs += [PlantedDoc(f"copy-{i}", substitute_words(base[i], rng.uniform(*rate), vocabulary, rng), i) for i in range(n_copies)]
    rng.shuffle(docs)
    return docs


def precision_recall(docs: list[PlantedDoc], dropped: dict[str, str | None]) -> dict[str, float]:
    """`dropped`: id -> kept_id for every dropped doc. A drop is right when the kept doc is of the
    same group; recall is over the planted copies (one doc per group should stay)."""
    group = {d.id: d.group for d in docs}
    right = sum(1 for doc_id, kept in dropped.items() if kept is not None and group.get(kept) == group[doc_id])
    planted = len(docs) - len(set(group.values()))
    return {
        "precision": right / len(dropped) if dropped else 1.0,
        "recall": right / planted if planted else 1.0,
        "dropped": len(dropped),
        "planted": planted,
    }
