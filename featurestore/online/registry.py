"""The online registry: one Redis hash per project saying which storage of each view lookups
read, and what each holds.

    active:<view>                  the storage lookups read, `<version>.<generation>`
    schema:<view>:<version>        the version's ViewPlan, in the Plan's one description
    materialized:<view>:<storage>  JSON: end_us, rows, finished_at_us
    generation:<view>              the last generation handed out (a counter)
    created:<view>:<storage>       when the storage was created: none of its keys is older;
                                   written before any of its keys, so every storage with keys
                                   is listed here until reclaimed
    reclaimed:<view>:<storage>     when (ms) every key of a superseded storage is gone: its
                                   keys were given that expiry (`OnlineStore.reclaim`)
    markers                        on a Redis Cluster, the token the slot markers hold
                                   (online/keys.py)
    token:<view>:<storage>         the markers' token when a row storage was created

A storage becomes active only after all of its keys are written, in one atomic step
(`OnlineStore.activate`)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from featurestore.online.keys import version_of_storage
from featurestore.plan import ViewPlan
from featurestore.plan.plan import describe
from featurestore.values.timestamps import now_us

log = logging.getLogger("featurestore.online")


@dataclass(frozen=True)
class Served:
    """A view as lookups read it: its version's plan and the storage holding its keys."""

    view: ViewPlan
    storage: str
    end_us: int | None  # END of the materialization that wrote the storage
    created_us: int | None  # when the storage was created (its oldest write)
    token: str | None = None  # a cluster's slot markers' token when it was created


def parse(raw: dict[bytes, bytes]) -> dict[str, Served]:
    """The served storage of each view. A version whose description cannot be read (written
    by an older release) is left out, so its view asks to be materialized again rather than
    being served from a guessed schema."""
    fields = {k.decode(): v.decode() for k, v in raw.items()}
    served = {}
    for field, storage in fields.items():
        if not field.startswith("active:"):
            continue
        name = field.removeprefix("active:")
        try:
            schema = fields[f"schema:{name}:{version_of_storage(storage)}"]
            view = ViewPlan.from_description(json.loads(schema))
            done = json.loads(fields.get(f"materialized:{name}:{storage}", "{}"))
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("online registry: cannot read view %r storage %s (%r); materialize it "
                        "again", name, storage, exc)
            continue
        created = fields.get(f"created:{name}:{storage}")
        served[name] = Served(view, storage, done.get("end_us"),
                              int(created) if created is not None else None,
                              fields.get(f"token:{name}:{storage}"))
    return served


def activation(view: ViewPlan, storage: str, end_us: int, rows: int) -> dict[str, Any]:
    """The registry fields that make `storage` of `view` the served one."""
    return {
        f"schema:{view.name}:{view.version}": json.dumps(describe(view), sort_keys=True),
        f"materialized:{view.name}:{storage}": json.dumps(
            {"end_us": end_us, "rows": rows, "finished_at_us": now_us()}),
        f"active:{view.name}": storage,
    }


def created(raw: dict[bytes, bytes], view: str) -> dict[str, int | None]:
    """Each storage of `view` the registry lists as created -> the time (ms) by which a
    reclaim had every key of it gone, or None when none has yet."""
    fields = {k.decode(): v.decode() for k, v in raw.items()}
    head = f"created:{view}:"
    storages = [f.removeprefix(head) for f in fields if f.startswith(head)]
    gone = {s: fields.get(f"reclaimed:{view}:{s}") for s in storages}
    return {s: int(at) if at is not None else None for s, at in gone.items()}
