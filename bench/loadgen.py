"""A closed-loop HTTPS load generator for ``POST /v1/mutate`` or ``/v1/admit`` (run as its own process by
bench_mutation.py and bench_validation.py through harness.py).

``--concurrency`` keep-alive HTTP/1.1 connections each send the same AdmissionReview, wait for the
answer, check it and send again, until ``--duration`` seconds after a ``--warmup``.  Two clients:

* ``raw``: asyncio streams over TLS with a pre-built request and a minimal response parser, so the client
  spends as little CPU as possible (on a 2-core machine it shares the CPUs with the server);
* ``httpx``: ``httpx.AsyncClient`` (HTTP/1.1, a pool of ``--concurrency`` connections).

Every answer is checked: HTTP 200, an AdmissionReview response with the request's uid, ``allowed: true``
and (with ``--expect-patch``) a JSONPatch.  Prints one JSON object: requests, errors, requests/s,
latency percentiles (ms) and the CPU seconds the load generator itself used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

PATH = "/v1/mutate"


@dataclass(slots=True)
class Stats:
    measure_start: float = 0.0
    end: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, requests started in the measured window
    total: int = 0  # every completed request, warm-up included
    errors: int = 0
    reconnects: int = 0  # connections reopened after the server's "Connection: close" (raw client)
    first_error: str = ""
    last_done: float = 0.0
    max_requests: int = 0  # > 0: stop after this many answers (warm-up included)


class CheckError(Exception):
    pass


def check_answer(status: int, body: bytes, uid: str, expect_patch: bool, expect_allowed: str = "true") -> None:
    if status != 200:
        raise CheckError(f"HTTP {status}: {body[:300]!r}")
    review = orjson.loads(body)
    response = review.get("response") if isinstance(review, dict) else None
    if not isinstance(response, dict):
        raise CheckError(f"no response in answer: {body[:300]!r}")
    allowed = response.get("allowed")
    wanted = {"true": (True,), "false": (False,), "any": (True, False)}[expect_allowed]
    if response.get("uid") != uid or allowed not in wanted or not isinstance(allowed, bool):
        raise CheckError(f"unexpected response: {body[:300]!r}")
    if expect_patch and (response.get("patchType") != "JSONPatch" or not response.get("patch")):
        raise CheckError(f"expected a JSONPatch: {body[:300]!r}")


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


Sender = Callable[[], Awaitable[tuple[int, bytes]]]


async def _loop(send: Sender, stats: Stats, uid: str, expect_patch: bool, expect_allowed: str = "true") -> None:
    clock = time.perf_counter
    while True:
        start = clock()
        if start >= stats.end or (stats.max_requests and stats.total >= stats.max_requests):
            return
        try:
            status, body = await send()
            check_answer(status, body, uid, expect_patch, expect_allowed)
        except Exception as err:  # every failure is counted and reported, none is fatal to the others
            stats.errors += 1
            if not stats.first_error:
                stats.first_error = f"{type(err).__name__}: {err}"
            if not isinstance(err, CheckError):
                return  # the connection is unusable: this worker stops, the bench reports the error
            continue
        done = clock()
        stats.total += 1
        stats.last_done = done
        if start >= stats.measure_start and done <= stats.end:
            stats.latencies.append(done - start)


# --------------------------------------------------------------------------- raw client


class RawConnection:
    """One keep-alive connection; reopened when the server answers ``Connection: close`` (hypercorn does
    after ``keep_alive_max_requests``, 1000 by default), the reconnect counting in the next request."""

    def __init__(self, host: str, port: int, ctx: ssl.SSLContext, request: bytes) -> None:
        self.host = host
        self.port = port
        self.ctx = ctx
        self.request = request
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.reconnects = 0

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            self.host, self.port, ssl=self.ctx, server_hostname=self.host
        )

    async def send(self) -> tuple[int, bytes]:
        if self.writer is None:
            self.reconnects += 1
            await self.open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = -1
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value.strip())
            elif name == b"connection":
                close = value.strip().lower() == b"close"
            elif name == b"transfer-encoding":
                raise CheckError(f"unsupported transfer-encoding in answer: {value.strip()!r}")
        if length < 0:
            raise CheckError("answer without content-length")
        body = await self.reader.readexactly(length)
        if close:
            await self.close()
        return status, body

    async def close(self) -> None:
        writer, self.reader, self.writer = self.writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()


async def run_raw(args: argparse.Namespace, body: bytes, uid: str, ctx: ssl.SSLContext, stats: Stats) -> None:
    request = (
        f"POST {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\nContent-Type: application/json\r\n"
        f"Accept: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    conns = [RawConnection(args.host, args.port, ctx, request) for _ in range(args.concurrency)]
    for conn in conns:
        await conn.open()
    try:
        now = time.perf_counter()
        stats.measure_start = now + args.warmup
        stats.end = stats.measure_start + args.duration
        await asyncio.gather(*(_loop(c.send, stats, uid, args.expect_patch, args.expect_allowed) for c in conns))
    finally:
        stats.reconnects = sum(c.reconnects for c in conns)
        for c in conns:
            await c.close()


# --------------------------------------------------------------------------- httpx client


async def run_httpx(args: argparse.Namespace, body: bytes, uid: str, ctx: ssl.SSLContext, stats: Stats) -> None:
    import httpx

    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    url = f"https://{args.host}:{args.port}{args.path}"
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    async with httpx.AsyncClient(verify=ctx, limits=limits, http1=True, http2=False, timeout=30.0) as client:

        async def send() -> tuple[int, bytes]:
            response = await client.post(url, content=body, headers=headers)
            return response.status_code, response.content

        # open the connections before the clock starts
        await asyncio.gather(*(client.get(f"https://{args.host}:{args.port}/healthz") for _ in range(args.concurrency)))
        now = time.perf_counter()
        stats.measure_start = now + args.warmup
        stats.end = stats.measure_start + args.duration
        await asyncio.gather(
            *(_loop(send, stats, uid, args.expect_patch, args.expect_allowed) for _ in range(args.concurrency))
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cacert", required=True, help="CA bundle that signed the server certificate")
    parser.add_argument("--body", required=True, help="file holding the AdmissionReview to send")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw")
    parser.add_argument("--expect-patch", action="store_true", help="every answer must carry a JSONPatch")
    parser.add_argument("--path", default=PATH, help="/v1/mutate (default) or /v1/admit")
    parser.add_argument("--expect-allowed", choices=("true", "false", "any"), default="true")
    parser.add_argument("--max-requests", type=int, default=0, help="stop after this many answers (0: no limit)")
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        parser.error("this load generator only targets the loopback interface")

    body = Path(args.body).read_bytes()
    uid = orjson.loads(body)["request"]["uid"]
    ctx = ssl.create_default_context(cafile=args.cacert)
    stats = Stats(max_requests=args.max_requests)
    runner = run_raw if args.client == "raw" else run_httpx
    cpu0 = time.process_time()
    try:
        asyncio.run(runner(args, body, uid, ctx, stats))
    except Exception as err:  # e.g. the connections could not be opened
        if not stats.first_error:
            stats.first_error = f"{type(err).__name__}: {err}"
        stats.errors = max(stats.errors, 1)
    cpu = time.process_time() - cpu0
    lat = sorted(stats.latencies)
    measured = max(min(stats.end, stats.last_done or stats.end) - stats.measure_start, 1e-9)
    result: dict[str, Any] = {
        "client": args.client,
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "requests": len(lat),
        "total_requests": stats.total,
        "errors": stats.errors,
        "reconnects": stats.reconnects,
        "first_error": stats.first_error,
        "rps": len(lat) / measured,
        "p50_ms": percentile(lat, 50) * 1e3,
        "p90_ms": percentile(lat, 90) * 1e3,
        "p99_ms": percentile(lat, 99) * 1e3,
        "p999_ms": percentile(lat, 99.9) * 1e3,
        "max_ms": (lat[-1] * 1e3) if lat else math.nan,
        "mean_ms": (sum(lat) / len(lat) * 1e3) if lat else math.nan,
        "client_cpu_s": cpu,
        "client_cpu_per_request_ms": cpu / stats.total * 1e3 if stats.total else math.nan,
    }
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 1 if stats.errors else 0


if __name__ == "__main__":
    sys.exit(main())
