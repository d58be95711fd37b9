"""Per-document text operators: normalize, pii_redact, extract_html."""

from __future__ import annotations

import ipaddress
import re
import signal
from typing import Literal

from datatrove.data import Document
from datatrove.pipeline.extractors.base import ExtractorSandbox
from pydantic import Field

from dagster_llmdata.operators.base import DocFunction, Operator
from dagster_llmdata.config import OperatorParams

ANSI_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
# C0/C1 control characters except tab and newline
CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
INLINE_SPACE = re.compile(r"[ \t\u00a0\u2000-\u200b\u3000]+")
BLANK_LINES = re.compile(r"\n{3,}")


class NormalizeParams(OperatorParams):
    fix_unicode: bool = Field(True, description="Repair mojibake and broken Unicode with ftfy, then NFC-normalize.")
    strip_ansi: bool = Field(True, description="Remove ANSI terminal escape sequences (colours, cursor moves).")
    strip_control: bool = Field(True, description="Remove control characters other than tab and newline; CRLF and CR become newlines.")
    normalize_whitespace: bool = Field(True, description="Collapse runs of spaces within a line, trim lines, keep at most one blank line in a row.")


class NormalizeFn(DocFunction):
    def __init__(self, params: NormalizeParams):
        super().__init__()
        self.params = params

    def __call__(self, doc: Document):
        p, text = self.params, doc.text
        before = text
        if p.strip_ansi:
            text = ANSI_ESCAPE.sub("", text)
        if p.fix_unicode:
            import ftfy

            text = ftfy.fix_text(text, normalization="NFC")
        if p.strip_control:
            text = CONTROL_CHARS.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
        if p.normalize_whitespace:
            text = "\n".join(INLINE_SPACE.sub(" ", line).strip() for line in text.split("\n"))
            text = BLANK_LINES.sub("\n\n", text).strip()
        if text != before:
            self.counters["docs_changed"] += 1
        doc.text = text
        return (False, "empty_after_normalize") if not text else True


class Normalize(Operator):
    name = "normalize"
    version = "1"
    description = (
        "Fix broken Unicode and mojibake (ftfy, NFC), remove ANSI escape sequences and control characters, "
        "collapse runs of spaces and blank lines. Docs left empty are rejected as empty_after_normalize."
    )
    Params = NormalizeParams

    def doc_fn(self):
        return NormalizeFn(self.params)

    def metadata_from_stats(self, stats):
        return {"docs_changed": int(_step_stat(stats, self.name, "docs_changed"))}


EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,24}\b")
# octets without leading zeros: "14.02.28.02" is a date, and ipaddress refuses such strings
IPV4 = re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b")
# international or North-American style numbers with separators; bare digit runs are left alone
PHONE = re.compile(
    r"(?<![\w.+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]\d{3,4}(?!\w|[.-]\d)"
)


class PiiParams(OperatorParams):
    kinds: list[Literal["email", "ip", "phone"]] = Field(["email", "ip", "phone"], description="Which kinds of personal data to replace.")
    email_replacement: str = Field("<EMAIL>", description="Text put in place of each e-mail address.")
    ip_replacement: str = Field("<IP_ADDRESS>", description="Text put in place of each IPv4 address.")
    phone_replacement: str = Field("<PHONE>", description="Text put in place of each phone number.")
    keep_private_ips: bool = Field(True, description="Leave loopback, private and other non-public IP addresses as they are.")


class PiiFn(DocFunction):
    def __init__(self, params: PiiParams):
        super().__init__()
        self.params = params

    def _ip(self, m: re.Match) -> str:
        if self.params.keep_private_ips:
            addr = ipaddress.ip_address(m.group(0))
            if not addr.is_global:
                return m.group(0)
        self.counters["pii_ip"] += 1
        return self.params.ip_replacement

    def __call__(self, doc: Document):
        p, text = self.params, doc.text
        if "email" in p.kinds:
            text, n = EMAIL.subn(p.email_replacement, text)
            self.counters["pii_email"] += n
        if "ip" in p.kinds:
            text = IPV4.sub(self._ip, text)
        if "phone" in p.kinds:
            text, n = PHONE.subn(p.phone_replacement, text)
            self.counters["pii_phone"] += n
        if text != doc.text:
            self.counters["docs_redacted"] += 1
        doc.text = text
        return True


class PiiRedact(Operator):
    name = "pii_redact"
    version = "2"
    description = (
        "Replace e-mail addresses, public IP addresses and phone numbers with placeholders. Keeps every doc; "
        "counts per kind go to metadata."
    )
    Params = PiiParams

    def doc_fn(self):
        return PiiFn(self.params)

    def metadata_from_stats(self, stats):
        return {k: int(_step_stat(stats, self.name, k)) for k in ("pii_email", "pii_ip", "pii_phone", "docs_redacted")}


HTML_HINT = re.compile(r"<\s*(?:html|body|div|p|article|head|table|span)\b", re.I)


class ExtractParams(OperatorParams):
    only_html: bool = Field(True, description="Pass docs that do not look like HTML through untouched.")
    favour_precision: bool = Field(True, description="Ask trafilatura to leave out doubtful parts (menus, boilerplate) rather than risk keeping them.")
    timeout: float = Field(5.0, gt=0, description="Seconds one page may take to extract; a page that takes longer is quarantined.")


class QuietSandbox(ExtractorSandbox):
    """datatrove's extractor sandbox, with a child that SIGTERM (how the sandbox stops a child on a
    timeout) kills outright. A forked child inherits the parent's handlers, and in a Dagster step
    that is Dagster's interrupt handler: it raised in the child and unwound the parent's cleanup
    there. SIGTERM stays blocked from the fork until the child has its default action back, so
    even a child stopped while it starts up dies quietly; a SIGTERM sent to the parent meanwhile
    reaches it once the child is up."""

    def _ensure_process(self, extract_fn):
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        try:
            super()._ensure_process(extract_fn)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def _worker(self, conn, extract_fn):  # runs in the child
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        super()._worker(conn, extract_fn)


class ExtractFn(DocFunction):
    """trafilatura through datatrove's extractor, in its sandbox process so a pathological
    page times out instead of hanging the stage."""

    def __init__(self, params: ExtractParams):
        super().__init__()
        self.params = params
        self._sandbox = None

    def __enter__(self):
        from datatrove.pipeline.extractors import Trafilatura

        self._extractor = Trafilatura(favour_precision=self.params.favour_precision, timeout=self.params.timeout)
        self._sandbox = QuietSandbox(timeout=self.params.timeout, warmup_text="")
        self._sandbox.__enter__()
        return self

    def __exit__(self, *exc):
        if self._sandbox is not None:
            self._sandbox.__exit__(*exc)
            self._sandbox = None

    def __call__(self, doc: Document):
        if self.params.only_html and not HTML_HINT.search(doc.text[:5000]):
            return True
        text = self._sandbox.process_document(doc.text, self._extractor.extract)
        self.counters["extracted"] += 1
        if not text or not text.strip():
            return False, "no_main_text"
        doc.text = text
        return True


class ExtractHtml(Operator):
    name = "extract_html"
    version = "1"
    description = (
        "Turn HTML into its main text with trafilatura (datatrove's extractor, with a timeout per doc). "
        "Non-HTML docs pass through; pages with no main text are rejected as no_main_text."
    )
    Params = ExtractParams

    def doc_fn(self):
        return ExtractFn(self.params)

    def metadata_from_stats(self, stats):
        return {"extracted": int(_step_stat(stats, self.name, "extracted"))}


def _step_stat(stats: dict[str, dict[str, float]], operator: str, key: str) -> float:
    """Sum a stat over the routed steps of one operator."""
    return sum(v.get(key, 0.0) for name, v in stats.items() if name.startswith(f"{operator} ("))

