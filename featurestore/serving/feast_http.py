"""Feast's feature-server HTTP API beside gRPC (`featurestore serve --http-port P`): a
serving system written against Feast's `POST /get-online-features` switches by changing a URL.

The JSON request (`entities`, `features` or `feature_service`, `full_feature_names`; request
inputs travel in `entities`, as in Feast) becomes a GetOnlineFeaturesRequest answered by the
gRPC method itself (same checks, lookup, tokens and values); its response becomes Feast's JSON
(`metadata.feature_names`; `results`: the join keys, then one entry per feature with `values`,
`statuses` and `event_timestamps`). Also `GET /health`. A small HTTP/1.1 server on asyncio
streams (keep-alive, Content-Length bodies), so it needs no web framework."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc

from featurestore.definitions.types import Timestamp
from featurestore.errors import FeatureStoreError
from featurestore.plan import Plan, Selection
from featurestore.serving.client import FeatureServiceSchema, OnlineFeatures, encode_request
from featurestore.serving.request import Call, RequestError
from featurestore.serving.security import Refused, Tokens
from featurestore.serving.service import FeatureServer
from featurestore.values.status import Status

log = logging.getLogger("featurestore.serving")

# Feast's FieldStatus names for ours.
STATUS = {Status.PRESENT: "PRESENT", Status.NULL: "NULL_VALUE", Status.NOT_FOUND: "NOT_FOUND",
          Status.OUTSIDE_TTL: "OUTSIDE_MAX_AGE"}
HTTP_STATUS = {grpc.StatusCode.INVALID_ARGUMENT: 422, grpc.StatusCode.NOT_FOUND: 404,
               grpc.StatusCode.UNAUTHENTICATED: 401, grpc.StatusCode.PERMISSION_DENIED: 403,
               grpc.StatusCode.RESOURCE_EXHAUSTED: 413, grpc.StatusCode.FAILED_PRECONDITION: 409,
               grpc.StatusCode.UNAVAILABLE: 503, grpc.StatusCode.DEADLINE_EXCEEDED: 504}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_BODY = 64 << 20


class HttpError(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status


def feast_time(us: int) -> str:
    """A time as Feast's JSON writes it (protobuf's: Z, fractions only when not zero)."""
    moment = EPOCH + timedelta(microseconds=us)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond // 1000:03d}" if moment.microsecond % 1000 == 0 \
            else f".{moment.microsecond:06d}"
    return text + "Z"


def feature_ref(plan: Plan, ref: str) -> str:
    """Feast's `view:feature` for ours: a view's feature as is; `odfv:output` names the
    transform `odfv_output` (as `import-feast` names an output two views share) or else
    `output`."""
    view, _, name = ref.partition(":")
    if not name or view in plan.views:
        return ref
    for candidate in (f"{view}_{name}", name):
        if candidate in plan.transforms:
            return candidate
    return ref


class FeastHttp:
    """Answers Feast's online-features requests through `server.online_features`."""

    def __init__(self, server: FeatureServer, tokens: Tokens | None):
        self.server, self.tokens = server, tokens

    async def get_online_features(self, body: Any, authorization: str | None) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("entities"), dict):
            raise HttpError(422, "the body must be a JSON object with `entities` (column -> "
                                 "list of values) and `features` or `feature_service`")
        plan = self.server.plan
        service = body.get("feature_service") or None
        asked = [str(f) for f in body.get("features") or []]
        features = [feature_ref(plan, f) for f in asked]
        # Feast's (view, feature) per feature ref of ours, which name it in the response
        feast_refs = {ours: theirs.partition(":")[::2] for ours, theirs in zip(
            features, asked, strict=True) if ":" in theirs}
        try:
            selection = plan.select(service=service, features=features or None)
        except FeatureStoreError as exc:
            raise HttpError(404 if service else 422, str(exc)) from exc
        if self.tokens is not None:
            grant = self.tokens.check([("authorization", authorization)] if authorization
                                      else [])
            if not grant.may_read(service or ""):
                raise Refused(grpc.StatusCode.PERMISSION_DENIED,
                              f"token {grant.name!r} may not read {service or 'features'!r}")
        # Columns the selection does not read are left out, as Feast does with request data
        # of on-demand outputs not asked for; missing ones are refused by the gRPC method.
        columns: dict[str, list[Any]] = body["entities"]
        keys = {k: v for k, v in columns.items() if k in selection.join_keys}
        inputs = {k: v for k, v in columns.items() if k in selection.requests}
        request = encode_request(service, features, entities=keys, request=inputs,
                                 schema=FeatureServiceSchema(
                                     service or "", {}, selection.join_keys, selection.requests,
                                     [], "", True))
        answer = OnlineFeatures(await self.server.online_features(request, Call(None)))
        return _feast_response(answer, selection, keys, feast_refs,
                               bool(body.get("full_feature_names")))


def _feast_response(answer: OnlineFeatures, selection: Selection, keys: dict[str, list[Any]],
                    feast_refs: dict[str, tuple[str, str]], full_names: bool) -> dict[str, Any]:
    """`feast_refs`: the Feast (view, feature) of each feature ref asked for, which names it
    as Feast would (a feature service's transforms keep their own names)."""
    n = answer.num_entities
    zero = [feast_time(0)] * n
    names, results = [], []
    for key, values in keys.items():
        names.append(key)
        results.append({"values": list(values), "statuses": ["PRESENT"] * n,
                        "event_timestamps": zero})
    for output in selection.outputs:
        view = output.ref.split(":")[0] if ":" in output.ref else None
        owner, name = feast_refs.get(output.ref, (view, output.name))
        names.append(f"{owner}__{name}" if full_names and owner else name)
        statuses = answer.statuses[output.name].tolist()
        raw = answer.values[output.name]
        listed = raw if isinstance(raw, list) else raw.tolist()
        if output.dtype is Timestamp:
            listed = [feast_time(v) for v in listed]
        stamps = answer.event_timestamps.get(view) if view else None
        results.append({
            "values": [v if s == Status.PRESENT else None
                       for v, s in zip(listed, statuses, strict=True)],
            "statuses": [STATUS[Status(s)] for s in statuses],
            "event_timestamps": zero if stamps is None else [feast_time(int(t)) for t in stamps]})
    return {"metadata": {"feature_names": names}, "results": results}


async def start(server: FeatureServer, tokens: Tokens | None, host: str, port: int,
                reuse_port: bool) -> asyncio.Server:
    """Listens on host:port; close the returned server to stop."""
    api = FeastHttp(server, tokens)
    try:
        return await asyncio.start_server(lambda r, w: _connection(api, r, w), host, port,
                                          reuse_port=reuse_port or None)
    except OSError as exc:
        raise FeatureStoreError(f"cannot listen on {host}:{port} for HTTP: {exc}") from exc


async def _connection(api: FeastHttp, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = [*lines[0].split(" "), "", ""][:3]
            headers = {k.strip().lower(): v.strip() for k, _, v in
                       (line.partition(":") for line in lines[1:] if line)}
            length = int(headers.get("content-length") or 0)
            if length > MAX_BODY or "chunked" in headers.get("transfer-encoding", ""):
                await _send(writer, 413, {"detail": "send a Content-Length body under 64 MB"},
                            close=True)
                return
            body = await reader.readexactly(length)
            status, payload = await _route(api, method, target.split("?")[0], body, headers)
            close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
            await _send(writer, status, payload, close)
            if close:
                return
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def _route(api: FeastHttp, method: str, path: str, body: bytes,
                 headers: dict[str, str]) -> tuple[int, Any]:
    if path == "/health" and method == "GET":
        return 200, None
    if path != "/get-online-features":
        return 404, {"detail": "Not Found"}
    if method != "POST":
        return 405, {"detail": "Method Not Allowed"}
    return await _answer(lambda: api.get_online_features(json.loads(body),
                                                         headers.get("authorization")))


async def _answer(run: Callable[[], Any]) -> tuple[int, Any]:
    try:
        return 200, await run()
    except json.JSONDecodeError as exc:
        return 422, {"detail": f"the body is not JSON: {exc}"}
    except HttpError as exc:
        return exc.status, {"detail": str(exc)}
    except (RequestError, Refused) as exc:
        return HTTP_STATUS.get(exc.code, 500), {"detail": str(exc)}
    except FeatureStoreError as exc:  # a value the columns cannot hold
        return 422, {"detail": str(exc)}
    except Exception as exc:  # a bug: the caller gets 500, the log one line
        log.error("HTTP get-online-features failed", exc_info=exc)
        return 500, {"detail": f"internal error ({type(exc).__name__})"}


async def _send(writer: asyncio.StreamWriter, status: int, payload: Any, close: bool) -> None:
    data = b"" if payload is None else json.dumps(payload).encode()
    reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}.get(status, "Error")
    writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(data)}\r\n"
                 f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n".encode() + data)
    await writer.drain()
