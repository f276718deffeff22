"""Online benchmark: materialization into Redis, then gRPC serving latency and throughput, each
beside a bare grpc.aio echo server measured in the same run.

The online targets (DESIGN.md) are relative to the machine's gRPC floor, so the floor is
measured here rather than quoted: a bare asyncio gRPC server that returns its request bytes,
called from the same client process, alternating with ours in blocks, so that a busy shared
machine slows both alike. Latency is end to end from a separate client process through
`featurestore.Client`, which is what a Python serving system pays; `ours_raw` sends the same
requests pre-encoded through a raw channel and does not parse the response, which separates
server + transport from client-side encoding and decoding.

    .venv/bin/python benchmarks/online.py [--quick] [--out FILE] [--workdir DIR]

Everything it starts (redis-server, `featurestore serve`, echo servers, client processes) is
stopped on exit, errors included. Prints one JSON object to stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import duckdb
import grpc
import harness
import numba
import numpy as np
import polars as pl
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from harness import busy_cpu, feature_column, log

from featurestore import Client, FeatureStore
from featurestore.plan.status import STATUS_NAMES, Status
from featurestore.serving.proto import method, pb

SEED = 20240617
END = datetime(2025, 7, 1, tzinfo=UTC)  # data ends here; requests and materialization use it
END_US = int(END.timestamp()) * 1_000_000
YEAR_US = 365 * 24 * 3600 * 1_000_000
KEYS = 100_000
EXTRA_ROWS = 200_000  # rows beyond one per key: entities have 1 to several versions
KEY_RANGE = 110_000  # requests draw keys from [0, KEY_RANGE): about 9% are not found
PROJECT = "bench_online"
SERVICE = "bench_50"
SERVICE_T3 = "bench_50_t3"
TARGET_SERVICE = SERVICE_T3  # DESIGN.md's latency target names 3 request-time transforms
ECHO_METHOD = "/bench.Echo/Echo"
OURS_METHOD = method("GetOnlineFeatures")

# 50 features: mostly Float64, as real feature sets are, plus every other column type.
COLUMNS: dict[str, str] = {
    **{f"f_{i:02d}": "Float64" for i in range(40)},
    **{f"i_{i:02d}": "Int64" for i in range(4)},
    **{f"b_{i:02d}": "Bool" for i in range(2)},
    **{f"s_{i:02d}": "String" for i in range(2)},
    **{f"t_{i:02d}": "Timestamp" for i in range(2)},
}
# Two views over one source, columns dealt alternately: a lookup reads two rows per entity.
VIEW_TTL_DAYS: dict[str, int | None] = {"user_profile": None, "user_activity": 180}
VIEWS: dict[str, list[str]] = {
    view: list(COLUMNS)[k::len(VIEW_TTL_DAYS)] for k, view in enumerate(VIEW_TTL_DAYS)}
REQUEST_INPUTS = ("amount", "threshold")

TARGETS = {
    "latency_batch_1_p99_ms": ("<=", 1.5),
    "latency_batch_100_p99_ms": ("<=", 3.0),
    "latency_batch_1_p50_ratio_vs_echo": ("<=", 1.3),
    "throughput_req_per_s": (">=", 4000.0),
    "materialization_rows_per_s": (">=", 300_000.0),
}

FEATURES_PY = '''"""Benchmark repo, written by benchmarks/online.py."""
from datetime import timedelta

from featurestore import Entity, FeatureService, FeatureView, Field, Request, Source, transform
from featurestore.types import Bool, Float64, Int64, String, Timestamp

user = Entity("user", join_keys={{"user_id": Int64}})
events = Source("events", path="data/events.parquet", timestamp="event_ts")
{views}


@transform(inputs={{"amount": Request("amount", Float64), "f": user_profile["f_00"]}},
           output=Float64)
def amount_over_f00(amount, f):
    return amount / f if f != 0.0 else 0.0


@transform(inputs={{"amount": Request("amount", Float64), "f": user_activity["f_01"]}},
           output=Float64)
def amount_minus_f01(amount, f):
    return amount - f


@transform(inputs={{"threshold": Request("threshold", Float64), "f": user_profile["f_02"]}},
           output=Bool)
def f02_above_threshold(threshold, f):
    return f > threshold


{service} = FeatureService("{service}", features=[{view_names}])
{service_t3} = FeatureService("{service_t3}", features=[
    {view_names}, amount_over_f00, amount_minus_f01, f02_above_threshold])
'''

VIEW_PY = '''{name} = FeatureView(
    "{name}", entity=user, source=events, ttl={ttl},
    fields=[{fields}])'''


@dataclass(frozen=True)
class Counts:
    """Requests per latency case (after warm-up) and the throughput phase's shape."""

    latency: dict[int, int]  # batch size -> timed requests per side
    warmup: dict[int, int]
    block: int  # requests per side before switching to the next side
    materialize_repeat: int
    throughput_seconds: float
    throughput_configs: list[tuple[int, int, int]]  # (client processes, channels, in flight)


FULL = Counts(latency={1: 2000, 10: 1000, 100: 1000}, warmup={1: 300, 10: 100, 100: 100},
              block=50, materialize_repeat=3, throughput_seconds=5.0,
              throughput_configs=[(2, 8, 32), (2, 8, 128), (4, 4, 32)])
QUICK = Counts(latency={1: 400, 10: 200, 100: 200}, warmup={1: 100, 10: 30, 100: 30},
               block=50, materialize_repeat=1, throughput_seconds=2.0,
               throughput_configs=[(2, 8, 64)])


# --- data and repo ---------------------------------------------------------------------------


def generate_rows(rng: np.random.Generator) -> pl.DataFrame:
    """Every key has at least one row, some several, at times spread over the year before END:
    lookups find the latest one, some older than the ttl, and 1% nulls in every fifth column."""
    n = KEYS + EXTRA_ROWS
    keys = np.concatenate([np.arange(KEYS), rng.integers(0, KEYS, EXTRA_ROWS)]).astype(np.int64)
    micros = END_US - 1 - rng.integers(0, YEAR_US, n)
    columns: dict[str, Any] = {
        "user_id": keys, "event_ts": pl.Series(micros).cast(pl.Datetime("us", "UTC"))}
    for index, (name, dtype) in enumerate(COLUMNS.items()):
        columns[name] = feature_column(rng, name, dtype, index, n, END_US)
    return pl.DataFrame(columns)


def features_py() -> str:
    views = "\n".join(VIEW_PY.format(
        name=name, ttl="None" if VIEW_TTL_DAYS[name] is None else
        f"timedelta(days={VIEW_TTL_DAYS[name]})",
        fields=", ".join(f'Field("{c}", {COLUMNS[c]})' for c in columns))
        for name, columns in VIEWS.items())
    return FEATURES_PY.format(views=views, service=SERVICE, service_t3=SERVICE_T3,
                              view_names=", ".join(VIEWS))


def write_repo(root: Path, rows: pl.DataFrame, redis_url: str) -> None:
    (root / "data").mkdir(parents=True, exist_ok=True)
    rows.write_parquet(root / "data" / "events.parquet")
    (root / "featurestore.yaml").write_text(
        f"project: {PROJECT}\noffline_store: offline.duckdb\nonline_store: {redis_url}\n")
    (root / "features.py").write_text(features_py())


# --- processes this benchmark owns -----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Group:
    """A subprocess started in its own session, so that it and everything it spawns (serving
    workers, multiprocessing's helpers) can be stopped together by process group."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    stopped: bool = False

    @property
    def pgid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM to the leader (`featurestore serve` passes it on to its workers), then
        SIGKILL to whatever is left of the group (once: the group id is not ours after)."""
        if self.stopped:
            return
        self.stopped = True
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                log(f"{self.name} did not stop within {grace:.0f} s; killing it")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, signal.SIGKILL)
        self.process.wait()


def start_group(name: str, command: list[str], log_path: Path, cwd: Path | None = None
                ) -> Group:
    env = {k: v for k, v in os.environ.items() if k != "FEATURESTORE_REDIS_URL"}
    with log_path.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True, cwd=cwd)
    return Group(name, process, log_path)


def wait_for(group: Group, what: str, ready: Callable[[], bool], timeout: float = 120.0) -> None:
    """Polls ready() until true. A group that never gets ready is stopped here, since the
    caller has nothing to stop yet."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            if not group.alive():
                raise RuntimeError(f"{group.name} exited {group.process.returncode} before "
                                   f"{what}:\n{group.log.read_text()[-3000:]}")
            with contextlib.suppress(grpc.RpcError, redis.ConnectionError):
                if ready():
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}; see {group.log}")
            time.sleep(0.05)
    except BaseException:
        group.stop()
        raise


def start_redis(workdir: Path) -> tuple[Group, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not on PATH (Debian: apt-get install redis-server)")
    port = free_port()
    group = start_group("redis-server", [
        binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--dir", str(workdir)], workdir / "redis.log")
    client = redis.Redis(port=port)
    wait_for(group, "redis-server to answer PING", lambda: bool(client.ping()), timeout=10)
    client.close()
    return group, f"redis://127.0.0.1:{port}/0"


def health(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        request = health_pb2.HealthCheckRequest(service="")
        return health_pb2_grpc.HealthStub(channel).Check(request, timeout=2).status


def start_ours(repo: Path, workers: int, workdir: Path) -> tuple[Group, str]:
    """`featurestore serve`, ready once every worker logged that it serves and health says
    SERVING (with several workers one may answer health while another still loads)."""
    port = free_port()
    group = start_group(f"featurestore serve --workers {workers}", [
        sys.executable, "-m", "featurestore.cli", "serve", "--repo", str(repo), "--port",
        str(port), "--workers", str(workers)], workdir / f"serve-{workers}w-{port}.log")
    target = f"127.0.0.1:{port}"
    wait_for(group, f"{target} to be SERVING", lambda: (
        group.log.read_text().count("serving feature repo") == workers
        and health(target) == health_pb2.HealthCheckResponse.SERVING))
    return group, target


def start_echo(reuse_port: bool, workdir: Path, port: int | None = None) -> tuple[Group, str]:
    port = port or free_port()
    command = [sys.executable, str(Path(__file__).resolve()), "--echo-server", str(port)]
    group = start_group(f"echo server :{port}", command + (["--reuse-port"] if reuse_port else []),
                        workdir / f"echo-{port}-{time.monotonic_ns()}.log")
    target = f"127.0.0.1:{port}"

    def answers() -> bool:  # several may share the port: this one must have said it listens
        if "echo serving" not in group.log.read_text():
            return False
        with grpc.insecure_channel(target) as channel:
            return channel.unary_unary(ECHO_METHOD)(b"ping", timeout=2) == b"ping"
    wait_for(group, f"echo server {target}", answers)
    return group, target


def run_echo_server(port: int, reuse_port: bool) -> None:
    """The floor: a grpc.aio server like ours (generic and registered handlers, no reflection
    or health on the hot path) whose one unary method returns its request bytes unparsed."""

    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    async def main() -> None:
        server = grpc.aio.server(options=[("grpc.so_reuseport", int(reuse_port))])
        handlers = {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Echo",
                                                                              handlers),))
        server.add_registered_method_handlers("bench.Echo", handlers)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print(f"echo serving on port {port}", flush=True)
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        await stop.wait()
        await server.stop(1.0)

    asyncio.run(main())


# --- CPU accounting (the machine is small and may be shared) ---------------------------------




def process_cpu(pgid: int) -> dict[int, float]:
    """CPU seconds used so far by each live process of a process group (10 ms ticks)."""
    used = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the command: state, ppid, pgrp, ...
            used[int(entry.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return used


def cpu_snapshot(groups: dict[str, int]) -> dict[str, float]:
    return {"machine": busy_cpu(),
            **{name: sum(process_cpu(pgid).values()) for name, pgid in groups.items()}}


def cpu_delta(before: dict[str, float], after: dict[str, float], own: float,
              own_name: str) -> dict[str, float]:
    """CPU seconds per named process group plus `own` (this process or the client
    processes); `others` is what the rest of the machine used meanwhile."""
    used = {name: after[name] - before[name] for name in before if name != "machine"}
    used[own_name] = own
    machine = after["machine"] - before["machine"]
    return {**{k: round(v, 2) for k, v in used.items()},
            "others": round(max(0.0, machine - sum(used.values())), 2),
            "machine": round(machine, 2)}


# --- materialization -------------------------------------------------------------------------


def measure_materialization(store: FeatureStore, client: redis.Redis, redis_pgid: int,
                            repeat: int) -> dict[str, Any]:
    """One untimed warm-up (Numba's first calls, DuckDB's first reads), then `repeat` timed
    runs, each into an emptied Redis so that every row is written."""
    store.materialize(end=END)
    samples = []
    for rep in range(repeat):
        client.flushall()
        before, cpu = cpu_snapshot({"redis": redis_pgid}), time.process_time()
        started = time.perf_counter()
        done = store.materialize(end=END)
        seconds = time.perf_counter() - started
        cpu_used = cpu_delta(before, cpu_snapshot({"redis": redis_pgid}),
                             time.process_time() - cpu, "materialize_process")
        rows = sum(m.rows for m in done)
        samples.append({"seconds": seconds, "rows": rows, "cpu_s": cpu_used,
                        "views": {m.view: m.rows for m in done}})
        log(f"materialize {rep + 1}/{repeat}: {rows:,} rows in {seconds:.2f} s "
            f"({rows / seconds:,.0f} rows/s; others {cpu_used['others']:.1f} cpu-s)")
    median = sorted(samples, key=lambda s: s["seconds"])[len(samples) // 2]
    return {"rows": median["rows"], "rows_per_view": median["views"],
            "seconds": round(median["seconds"], 3),
            "rows_per_s": round(median["rows"] / median["seconds"]),
            "samples_s": [round(s["seconds"], 3) for s in samples],
            "cpu_samples_s": [s["cpu_s"] for s in samples],
            "what": "FeatureStore.materialize(end=END) of every view into an emptied Redis (one "
                    "entity row per key per view), median of the timed runs after one untimed "
                    "warm-up; includes reading the latest rows from DuckDB"}


# --- requests --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    service: str
    batch: int
    requests: int
    warmup: int


def request_columns(service: str, batch: int, count: int, seed: int
                    ) -> list[tuple[list[int], dict[str, list[float]]]]:
    """`count` random requests: keys from [0, KEY_RANGE) (some not found) and, for the
    transform service, its request inputs."""
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, KEY_RANGE, (count, batch)).tolist()
    amount = rng.uniform(1.0, 500.0, (count, batch)).tolist()
    threshold = rng.standard_normal((count, batch)).tolist()
    with_inputs = service == SERVICE_T3
    return [(keys[i], {"amount": amount[i], "threshold": threshold[i]} if with_inputs else {})
            for i in range(count)]


def encode_request(service: str, keys: list[int], inputs: dict[str, list[float]]) -> bytes:
    """What featurestore.Client sends for these columns, encoded once ahead of time."""
    message = pb.GetOnlineFeaturesRequest(feature_service=service, as_of_us=END_US)
    message.entities["user_id"].int64_values.extend(keys)
    for name, values in inputs.items():
        message.request_inputs[name].float64_values.extend(values)
    return message.SerializeToString()


def percentiles(ns: np.ndarray) -> dict[str, float]:
    ms = ns / 1e6
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"p50_ms": round(float(p50), 4), "p90_ms": round(float(p90), 4),
            "p99_ms": round(float(p99), 4), "mean_ms": round(float(ms.mean()), 4),
            "max_ms": round(float(ms.max()), 4)}


def time_sides(sides: dict[str, Callable[[int], Any]], case: Case, block: int
               ) -> dict[str, np.ndarray]:
    """Every side serves request i of the same list; the sides take turns in blocks of
    `block` requests, and the order of turns rotates, so drifts in the machine's load reach
    all sides alike."""
    for call in sides.values():
        for i in range(case.warmup):
            call(i % case.requests)
    times = {name: np.empty(case.requests, np.int64) for name in sides}
    order = list(sides)
    for start in range(0, case.requests, block):
        for name in order:
            call, out = sides[name], times[name]
            for i in range(start, min(start + block, case.requests)):
                began = time.perf_counter_ns()
                call(i)
                out[i] = time.perf_counter_ns() - began
        order = order[1:] + order[:1]
    return times


def latency_case(ours: str, echo: str, case: Case, block: int, groups: dict[str, int]
                 ) -> dict[str, Any]:
    columns = request_columns(case.service, case.batch, case.requests, SEED + case.batch)
    payloads = [encode_request(case.service, keys, inputs) for keys, inputs in columns]
    with Client(ours) as client, grpc.insecure_channel(echo) as echo_channel, \
            grpc.insecure_channel(ours) as raw_channel:
        echo_call = echo_channel.unary_unary(ECHO_METHOD, _registered_method=True)
        raw_call = raw_channel.unary_unary(OURS_METHOD, _registered_method=True)
        client.feature_service(case.service)  # the schema is fetched once per client
        sides: dict[str, Callable[[int], Any]] = {
            "ours": lambda i: client.get_online_features(
                service=case.service, entities={"user_id": columns[i][0]},
                request=columns[i][1], as_of=END_US),
            "echo": lambda i: echo_call(payloads[i]),
            "ours_raw": lambda i: raw_call(payloads[i]),
        }
        response_bytes = len(raw_call(payloads[0]))
        before, cpu = cpu_snapshot(groups), time.process_time()
        started = time.perf_counter()
        times = time_sides(sides, case, block)
        wall = time.perf_counter() - started
        cpu_used = cpu_delta(before, cpu_snapshot(groups), time.process_time() - cpu, "client")
    stats = {name: percentiles(ns) for name, ns in times.items()}
    calls_on_ours = 2 * (case.requests + case.warmup)  # ours and ours_raw both hit it
    return {
        "service": case.service, "batch": case.batch, "requests": case.requests,
        "warmup": case.warmup, "request_bytes": round(float(np.mean([len(p) for p in payloads]))),
        "response_bytes": response_bytes, **stats,
        "ratio_p50_ours_over_echo": round(stats["ours"]["p50_ms"] / stats["echo"]["p50_ms"], 3),
        "ratio_p99_ours_over_echo": round(stats["ours"]["p99_ms"] / stats["echo"]["p99_ms"], 3),
        "ratio_p50_raw_over_echo": round(stats["ours_raw"]["p50_ms"] / stats["echo"]["p50_ms"],
                                         3),
        "server_cpu_us_per_request": {
            "ours": round(cpu_used["ours_server"] / calls_on_ours * 1e6, 1),
            "echo": round(cpu_used["echo_server"] / (case.requests + case.warmup) * 1e6, 1)},
        "wall_s": round(wall, 2), "cpu_s": cpu_used,
    }


def latency_worker(pipe: Connection, ours: str, echo: str, cases: list[Case], block: int,
                   groups: dict[str, int]) -> None:
    """The client process: runs the cases one after another and sends back their results."""
    try:
        results = {}
        for case in cases:
            key = f"{case.service}/batch_{case.batch}"
            results[key] = latency_case(ours, echo, case, block, groups)
            r = results[key]
            log(f"latency {key}: ours p50 {r['ours']['p50_ms']:.3f} p99 {r['ours']['p99_ms']:.3f}"
                f" ms, echo p50 {r['echo']['p50_ms']:.3f} p99 {r['echo']['p99_ms']:.3f} ms, raw "
                f"p50 {r['ours_raw']['p50_ms']:.3f} ms (others {r['cpu_s']['others']:.1f} cpu-s)")
        pipe.send(("ok", results))
    except Exception as exc:
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
        raise


def in_process(target: Callable[..., None], *args: Any, timeout: float = 1800.0) -> Any:
    """Runs target(pipe, *args) in a spawned process and returns what it sends back."""
    context = mp.get_context("spawn")
    pipe, child = context.Pipe()
    process = context.Process(target=target, args=(child, *args), daemon=True)
    process.start()
    try:
        if not pipe.poll(timeout):
            raise RuntimeError(f"{target.__name__} sent nothing within {timeout:.0f} s")
        status, payload = pipe.recv()
        if status != "ok":
            raise RuntimeError(f"{target.__name__} failed: {payload}")
        return payload
    finally:
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join()


# --- throughput ------------------------------------------------------------------------------


async def load(target: str, path: str, payloads: list[bytes], channels: int, in_flight: int,
               pipe: Connection) -> dict[str, Any]:
    """`in_flight` requests kept outstanding over `channels` connections (a local subchannel
    pool per channel, so that they are distinct TCP connections the kernel can spread over
    the server's workers). Counts the requests completed in the window the parent names."""
    options = [("grpc.use_local_subchannel_pool", 1)]
    opened = [grpc.aio.insecure_channel(target, options=options) for _ in range(channels)]
    stubs = [c.unary_unary(path, _registered_method=True) for c in opened]
    for stub in stubs:
        for payload in payloads[:20]:
            await stub(payload, timeout=10)
    pipe.send("ready")
    start_at, end_at = await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
    await asyncio.sleep(max(0.0, start_at - time.time()))
    cpu = time.process_time()
    done = errors = 0
    latencies: list[int] = []

    async def one(k: int) -> None:
        nonlocal done, errors
        stub, i = stubs[k % channels], k
        while time.time() < end_at:
            began = time.perf_counter_ns()
            try:
                await stub(payloads[i % len(payloads)], timeout=5)
            except grpc.aio.AioRpcError:
                errors += 1
                continue
            if time.time() < end_at:
                done += 1
                latencies.append(time.perf_counter_ns() - began)
            i += in_flight

    async def cpu_at(when: float) -> float:
        await asyncio.sleep(max(0.0, when - time.time()))
        return time.process_time()

    at_end = asyncio.ensure_future(cpu_at(end_at))  # the parent's CPU window ends there too
    await asyncio.gather(*(one(k) for k in range(in_flight)))
    cpu = await at_end - cpu
    for channel in opened:
        await channel.close()
    return {"done": done, "errors": errors, "cpu_s": cpu, "latencies_ns": latencies}


def load_worker(pipe: Connection, target: str, path: str, payloads: list[bytes], channels: int,
                in_flight: int) -> None:
    try:
        pipe.send(("ok", asyncio.run(load(target, path, payloads, channels, in_flight, pipe))))
    except Exception as exc:
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
        raise


def server_processes(pgids: list[int]) -> dict[int, float]:
    return {pid: cpu for pgid in pgids for pid, cpu in process_cpu(pgid).items()}


def measure_throughput(target: str, path: str, payloads: list[bytes],
                       config: tuple[int, int, int], seconds: float,
                       groups: dict[str, int], servers: list[int]) -> dict[str, Any]:
    """Client processes, started and connected first, then all released on one wall-clock
    window so the count covers only the time they all ran together. Also reports each server
    process's CPU: the kernel spreads connections, not requests, over SO_REUSEPORT
    listeners, so one process may get more of the load than the other."""
    processes, channels, in_flight = config
    context = mp.get_context("spawn")
    pipes, workers = [], []
    try:
        for _ in range(processes):
            pipe, child = context.Pipe()
            workers.append(context.Process(target=load_worker, daemon=True, args=(
                child, target, path, payloads, channels, in_flight)))
            workers[-1].start()
            pipes.append(pipe)
        for pipe in pipes:
            if not pipe.poll(120) or pipe.recv() != "ready":
                raise RuntimeError("a load process did not get ready")
        start_at = time.time() + 0.3
        for pipe in pipes:
            pipe.send((start_at, start_at + seconds))
        time.sleep(max(0.0, start_at - time.time()))
        before, per_process = cpu_snapshot(groups), server_processes(servers)
        time.sleep(max(0.0, start_at + seconds - time.time()))
        after = cpu_snapshot(groups)  # the same window as the count
        per_process = {pid: cpu - per_process.get(pid, 0.0)
                       for pid, cpu in server_processes(servers).items()}
        results = []
        for pipe in pipes:
            if not pipe.poll(seconds + 120):
                raise RuntimeError("a load process did not report")
            status, payload = pipe.recv()
            if status != "ok":
                raise RuntimeError(f"load process failed: {payload}")
            results.append(payload)
    finally:
        for worker in workers:
            if worker.pid is None:  # interrupted while starting it
                continue
            worker.join(10)
            if worker.is_alive():
                worker.kill()
                worker.join()
    done = sum(r["done"] for r in results)
    latencies = np.concatenate([np.asarray(r["latencies_ns"], np.int64) for r in results])
    return {
        "client_processes": processes, "channels_per_process": channels,
        "in_flight_per_process": in_flight, "seconds": seconds,
        "requests": done, "errors": sum(r["errors"] for r in results),
        "req_per_s": round(done / seconds),
        "latency_under_load": percentiles(latencies) if len(latencies) else None,
        "cpu_s": cpu_delta(before, after, sum(r["cpu_s"] for r in results), "load_clients"),
        "server_cpu_per_process_s": sorted((round(v, 2) for v in per_process.values() if v > 0),
                                           reverse=True),
    }


def throughput_phase(ours: str, echo: str, counts: Counts, groups: dict[str, int],
                     servers: dict[str, list[int]]) -> dict[str, Any]:
    columns = request_columns(TARGET_SERVICE, 1, 1000, SEED + 7)
    payloads = [encode_request(TARGET_SERVICE, keys, inputs) for keys, inputs in columns]
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "echo": []}
    for index, config in enumerate(counts.throughput_configs):
        sides = [("ours", ours, OURS_METHOD), ("echo", echo, ECHO_METHOD)]
        for name, target, path in sides if index % 2 == 0 else reversed(sides):
            run = measure_throughput(target, path, payloads, config, counts.throughput_seconds,
                                     groups, servers[name])
            runs[name].append(run)
            log(f"throughput {name} {config}: {run['req_per_s']:,} req/s, {run['errors']} errors"
                f" (others {run['cpu_s']['others']:.1f} cpu-s)")
    return {
        "service": TARGET_SERVICE, "batch": 1,
        "client": "grpc.aio channels in separate spawned processes sending pre-encoded requests "
                  "(1000 random ones, cycled) and not parsing responses; the load generator "
                  "shares the machine's cores with the servers",
        "ours_max_req_per_s": max(r["req_per_s"] for r in runs["ours"]),
        "echo_max_req_per_s": max(r["req_per_s"] for r in runs["echo"]),
        "runs": runs,
    }


# --- sanity: the benchmark measures a server that answers correctly --------------------------


def sanity(target: str, rows: pl.DataFrame) -> dict[str, Any]:
    """One batch of 100 random keys per service: status counts, and the no-ttl view's values
    compared with the latest source row of each key."""
    latest = rows.sort("event_ts").group_by("user_id").last()
    float_features = [c for c in VIEWS["user_profile"] if COLUMNS[c] == "Float64"]
    out: dict[str, Any] = {}
    with Client(target) as client:
        for service in (SERVICE, SERVICE_T3):
            keys, inputs = request_columns(service, 100, 1, SEED + 99)[0]
            result = client.get_online_features(service=service, entities={"user_id": keys},
                                                request=inputs, as_of=END_US)
            statuses = np.concatenate([result.statuses[n] for n in result.names])
            expected = pl.DataFrame({"user_id": keys}).join(latest, on="user_id", how="left")
            mismatches = 0
            for name in float_features:
                present = result.statuses[name] == Status.PRESENT
                want = expected[name].to_numpy()
                mismatches += int((present & (result.values[name] != want)).sum())
                mismatches += int((~present & ~np.isnan(want)).sum())
            out[service] = {
                "features": len(result.names),
                "statuses": {STATUS_NAMES[s]: int((statuses == s).sum()) for s in Status},
                "transform_errors": result.transform_errors,
                "user_profile_float_mismatches": mismatches}
    if any(v["user_profile_float_mismatches"] for v in out.values()):
        raise RuntimeError(f"served values differ from the source's latest rows: {out}")
    return out


# --- the run ---------------------------------------------------------------------------------


def evaluate(values: dict[str, float]) -> dict[str, Any]:
    targets = {}
    for name, (op, limit) in TARGETS.items():
        value = values[name]
        targets[name] = {"value": value, "target": f"{op} {limit:g}",
                         "pass": value <= limit if op == "<=" else value >= limit}
    return targets


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo
                      if line.startswith("model name")), "")
    return {"cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
            "cpu_model": model, "platform": platform.platform(),
            "python": platform.python_version()}


def versions() -> dict[str, Any]:
    from google import protobuf

    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True).stdout

    server = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    return {"featurestore_commit": git("rev-parse", "--short", "HEAD").strip(),
            "featurestore_uncommitted": git("status", "--porcelain", "featurestore").split("\n")[:-1],
            "grpcio": grpc.__version__, "protobuf": protobuf.__version__,
            "redis_py": redis.__version__, "redis_server": server.split()[2].removeprefix("v="),
            "numba": numba.__version__, "numpy": np.__version__, "duckdb": duckdb.__version__,
            "polars": pl.__version__}


@contextlib.contextmanager
def owned(group: Group) -> Iterator[Group]:
    try:
        yield group
    finally:
        group.stop()


def benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    counts = QUICK if args.quick else FULL
    if args.throughput_config:
        counts = replace(counts, throughput_configs=[
            parse_config(c) for c in args.throughput_config])
    load_before, started_run = os.getloadavg(), time.perf_counter()
    with contextlib.ExitStack() as stack:
        redis_group, url = start_redis(workdir)
        stack.callback(redis_group.stop)
        started = time.perf_counter()
        rows = generate_rows(np.random.default_rng(SEED))
        repo = workdir / "repo"
        write_repo(repo, rows, url)
        generate_s = time.perf_counter() - started
        log(f"generated {rows.height:,} rows for {KEYS:,} keys in {generate_s:.1f} s ({repo})")
        store = FeatureStore(repo)
        started = time.perf_counter()
        store.apply()
        apply_s = time.perf_counter() - started
        log(f"apply: {apply_s:.1f} s")

        client = redis.Redis.from_url(url)
        materialization = measure_materialization(store, client, redis_group.pgid,
                                                  counts.materialize_repeat)
        client.close()

        ours_group, ours = start_ours(repo, 1, workdir)
        stack.enter_context(owned(ours_group))
        echo_group, echo = start_echo(False, workdir)
        stack.enter_context(owned(echo_group))
        log(f"serving on {ours} (1 worker), echo on {echo}")
        checks = sanity(ours, rows)
        cases = [Case(service, batch, counts.latency[batch], counts.warmup[batch])
                 for batch in counts.latency for service in (SERVICE, SERVICE_T3)]
        groups = {"ours_server": ours_group.pgid, "echo_server": echo_group.pgid,
                  "redis": redis_group.pgid}
        latency = in_process(latency_worker, ours, echo, cases, counts.block, groups)
        ours_group.stop()
        echo_group.stop()

        ours_group, ours = start_ours(repo, 2, workdir)
        stack.enter_context(owned(ours_group))
        echo_port = free_port()
        echo_groups = [start_echo(True, workdir, echo_port)[0] for _ in range(2)]
        for group in echo_groups:
            stack.enter_context(owned(group))
        echo = f"127.0.0.1:{echo_port}"
        log(f"serving on {ours} (2 workers), echo on {echo} (2 processes)")
        groups = {"ours_server": ours_group.pgid, "redis": redis_group.pgid,
                  **{f"echo_server_{k}": g.pgid for k, g in enumerate(echo_groups)}}
        throughput = throughput_phase(ours, echo, counts, groups, {
            "ours": [ours_group.pgid], "echo": [g.pgid for g in echo_groups]})

    target_batch_1 = latency[f"{TARGET_SERVICE}/batch_1"]
    values = {
        "latency_batch_1_p99_ms": target_batch_1["ours"]["p99_ms"],
        "latency_batch_100_p99_ms": latency[f"{TARGET_SERVICE}/batch_100"]["ours"]["p99_ms"],
        "latency_batch_1_p50_ratio_vs_echo": target_batch_1["ratio_p50_ours_over_echo"],
        "throughput_req_per_s": throughput["ours_max_req_per_s"],
        "materialization_rows_per_s": materialization["rows_per_s"],
    }
    targets = evaluate(values)
    return {
        "benchmark": "online", "size": "quick" if args.quick else "full", "seed": SEED,
        "data": {
            "keys": KEYS, "source_rows": rows.height, "features": len(COLUMNS),
            "feature_types": {t: list(COLUMNS.values()).count(t)
                              for t in dict.fromkeys(COLUMNS.values())},
            "views": {v: {"features": len(c), "ttl_days": VIEW_TTL_DAYS[v]}
                      for v, c in VIEWS.items()},
            "services": {SERVICE: "the 50 features",
                         SERVICE_T3: "the 50 features + 3 transforms of a Request Float64 and "
                                     "a feature: ratio, difference, comparison (Bool)"},
            "request_keys": f"uniform in [0, {KEY_RANGE}): keys >= {KEYS} are NOT_FOUND",
            "as_of": END.isoformat(), "generate_s": round(generate_s, 2),
            "apply_s": round(apply_s, 2)},
        "targets": targets,
        "all_targets_met": all(t["pass"] for t in targets.values()),
        "targets_measured_on": f"latency: {TARGET_SERVICE} through featurestore.Client, "
                               "--workers 1; ratio: its p50 over the echo's p50 in the same "
                               f"alternating run; throughput: {TARGET_SERVICE} batch 1, "
                               "--workers 2, best client configuration",
        "materialization": materialization,
        "sanity": checks,
        "latency": {
            "method": "one spawned client process, sequential requests; per case the sides "
                      f"alternate in blocks of {counts.block} requests (rotating order) after "
                      "a warm-up of each; percentiles by linear interpolation (numpy); every "
                      "request has its own random keys (seeded)",
            "sides": {"ours": "featurestore.Client.get_online_features(service=..., "
                              "entities=..., request=..., as_of=...) -> OnlineFeatures",
                      "echo": "raw grpc channel to a bare grpc.aio echo server, sending the "
                              "same case's pre-encoded GetOnlineFeaturesRequest bytes "
                              "(request_bytes), receiving them back",
                      "ours_raw": "raw grpc channel to our server with the same pre-encoded "
                                  "bytes; response bytes not parsed"},
            "server": "featurestore serve --workers 1",
            "cases": latency},
        "throughput": throughput,
        "machine": {**machine_info(), "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "versions": versions(),
        "elapsed_s": round(time.perf_counter() - started_run, 1),
    }


def parse_config(text: str) -> tuple[int, int, int]:
    processes, channels, in_flight = (int(v) for v in text.split(","))
    return processes, channels, in_flight


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer requests, one throughput configuration (under 2 minutes)")
    parser.add_argument("--out", type=Path, help="also write the JSON result here")
    parser.add_argument("--workdir", type=Path,
                        help="keep data, repo, DuckDB file and server logs here "
                             "(default: a temp dir)")
    parser.add_argument("--throughput-config", action="append", metavar="P,C,F",
                        help="throughput client shape instead of the default sweep: P processes, "
                             "C channels each, F requests in flight each (repeatable)")
    parser.add_argument("--echo-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo_server:
        run_echo_server(args.echo_server, args.reuse_port)
        return
    # A plain SIGTERM would skip the finally blocks that stop the servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.environ.pop("FEATURESTORE_REDIS_URL", None)  # the repo names the benchmark's own Redis
    harness.run(benchmark, args, "fs-online-")

if __name__ == "__main__":
    main()
