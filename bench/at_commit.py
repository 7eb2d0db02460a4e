"""Run a benchmark script (as it is now) against the armor-notify code of earlier commits.

This is how RESULTS.md's before/after tables are measured: the same harness, one machine, one
session, only the code under test changing. Each commit is checked out into a temporary git
worktree and put first on ``PYTHONPATH`` (its ``armor_notify/`` and its ``plugins/`` as
``armor_notify_plugins``), so the installed entry points load that commit's plugins. Commits run
one after another, never at once, so they do not compete for the machine.

    .venv/bin/python bench/at_commit.py 1c1fdfc HEAD -- bench_delivery.py --rounds 3
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, python_cmd


def run_at(rev: str, script: str, args: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="armor-bench-") as tmp:
        tree = Path(tmp, "tree")
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree),
                        rev], check=True)
        try:
            path = Path(tmp, "path")
            path.mkdir()
            (path / "armor_notify").symlink_to(tree / "armor_notify")
            (path / "armor_notify_plugins").symlink_to(tree / "plugins")
            env = {**os.environ, "PYTHONPATH": str(path)}
            print(f"=== {rev} ({_describe(rev)})", flush=True)
            return subprocess.run(python_cmd(script, *args), env=env, check=False).returncode
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                           check=False)


def _describe(rev: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h %s", rev],
                          capture_output=True, text=True, check=True).stdout.strip()[:100]


def main() -> None:
    argv = sys.argv[1:]
    if "--" not in argv:
        sys.exit(__doc__)
    split = argv.index("--")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revs", nargs="+", help="commits to measure, in order")
    revs = parser.parse_args(argv[:split]).revs
    script, *args = argv[split + 1:]
    failed = [rev for rev in revs if run_at(rev, script, args) != 0]
    if failed:
        sys.exit(f"failed at: {', '.join(failed)}")


if __name__ == "__main__":
    main()
