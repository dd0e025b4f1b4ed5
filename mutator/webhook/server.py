"""Serve the Starlette app with hypercorn over TLS."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config

from ..policy import DirectorySource, PolicySet
from .admission import MutationOptions, ValidationOptions
from .app import create_app

if TYPE_CHECKING:
    from ..cluster.runtime import ClusterSettings

log = logging.getLogger("mutator.server")


@dataclass(slots=True)
class ServerSettings:
    policy_paths: list[Path]
    certfile: Path
    keyfile: Path
    host: str = "127.0.0.1"
    port: int = 8443
    reload_interval: float = 1.0
    options: MutationOptions | None = None
    validation: ValidationOptions | None = None
    enable_cel: bool = True
    cluster: ClusterSettings | None = None  # policies from the Kubernetes API instead of files


def hypercorn_config(settings: ServerSettings) -> Config:
    config = Config()
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    config.bind = [f"{host}:{settings.port}"]
    config.certfile = str(settings.certfile)
    config.keyfile = str(settings.keyfile)
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 5.0
    config.keep_alive_timeout = 60.0
    # hypercorn closes a keep-alive connection after 1000 requests by default; the API server reconnects,
    # but each reconnect is a TLS handshake, so allow many more
    config.keep_alive_max_requests = 1_000_000
    return config


def run(settings: ServerSettings) -> None:
    for path in (settings.certfile, settings.keyfile):
        if not path.is_file():
            raise SystemExit(f"mutator serve: {path}: no such file (make certificates with `mutator certs`)")
    background: Callable[[], list[Coroutine[Any, Any, None]]]
    if settings.cluster is not None:
        from ..cluster.runtime import ClusterRuntime

        try:
            runtime = ClusterRuntime(settings.cluster)
        except ValueError as err:
            raise SystemExit(f"mutator serve: {err}") from err
        cluster_source = runtime.source
        provider: Callable[[], PolicySet] = lambda: cluster_source.current  # noqa: E731
        ready: Callable[[], bool] = cluster_source.loaded.is_set
        background = runtime.coroutines
        stop_source = cluster_source.stop
        where = "the Kubernetes API"
    else:
        source = DirectorySource(
            settings.policy_paths, interval=settings.reload_interval, enable_cel=settings.enable_cel
        )
        source.start()
        # Everything loaded so far lives as long as the process: keep it out of the collector's full passes,
        # which otherwise pause a request every few hundred for ~20 ms (docs/performance.md).
        gc.collect()
        gc.freeze()
        provider = lambda: source.current  # noqa: E731
        ready = source.loaded.is_set
        background = lambda: [source.watch()]  # noqa: E731
        stop_source = source.stop
        where = ", ".join(str(p) for p in settings.policy_paths)
    app = create_app(provider, ready=ready, options=settings.options, validation=settings.validation)
    config = hypercorn_config(settings)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        log.info("serving https://%s:%d (policies: %s)", settings.host, settings.port, where)
        tasks = [asyncio.create_task(c) for c in background()]
        try:
            await hypercorn_serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]
        finally:
            stop_source()
            for task in tasks:
                task.cancel()

    try:
        asyncio.run(main())
    finally:
        stop_source()
