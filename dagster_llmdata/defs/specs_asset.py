"""The `specs` asset: shown only while some spec file of the project is broken. Its description
lists what did not load; its check re-reads the files when it runs and passes once they are fixed."""

from __future__ import annotations

import dagster as dg

from dagster_llmdata.spec.project import Project, read_project

SPECS_ASSET = dg.AssetKey("specs")


def specs_table(project: Project) -> str:
    rows = ["| file | state |", "| --- | --- |"]
    for name, path in sorted(project.files.items(), key=lambda kv: str(kv[1])):
        rows.append(f"| {path.relative_to(project.root)} | loaded ({name}) |")
    for problem in project.problems:
        rows.append(f"| {problem.path.relative_to(project.root)} | **broken**: {str(problem).replace('|', '/').replace(chr(10), '<br>')} |")
    return "\n".join(rows)


def build_specs_asset(project: Project) -> dg.AssetsDefinition:
    problems = "\n".join(f"- {p}" for p in project.problems) or "none"
    root = project.root

    @dg.asset(
        key=SPECS_ASSET, group_name="llmdata",
        description=f"The spec files in {root}/assets and {root}/sensors. Broken now:\n{problems}",
        metadata={"n_problems": len(project.problems), "specs": dg.MetadataValue.md(specs_table(project))},
        check_specs=[dg.AssetCheckSpec("specs_load", asset=SPECS_ASSET, description="Every spec file loads.")],
    )
    def specs():
        now = read_project(root)
        yield dg.MaterializeResult(
            metadata={"n_loaded": len(now.files), "n_problems": len(now.problems), "specs": dg.MetadataValue.md(specs_table(now))},
            check_results=[dg.AssetCheckResult(
                check_name="specs_load", passed=not now.problems, severity=dg.AssetCheckSeverity.WARN,
                description="; ".join(str(p) for p in now.problems)[:2000] or "every spec loads",
                metadata={"problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in now.problems) or "none")},
            )],
        )

    return specs
