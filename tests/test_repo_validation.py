"""Malformed definitions fail at load or compile time with the file, line and object named."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from repo_kit import PROFILE_DEFS, write_repo

from featurestore import FeatureStore
from featurestore.errors import CompileError, DefinitionError, FeatureStoreError


def load(root: Path) -> None:
    FeatureStore(root).plan  # noqa: B018 - loading and compiling is the point


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    write_repo(tmp_path, "x = 1\ndef broken(:\n    pass\n")
    with pytest.raises(DefinitionError, match=r"features\.py:2: syntax error"):
        load(tmp_path)


def test_failing_import_names_file_and_line(tmp_path: Path) -> None:
    write_repo(tmp_path, "import math\n\nimport no_such_module_here\n")
    with pytest.raises(DefinitionError, match=r"features\.py:3: .*ModuleNotFoundError.*no_such"):
        load(tmp_path)


def test_missing_config(tmp_path: Path) -> None:
    with pytest.raises(FeatureStoreError, match=r"featurestore\.yaml is missing"):
        FeatureStore(tmp_path)


def test_unknown_config_key(tmp_path: Path) -> None:
    write_repo(tmp_path)
    (tmp_path / "featurestore.yaml").write_text("project: p\nonline: x\n")
    with pytest.raises(FeatureStoreError, match=r"unknown keys \['online'\]"):
        FeatureStore(tmp_path)


def test_unknown_reference_suggests_the_close_name(tmp_path: Path) -> None:
    defs = PROFILE_DEFS.replace("features=[user_profile, amount_to_limit]",
                                "features=['user_profile:agee', amount_to_limit]")
    write_repo(tmp_path, defs)
    with pytest.raises(DefinitionError,
                       match=r"FeatureService 'fraud_v1' .*no feature 'agee' \(did you mean 'age'"):
        load(tmp_path)


def test_duplicate_names_name_both_places(tmp_path: Path) -> None:
    defs = PROFILE_DEFS + "\nother = Entity('user', join_keys={'uid': Int64})\n"
    write_repo(tmp_path, defs)
    with pytest.raises(DefinitionError, match=r"two entitys are named 'user'|two entity"):
        load(tmp_path)


def test_cycle_between_transforms(tmp_path: Path) -> None:
    defs = PROFILE_DEFS + """
@transform(inputs={"x": "b_t"}, output=Float64)
def a_t(x):
    return x

@transform(inputs={"x": "a_t"}, output=Float64)
def b_t(x):
    return x
"""
    write_repo(tmp_path, defs)
    with pytest.raises(DefinitionError, match=r"cycle: (a_t -> b_t -> a_t|b_t -> a_t -> b_t)"):
        load(tmp_path)


def test_annotation_that_contradicts_the_input_type(tmp_path: Path) -> None:
    defs = PROFILE_DEFS.replace("def amount_to_limit(amount, limit):",
                                "def amount_to_limit(amount: float, limit: str):")
    write_repo(tmp_path, defs)
    with pytest.raises(DefinitionError, match=r"'limit' is annotated str .* Float64"):
        load(tmp_path)


def test_request_declared_with_two_types(tmp_path: Path) -> None:
    defs = PROFILE_DEFS + """
@transform(inputs={"amount": Request("amount", Int64)}, output=Int64)
def doubled(amount):
    return amount * 2
"""
    write_repo(tmp_path, defs)
    with pytest.raises(DefinitionError, match=r"request input 'amount' is (Int64|Float64) here"):
        load(tmp_path)


def test_parameters_must_match_inputs(tmp_path: Path) -> None:
    defs = PROFILE_DEFS.replace('"limit": user_profile["credit_limit"]',
                                '"lim": user_profile["credit_limit"]')
    write_repo(tmp_path, defs)
    with pytest.raises(DefinitionError, match=r"transform 'amount_to_limit' .*must map each parameter"):
        load(tmp_path)


@pytest.mark.parametrize("bad_name", ["1user", "user-id", "__x", "a" * 64])
def test_invalid_names(tmp_path: Path, bad_name: str) -> None:
    write_repo(tmp_path, PROFILE_DEFS.replace('Entity("user"', f'Entity("{bad_name}"'))
    with pytest.raises(DefinitionError, match="not a valid name"):
        load(tmp_path)


@pytest.mark.parametrize("reference", ['user_profile["credit_limt"]', '"user_profile:credit_limt"'])
def test_a_misspelt_feature_reference_gets_its_line_and_a_suggestion(tmp_path: Path,
                                                                    reference: str) -> None:
    """Both ways to name a feature: `view["feature"]` and "view:feature"."""
    defs = PROFILE_DEFS.replace('user_profile["credit_limit"]', reference)
    write_repo(tmp_path, defs)
    line = next(i for i, text in enumerate(textwrap.dedent(defs).splitlines(), 1)
                if reference in text)
    with pytest.raises(DefinitionError) as refused:
        load(tmp_path)
    message = str(refused.value)
    assert f"features.py:{line}" in message, message
    assert "no feature 'credit_limt' (did you mean 'credit_limit'?)" in message


@pytest.mark.parametrize(("aggregate", "message"), [
    ('Aggregate("amount", "median", window="1d", hop="1h")', "unknown function 'median'"),
    ('Aggregate("amount", "sum", window="1d", hop="7h")', "must divide window"),
    ('Aggregate("amount", "sum", window="soon", hop="1h")', "not understood"),
])
def test_bad_aggregates(tmp_path: Path, aggregate: str, message: str) -> None:
    defs = PROFILE_DEFS.replace("from featurestore import", "from featurestore import Aggregate,")
    defs += f"\nspend = FeatureView('spend', entity=user, source=profiles, aggregates=[{aggregate}])\n"
    write_repo(tmp_path, defs)
    with pytest.raises(DefinitionError, match=message):
        load(tmp_path)


@pytest.mark.parametrize(("extra", "message"), [
    ("fields=[Field('age', Int64)], ", r"FeatureView 'spend' .*either fields= .* or aggregates="),
    ("ttl=timedelta(days=1), ", r"FeatureView 'spend' .*ttl= does not apply to windowed"),
])
def test_windowed_views_hold_only_aggregates(tmp_path: Path, extra: str, message: str) -> None:
    defs = PROFILE_DEFS.replace("from featurestore import", "from featurestore import Aggregate,")
    defs += ("\nspend = FeatureView('spend', entity=user, source=profiles, " + extra +
             "aggregates=[Aggregate('credit_limit', 'sum', window='7d', hop='1h')])\n")
    write_repo(tmp_path, defs)
    with pytest.raises(DefinitionError, match=message):
        load(tmp_path)


def test_transform_numba_cannot_compile(tmp_path: Path) -> None:
    defs = PROFILE_DEFS.replace("return amount / limit if limit > 0.0 else 0.0",
                                "return float(open('x').read()) + amount + limit")
    write_repo(tmp_path, defs)
    with pytest.raises(CompileError, match=r"transform 'amount_to_limit' .*amount_to_limit\(\)"):
        load(tmp_path)


def test_duplicate_feature_names_in_a_service(tmp_path: Path) -> None:
    defs = PROFILE_DEFS + """
others = FeatureView("others", entity=user, source=profiles, fields=[Field("age", Int64)])
both = FeatureService("both", features=[user_profile, others])
"""
    write_repo(tmp_path, defs)
    with pytest.raises(DefinitionError, match=r"two features are named 'age'"):
        load(tmp_path)


def test_created_role_is_checked() -> None:
    from featurestore import Source
    with pytest.raises(DefinitionError, match=r"created_role='tiebreak' must be one of "
                                              r"'visibility', 'tie_break'"):
        Source("s", path="d.parquet", timestamp="ts", created="cr", created_role="tiebreak")
    with pytest.raises(DefinitionError, match=r"created_role='tie_break' needs created="):
        Source("s", path="d.parquet", timestamp="ts", created_role="tie_break")
