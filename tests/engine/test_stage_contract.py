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


def test_a_translator_that_renames_keys_renames_every_asset_dep_check_and_event(tmp_path, instance, prose):
    import dagster as dg

    from dagster_llmdata import StageTranslator, build_pipeline_assets, load_pipeline_spec
    from tests.conftest import PARTITION_B, one_source_project

    class Lake(StageTranslator):
        def get_asset_key(self, stage):
            return dg.AssetKey(["lake", stage.name])

    rows = [{"id": f"d{i}", "text": t} for i, t in enumerate(prose[:6] + prose[:2])]
    root = one_source_project(tmp_path, "renamed", [{"name": "normalized", "op": "normalize"}, {"name": "deduped", "op": "exact_dedup"}], rows)
    spec = load_pipeline_spec(root / "assets" / "renamed.yaml")
    default = {k for a in build_pipeline_assets(spec, root) for k in a.keys}
    assert default == {dg.AssetKey(["renamed", s]) for s in ("raw", "normalized", "deduped", "deduped__compared_with")}

    assets = build_pipeline_assets(spec, root, translator=Lake(spec))
    assert {k for a in assets for k in a.keys} == {dg.AssetKey(["lake", s]) for s in ("raw", "normalized", "deduped", "deduped__compared_with")}
    deps = {k: set(d) for a in assets for k, d in a.asset_deps.items()}
    assert deps[dg.AssetKey(["lake", "deduped"])] == {dg.AssetKey(["lake", "normalized"]), dg.AssetKey(["lake", "deduped__compared_with"])}
    assert {c.asset_key for a in assets for c in a.check_keys} == {dg.AssetKey(["lake", s]) for s in ("raw", "normalized", "deduped")}

    instance.add_dynamic_partitions("renamed_files", [PARTITION_B])
    result = dg.materialize(assets, partition_key=PARTITION_B, instance=instance)
    assert result.success
    materialised = {e.materialization.asset_key for e in result.get_asset_materialization_events()}
    assert materialised == {dg.AssetKey(["lake", s]) for s in ("raw", "normalized", "deduped", "deduped__compared_with")}
    checks = {(c.asset_key, c.check_name, c.passed) for c in result.get_asset_check_evaluations()}
    assert checks == {(dg.AssetKey(["lake", s]), "ledger_balances", True) for s in ("raw", "normalized", "deduped")}
