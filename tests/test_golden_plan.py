"""The example repo's compiled Plan, serialized, against a reviewed golden copy: any change to a
hash or version shows up in review. Regenerate with UPDATE_GOLDEN=1 after an intended change."""

from __future__ import annotations

import json
import os
from pathlib import Path

from featurestore.plan import build_plan
from featurestore.repo import load_repo

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden" / "example_plan.json"


def test_example_plan_matches_the_golden_copy() -> None:
    config, defs = load_repo(ROOT / "feature_repo")
    plan = build_plan(config.project, defs, kernel_cache=None)
    text = json.dumps(plan.to_dict(), indent=2, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), (
        "the example repo's plan changed; if intended, rerun with UPDATE_GOLDEN=1 and review "
        "the diff of tests/golden/example_plan.json")
    # Versions are the hashes' prefixes, and the JSON round-trips.
    loaded = json.loads(text)
    for kind in ("entities", "sources", "feature_views", "transforms", "feature_services"):
        for spec in loaded[kind].values():
            assert spec["hash"].startswith(spec["version"]) and len(spec["version"]) == 12
