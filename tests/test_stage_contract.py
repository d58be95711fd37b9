"""The stage contract's shape: no module special-cases the ingest operator (they ask
`SourceOperator`), and the Dagster description of a stage comes from one overridable translator."""

from __future__ import annotations

import ast
from pathlib import Path

import dagster_llmdata

PACKAGE = Path(dagster_llmdata.__file__).parent


def _ingest_checks(tree: ast.AST) -> list[int]:
    """Lines that compare against the name "ingest" or test a type against `Ingest`."""
    def names_ingest(node: ast.AST) -> bool:
        return any((isinstance(n, ast.Name) and n.id == "Ingest") or (isinstance(n, ast.Attribute) and n.attr == "Ingest")
                   for n in ast.walk(node))

    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(isinstance(n, ast.Constant) and n.value == "ingest" for side in sides for n in ast.walk(side)):
                lines.append(node.lineno)
            elif any(isinstance(op, (ast.Is, ast.IsNot, ast.Eq, ast.NotEq)) for op in node.ops) and any(map(names_ingest, sides)):
                lines.append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("isinstance", "issubclass"):
            if len(node.args) == 2 and names_ingest(node.args[1]):
                lines.append(node.lineno)
        elif isinstance(node, ast.MatchValue) and isinstance(node.value, ast.Constant) and node.value.value == "ingest":
            lines.append(node.lineno)
    return lines


def test_no_module_checks_for_the_ingest_operator_by_name_or_type():
    found = {str(p.relative_to(PACKAGE)): lines for p in sorted(PACKAGE.rglob("*.py"))
             if (lines := _ingest_checks(ast.parse(p.read_text(), str(p))))}
    assert found == {}


def test_the_ast_check_sees_the_forms_it_forbids():
    code = 'a = op == "ingest"\nb = "ingest" != stage.op\nc = isinstance(op, Ingest)\nd = issubclass(cls, (X, ingest.Ingest))\ne = type(op) is Ingest\n'
    assert _ingest_checks(ast.parse(code)) == [1, 2, 3, 4, 5]
