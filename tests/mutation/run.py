"""The standing mutation check (`make mutate`): each mutation of `catalog.py` is applied to a
scratch copy of the repo, the tests that must kill it run there, and a table says which
mutations the suite killed. Exits 1 when one survived, or when a mutation no longer applies
(its code moved: fix the catalog, do not drop the mutation).

    .venv/bin/python tests/mutation/run.py [--only ID ...] [--list] [--json FILE]

Mutations of Numba kernels make the copy recompile its kernels (their on-disk caches are
dropped whenever a kernel source changes), so those runs take a minute or two each."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from catalog import MUTATIONS, Mutation

ROOT = Path(__file__).resolve().parents[2]
COPIED = ("featurestore", "tests", "feature_repo", "proto", "pyproject.toml")
IGNORED = shutil.ignore_patterns(".featurestore", "data", "pushed", ".pytest_cache", "*.partial")
TIMEOUT_S = 900
SEED = 20261201  # generated examples are the same every run: a survivor is not luck


def scratch_copy(into: Path) -> Path:
    """The repo's code and tests (not its venv, data or caches of repos) under `into`;
    Python and Numba caches are kept, so unmutated kernels need no compiling."""
    into.mkdir()
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, into / name, ignore=IGNORED)
        else:
            shutil.copy2(source, into / name)
    return into


def apply(copy: Path, m: Mutation) -> None:
    """Writes the mutant. The snippet must occur exactly once."""
    path = copy / m.file
    original = path.read_text()
    count = original.count(m.find)
    if count != 1:
        raise LookupError(f"{m.id}: {m.file} holds {count} copies of {m.find!r}; update the catalog")
    path.write_text(original.replace(m.find, m.replace))


def run_tests(copy: Path, m: Mutation) -> tuple[str, float, str]:
    """(killed | survived | timeout, seconds, the failing test's line)."""
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("FEATURESTORE_REDIS_URL", None)
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
               "--hypothesis-profile=mutation", f"--hypothesis-seed={SEED}",
               "--rootdir", str(copy), *m.tests]
    started = time.monotonic()
    try:
        done = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - started, ""
    seconds = time.monotonic() - started
    failed = next((line for line in done.stdout.splitlines() if line.startswith("FAILED")), "")
    if done.returncode == 0:
        return "survived", seconds, ""
    if done.returncode in (1,):  # tests failed: killed
        return "killed", seconds, failed
    return "error", seconds, (done.stdout + done.stderr)[-400:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="mutation ids to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if not args.only or m.id in args.only]
    if args.list:
        for m in chosen:
            print(f"{m.id:32} {m.file}: {m.why}")
        return 0
    results = []
    with tempfile.TemporaryDirectory(prefix="mutate-") as tmp:
        pristine = scratch_copy(Path(tmp) / "pristine")
        copy = Path(tmp) / "mutant"
        for i, m in enumerate(chosen, 1):
            # A fresh copy each time, file times included: Numba then reuses the pristine
            # kernels' caches everywhere but in what the mutation touched.
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(pristine, copy)
            try:
                apply(copy, m)
            except LookupError as exc:
                results.append({"id": m.id, "outcome": "stale", "seconds": 0.0, "detail": str(exc)})
                print(f"[{i}/{len(chosen)}] {m.id}: STALE ({exc})", file=sys.stderr)
                continue
            outcome, seconds, detail = run_tests(copy, m)
            results.append({"id": m.id, "outcome": outcome, "seconds": round(seconds, 1),
                            "detail": detail})
            print(f"[{i}/{len(chosen)}] {m.id}: {outcome} in {seconds:.0f} s", file=sys.stderr)
    print(f"\n{'mutation':32} {'outcome':9} {'s':>5}  killed by / detail")
    for r in results:
        print(f"{r['id']:32} {r['outcome']:9} {r['seconds']:5.0f}  {r['detail'][:100]}")
    bad = [r for r in results if r["outcome"] != "killed"]
    total = sum(r["seconds"] for r in results)
    print(f"\n{len(results) - len(bad)} of {len(results)} killed, {len(bad)} not; {total:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
