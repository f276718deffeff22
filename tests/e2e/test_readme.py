"""The README's "The first hour" runs as written: its shell and Python blocks, in order, in a
fresh folder holding a copy of the example repo's definitions and data scripts. The only
substitutions are the ones the README states: the blocks run after `make install` (the first
block, which installs, is checked but not run) and with a free port in place of 6566."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from redis_kit import free_port

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## The first hour"


def blocks() -> list[tuple[str, str]]:
    text = (ROOT / "README.md").read_text()
    start = text.index(SECTION)
    end = text.index("\n## ", start + len(SECTION))
    return re.findall(r"```(sh|python)\n(.*?)```", text[start:end], flags=re.S)


def test_the_first_hour_runs_as_written(tmp_path: Path) -> None:
    found = blocks()
    assert [lang for lang, _ in found] == ["sh", "sh", "python", "sh", "python", "sh"]
    install, steps = found[0][1], found[1:]
    assert install.splitlines()[0].startswith("make install") and "activate" in install
    repo = tmp_path / "feature_repo"
    repo.mkdir()
    for name in ("features.py", "featurestore.yaml"):
        shutil.copy(ROOT / "feature_repo" / name, repo / name)
    shutil.copytree(ROOT / "feature_repo" / "datagen", repo / "datagen",
                    ignore=shutil.ignore_patterns("__pycache__"))
    port = str(free_port())
    env = {k: v for k, v in os.environ.items() if k != "FEATURESTORE_REDIS_URL"}
    env |= {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
            "COLUMNS": "250", "NO_COLOR": "1"}
    printed = []
    try:
        for lang, code in steps:
            code = code.replace("6566", port)
            command = ["bash", "-euo", "pipefail", "-c", code] if lang == "sh" else \
                [sys.executable, "-c", code]
            proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True,
                                  text=True, timeout=300)
            assert proc.returncode == 0, f"{lang} block failed:\n{code}\n{proc.stdout}\n{proc.stderr}"
            printed.append(proc.stdout)
    finally:
        pid = tmp_path / "serve.pid"
        if pid.is_file():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid.read_text()), signal.SIGTERM)
        subprocess.run([Path(sys.executable).parent / "featurestore", "redis", "stop",
                        "--repo", repo], env=env, capture_output=True, timeout=60)
    training, offline_python, online, client_python = printed[0], printed[1], printed[2], \
        printed[3]
    assert "statuses" in training and "amount_to_limit" in training
    assert "credit_limit" in offline_python and "amount_to_limit" in offline_python
    # data ending now: today's online values are there, not outside their ttl
    assert "credit_limit" in online and "OUTSIDE_TTL" not in online
    status_lines = [line for line in client_python.splitlines() if "PRESENT" in line]
    assert len(status_lines) == 2, client_python  # both users, with present values
    assert not (tmp_path / "feature_repo" / ".featurestore" / "redis" / "redis.pid").exists()
