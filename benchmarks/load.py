"""Throughput under load: spawned client processes keep many pre-encoded requests in flight
over several grpc.aio channels each, all counted in one shared wall-clock window, with the CPU
every process group used in that window."""

from __future__ import annotations

import asyncio
import time
from multiprocessing.connection import Connection
from typing import Any

import grpc
import numpy as np
from cpu import cpu_delta, cpu_snapshot, groups_process_cpu
from processes import spawn
from timing import percentiles


async def load(pipe: Connection, target: str, path: str, payloads: list[bytes], channels: int,
               in_flight: int) -> dict[str, Any]:
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


def load_process(pipe: Connection, *args: Any) -> dict[str, Any]:
    return asyncio.run(load(pipe, *args))


def measure_throughput(target: str, path: str, payloads: list[bytes],
                       config: tuple[int, int, int], seconds: float,
                       groups: dict[str, int], servers: list[int]) -> dict[str, Any]:
    """`config` is (client processes, channels each, requests in flight each). The processes
    are started and connected first, then all released on one wall-clock window so the count
    covers only the time they all ran together. Also reports each server process's CPU
    (`servers`: their process groups): the kernel spreads connections, not requests, over
    SO_REUSEPORT listeners, so one process may get more of the load than the other."""
    processes, channels, in_flight = config
    clients = []
    try:
        for _ in range(processes):
            clients.append(spawn(load_process, target, path, payloads, channels, in_flight,
                                 converse=True))
        for client in clients:
            if not client.pipe.poll(120) or client.pipe.recv() != "ready":
                raise RuntimeError("a load process did not get ready")
        start_at = time.time() + 0.3
        for client in clients:
            client.pipe.send((start_at, start_at + seconds))
        time.sleep(max(0.0, start_at - time.time()))
        before, per_process = cpu_snapshot(groups), groups_process_cpu(servers)
        time.sleep(max(0.0, start_at + seconds - time.time()))
        after = cpu_snapshot(groups)  # the same window as the count
        per_process = {pid: cpu - per_process.get(pid, 0.0)
                       for pid, cpu in groups_process_cpu(servers).items()}
        results = [client.result(seconds + 120) for client in clients]
    finally:
        for client in clients:
            client.stop()
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
