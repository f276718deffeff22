"""Compiles definitions into a Plan: hashes, schemas and Numba kernels.

Imports definitions/ and repo; imported by offline/, online/ and serving/, never the reverse."""

from featurestore.plan.numba_cache import drop_stale
from featurestore.plan.plan import (
    OutputFeature,
    Plan,
    Selection,
    SourcePlan,
    TransformPlan,
    ViewPlan,
    build_plan,
)

__all__ = [
    "OutputFeature",
    "Plan",
    "Selection",
    "SourcePlan",
    "TransformPlan",
    "ViewPlan",
    "build_plan",
]

drop_stale()  # imports compile nothing; kernels load their caches when first run
