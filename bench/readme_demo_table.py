"""Write README.md's demo table from a real `llmdata demo` run (never by hand).

    python bench/readme_demo_table.py                    # runs the demo in a scratch copy of assets/ + sensors/
    python bench/readme_demo_table.py --from demo.out    # or takes the table from a saved demo output

The block after the `<!-- demo-table ... -->` comment in README.md is replaced with the table the
demo printed; tests/e2e/test_readme.py fails when the two differ. Also prints the run's wall time
and the peak RSS of its largest process, the figures the README quotes beside the table."""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- demo-table[^\n]*-->\n```\n)(.*?)(^```)", re.S | re.M)


def demo_output() -> str:
    with tempfile.TemporaryDirectory(prefix="llmdata-readme-demo-") as tmp:
        root = Path(tmp)
        for folder in ("assets", "sensors"):
            shutil.copytree(REPO / folder, root / folder)
        env = {**os.environ, "DAGSTER_HOME": str(root / ".dagster_home")}
        env.pop("LLMDATA_PROJECT", None)
        start = time.perf_counter()
        res = subprocess.run([str(Path(sys.executable).parent / "llmdata"), "demo"], cwd=root, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if res.returncode != 0:
            raise SystemExit(f"llmdata demo failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"llmdata demo: {wall:.0f} s wall ({int(wall // 60)} min {wall % 60:.0f} s), largest process peak RSS {peak_mb:.0f} MB")
        return res.stdout


def table_of(output: str) -> str:
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("stage ") and " op " in line), None)
    if start is None:
        raise SystemExit("no stage table in the demo's output")
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return "\n".join(line.rstrip() for line in lines[start:end]) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from", dest="source", help="a saved `llmdata demo` stdout instead of a new run")
    ap.add_argument("--readme", default=str(REPO / "README.md"))
    args = ap.parse_args()
    table = table_of(Path(args.source).read_text() if args.source else demo_output())
    readme = Path(args.readme)
    text = readme.read_text()
    if not BLOCK.search(text):
        raise SystemExit(f"{readme}: no ``` block after a `<!-- demo-table -->` comment")
    readme.write_text(BLOCK.sub(lambda m: m.group(1) + table + m.group(3), text, count=1))
    print(table, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
