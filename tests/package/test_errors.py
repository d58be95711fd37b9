"""One error hierarchy: every exception class the library defines lives in errors.py and derives
from LlmdataError, so a caller can tell the library's refusals from bugs with one `except`."""

from __future__ import annotations

import ast
import builtins
import inspect
from pathlib import Path

import dagster_llmdata
from dagster_llmdata import errors

PACKAGE = Path(dagster_llmdata.__file__).parent
ERRORS_FILE = PACKAGE / "errors.py"


def _exception_names() -> set[str]:
    """Builtin exceptions plus everything errors.py defines: a base in this set makes a class an exception."""
    return {n for n, v in vars(builtins).items() if isinstance(v, type) and issubclass(v, BaseException)} | {
        n for n, v in vars(errors).items() if isinstance(v, type) and issubclass(v, BaseException)
    }


def _base_name(base: ast.expr) -> str:
    return base.attr if isinstance(base, ast.Attribute) else base.id if isinstance(base, ast.Name) else ""


def test_every_exception_class_is_defined_in_errors_py():
    exceptions = _exception_names()
    strays = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == ERRORS_FILE:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef) and any(_base_name(b) in exceptions for b in node.bases):
                strays.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.name}")
    assert not strays, "exception classes outside dagster_llmdata/errors.py:\n" + "\n".join(strays)


def test_every_error_derives_from_llmdata_error_and_keeps_its_builtin_base():
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__]
    assert len(classes) > 15
    for cls in classes:
        assert issubclass(cls, errors.LlmdataError), cls
    # callers that catch the builtin base keep working
    assert issubclass(errors.SpecError, ValueError) and issubclass(errors.StoreError, RuntimeError)
    assert issubclass(errors.RayRunIncomplete, errors.StageFailed)
    assert issubclass(errors.RepetitionWarning, UserWarning)
