"""The online registry: one Redis hash per project saying which version of each view lookups
read, and what each version holds.

    active:<view>                  the version lookups read
    schema:<view>:<version>        the version's ViewPlan, in the Plan's one description
    materialized:<view>:<version>  JSON: end_us, rows, finished_at_us

A version becomes active only after all of its keys are written."""

from __future__ import annotations

import json
import logging
from typing import Any

from featurestore.plan import ViewPlan
from featurestore.plan.plan import describe
from featurestore.values.timestamps import now_us

log = logging.getLogger("featurestore.online")


def parse(raw: dict[bytes, bytes]) -> dict[str, ViewPlan]:
    """The served version of each view. A version whose description cannot be read (written
    by an older release) is left out, so its view asks to be materialized again rather than
    being served from a guessed schema."""
    fields = {k.decode(): v.decode() for k, v in raw.items()}
    served = {}
    for field, version in fields.items():
        if not field.startswith("active:"):
            continue
        name = field.removeprefix("active:")
        try:
            served[name] = ViewPlan.from_description(json.loads(fields[f"schema:{name}:{version}"]))
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("online registry: cannot read view %r version %s (%r); materialize it "
                        "again", name, version, exc)
    return served


def activation(view: ViewPlan, end_us: int, rows: int) -> dict[str, Any]:
    """The registry fields that make `view`'s version the served one."""
    return {
        f"schema:{view.name}:{view.version}": json.dumps(describe(view), sort_keys=True),
        f"materialized:{view.name}:{view.version}": json.dumps(
            {"end_us": end_us, "rows": rows, "finished_at_us": now_us()}),
        f"active:{view.name}": view.version,
    }
