"""The repo `feast init` creates (Feast 0.67), and its conversion by `featurestore
import-feast`, for the tests that compare both systems on it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def init_and_import(root: Path) -> tuple[Path, Path, str]:
    """(Feast's repo, the converted repo, what the import printed)."""
    subprocess.run([sys.executable, "-m", "feast.cli.cli", "init", "demo"], cwd=root,
                   check=True, capture_output=True)
    feast_repo = root / "demo" / "feature_repo"
    done = subprocess.run([sys.executable, "-m", "featurestore.cli", "import-feast",
                           str(feast_repo), "-o", str(root / "converted"), "--partial"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return feast_repo, root / "converted", done.stdout + done.stderr
