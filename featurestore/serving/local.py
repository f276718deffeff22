"""A request answered in this process: what a scientist's notebook gets from
FeatureStore.get_online_features, without a server. The server's own steps (request columns
read and checked, the lookup, the response encoding) over the synchronous online store, and
the client's result type, so the values, statuses and errors are the server's."""

from __future__ import annotations

from featurestore.errors import FeatureStoreError, RegistryMoved
from featurestore.online.lookup import Lookup
from featurestore.online.store import OnlineStore
from featurestore.plan import Plan
from featurestore.serving.proto import pb
from featurestore.serving.request import RequestError, read_columns
from featurestore.serving.wire import ResponseEncoder
from featurestore.values.timestamps import MAX_TIME_US, MIN_TIME_US, now_us


def answer(plan: Plan, online: OnlineStore, request: pb.GetOnlineFeaturesRequest) -> bytes:
    """The GetOnlineFeaturesResponse the server would send for `request`, as bytes."""
    selection = plan.select(service=request.feature_service or None,
                            features=list(request.features) or None)
    try:
        n, entities, inputs = read_columns(request, selection, limit=2**62)
    except RequestError as exc:
        raise FeatureStoreError(str(exc)) from None
    if not MIN_TIME_US <= request.as_of_us <= MAX_TIME_US:
        raise FeatureStoreError(f"as_of {request.as_of_us} is outside 0001-01-01 .. 9999-12-31")
    as_of_us = request.as_of_us or now_us()
    for attempt in range(2):  # a materialization may flip a view between the two reads
        lookup = Lookup(plan.project, plan, selection, online.served())
        try:
            result = online.read(lookup, entities, inputs, as_of_us)
            break
        except RegistryMoved:
            if attempt:
                raise
    return ResponseEncoder(selection, lookup.slots).encode(result, n, as_of_us)
