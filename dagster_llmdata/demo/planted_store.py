"""A labelled near-duplicate set for measuring dedup: real paragraphs that ship with Python (the
language reference in pydoc_data, stdlib docstrings), with near copies planted among them (word
substitutions, reordered sentences, paraphrase-like edits), each copy after its original. The
ground truth is which ids are copies and of what. Deterministic for a seed; no download."""

from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass
from dagster_llmdata.demo.sample_corpus import _stdlib_files, docstrings_and_code, python_docs

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z(`\"'])")
_WORD = re.compile(r"\w+")

# common words and a replacement that keeps the sense (a thesaurus the size of a postcard)
SYNONYMS = {
    "use": "employ", "used": "employed", "uses": "employs", "make": "create", "makes": "creates", "get": "obtain",
    "gets": "obtains", "show": "display", "shows": "displays", "start": "begin", "starts": "begins", "end": "finish",
    "ends": "finishes", "big": "large", "small": "little", "fast": "quick", "also": "additionally", "but": "however",
    "often": "frequently", "many": "numerous", "some": "certain", "give": "provide", "gives": "provides", "need": "require",
    "needs": "requires", "allow": "permit", "allows": "permits", "call": "invoke", "called": "invoked", "calls": "invokes",
    "change": "modify", "changes": "modifies", "changed": "modified", "help": "assist", "try": "attempt", "keep": "retain",
    "keeps": "retains", "find": "locate", "finds": "locates", "first": "initial", "last": "final", "whole": "entire",
    "return": "give back", "returns": "gives back", "returned": "given back", "value": "result", "values": "results",
    "list": "sequence", "usually": "typically", "must": "has to", "can": "may", "will": "shall", "only": "solely",
    "new": "fresh", "old": "previous", "same": "identical", "different": "distinct", "each": "every", "any": "whichever",
    "example": "instance", "because": "since", "if": "when", "following": "next", "above": "preceding", "below": "beneath",
    "way": "manner", "simple": "plain", "important": "significant", "correct": "right", "wrong": "incorrect",
    "create": "construct", "created": "constructed", "contains": "holds", "contain": "hold", "object": "item",
    "objects": "items", "function": "routine", "functions": "routines", "specified": "given", "means": "signifies",
}
PARAPHRASES = [
    ("in order to", "to"), ("is able to", "can"), ("a number of", "several"), ("as well as", "and"),
    ("for example", "for instance"), ("that is", "i.e."), ("is not", "isn't"), ("does not", "doesn't"),
    ("cannot", "can not"), ("it is", "it's"), ("there is", "there's"), ("such as", "like"), ("however,", "but"),
    ("in this case", "here"), ("at least", "no less than"), ("the same", "identical"),
]


@dataclass(frozen=True)
class PlantedSet:
    """`docs` in stream order ({id, text, kind}); `copies`: copy id -> id of its original."""

    docs: list[dict]
    copies: dict[str, str]

    def score(self, removed: set[str]) -> dict[str, float]:
        """Precision and recall of a dedup's removed ids against the planted copies."""
        planted = set(self.copies)
        hit = len(removed & planted)
        return {
            "precision": hit / len(removed) if removed else 1.0,
            "recall": hit / len(planted) if planted else 1.0,
            "removed": len(removed), "planted": len(planted), "true_positives": hit,
        }


@functools.lru_cache(maxsize=4)
def source_paragraphs(min_words: int = 30, max_words: int = 250, docstrings: bool = True) -> list[str]:
    """Distinct real paragraphs: the language reference's and the stdlib's docstrings' paragraphs
    of a readable length, with code blocks and near-identical paragraphs (5-gram overlap) left out,
    so that no planted copy has an unplanted twin."""

    texts = [d["text"] for d in python_docs()]
    if docstrings:  # parsing the stdlib takes a while: small sets do without
        texts += [d["text"] for d in docstrings_and_code(_stdlib_files())[0]]
    out, seen_shingles = [], {}
    for text in texts:
        for para in text.split("\n\n"):
            words = para.split()
            if not (min_words <= len(words) <= max_words) or para.lstrip().startswith((">>>", "   ")) or para.count("    ") > 3:
                continue
            clean = " ".join(words)
            shingles = {tuple(words[i : i + 5]) for i in range(len(words) - 4)}
            if any(len(shingles & s) > 0.2 * min(len(shingles), len(s)) for s in _candidates(shingles, seen_shingles)):
                continue
            for sh in list(shingles)[:4000]:
                seen_shingles.setdefault(sh, []).append(shingles)
            out.append(clean)
    return out


def _candidates(shingles: set, index: dict) -> list[set]:
    found: dict[int, set] = {}
    for sh in shingles:
        for other in index.get(sh, ()):
            found[id(other)] = other
    return list(found.values())


def substitute_words(text: str, rng: random.Random, rate: float = 0.12) -> str:
    def swap(m: re.Match) -> str:
        word = m.group(0)
        repl = SYNONYMS.get(word.lower())
        if repl is None or rng.random() > rate * 5:
            return word
        return repl.capitalize() if word[0].isupper() else repl

    out = _WORD.sub(swap, text)
    words = out.split()
    # and drop a few small words, as a rewrite does
    words = [w for w in words if not (w.lower() in {"the", "a", "an", "very", "just"} and rng.random() < rate)]
    return " ".join(words)


def reorder_sentences(text: str, rng: random.Random) -> str:
    sentences = _SENTENCE.split(text)
    if len(sentences) < 2:
        return substitute_words(text, rng)
    original = list(sentences)
    while sentences == original:
        rng.shuffle(sentences)
    return " ".join(sentences)


def paraphrase(text: str, rng: random.Random) -> str:
    out = text
    for a, b in PARAPHRASES:
        if a in out and rng.random() < 0.7:
            out = out.replace(a, b)
    out = substitute_words(out, rng, rate=0.08)
    sentences = _SENTENCE.split(out)
    if len(sentences) >= 4:  # drop one sentence of a longer paragraph
        del sentences[rng.randrange(1, len(sentences))]
    elif rng.random() < 0.5:
        sentences.append(rng.choice(["This is worth noting.", "See the reference for details.", "The same holds in general."]))
    return " ".join(sentences)


EDITS = {"substitution": substitute_words, "reorder": reorder_sentences, "paraphrase": paraphrase}


def planted_set(n_docs: int = 1800, copy_share: float = 1 / 6, seed: int = 0, docstrings: bool = True) -> PlantedSet:
    """`n_docs` paragraphs of which `copy_share` are planted near copies (the three edit kinds in
    turn), each placed after its original."""
    rng = random.Random(seed)
    n_copies = round(n_docs * copy_share)
    pool = source_paragraphs(docstrings=docstrings)
    if len(pool) < n_docs - n_copies:
        raise ValueError(f"only {len(pool)} distinct paragraphs are available; ask for at most {len(pool) + n_copies} docs")
    originals = rng.sample(pool, n_docs - n_copies)
    docs = [{"id": f"p{i:05d}", "text": t, "kind": "original"} for i, t in enumerate(originals)]
    copies: dict[str, str] = {}
    kinds = list(EDITS)
    for j in range(n_copies):
        src = rng.randrange(len(originals))
        kind = kinds[j % len(kinds)]
        text = EDITS[kind](originals[src], rng)
        copy_id = f"c{j:05d}"
        copies[copy_id] = f"p{src:05d}"
        # somewhere after its original
        pos = rng.randrange(src + 1, len(docs) + 1) if src + 1 <= len(docs) else len(docs)
        docs.insert(pos, {"id": copy_id, "text": text, "kind": kind})
    return PlantedSet(_after_originals(docs, copies), copies)


def _after_originals(docs: list[dict], copies: dict[str, str]) -> list[dict]:
    """Inserting shifts positions: move any copy that ended up before its original to just after it."""
    out: list[dict] = []
    waiting: dict[str, list[dict]] = {}
    placed: set[str] = set()
    for d in docs:
        orig = copies.get(d["id"])
        if orig is not None and orig not in placed:
            waiting.setdefault(orig, []).append(d)
            continue
        out.append(d)
        placed.add(d["id"])
        out.extend(waiting.pop(d["id"], []))
    return out


__all__ = ["PlantedSet", "planted_set", "source_paragraphs"]
