"""Serve the Starlette app with hypercorn over TLS."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import ssl
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config

from ..metrics import Metrics
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
    cert_reload_interval: float = 2.0  # seconds between checks of tls.crt/tls.key for a rotated pair
    workers: int = 1  # processes sharing the listening socket (each loads the policies itself)


class ReloadableConfig(Config):
    """hypercorn's Config, but the SSLContext is made once and kept: ``CertReloader`` loads rotated
    certificates into that same context, and every handshake after that serves the new pair."""

    def __init__(self) -> None:
        super().__init__()
        self.ssl_context: ssl.SSLContext | None = None

    def create_ssl_context(self) -> ssl.SSLContext | None:
        if self.ssl_context is None:
            self.ssl_context = super().create_ssl_context()
        return self.ssl_context


def _file_state(*paths: Path) -> tuple[tuple[int, int, int], ...] | None:
    """What identifies the files' contents cheaply (inode, mtime, size; through symlinks, as in a mounted
    Secret whose ``..data`` link is swapped), or None when one cannot be read."""
    try:
        return tuple((st.st_ino, st.st_mtime_ns, st.st_size) for st in (os.stat(p) for p in paths))
    except OSError:
        return None


def _load_pem_pair(context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """``context.load_cert_chain`` from bytes already read. ssl loads only from paths: an anonymous in-memory
    file on Linux (nothing written; the root filesystem may be read-only), else a private temporary file."""
    data = key_pem.rstrip(b"\n") + b"\n" + cert_pem
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("mutator-tls", os.MFD_CLOEXEC)
        try:
            with open(fd, "wb", closefd=False) as out:
                out.write(data)
            context.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pair.pem"
        path.touch(mode=0o600)
        path.write_bytes(data)
        context.load_cert_chain(str(path))


def _describe(cert_pem: bytes) -> str:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(cert_pem)
    return f"serial {cert.serial_number:x}, valid until {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"


class CertReloader:
    """Puts a rotated tls.crt/tls.key into the live SSLContext, without a restart.

    Every ``interval`` seconds the files' inode/mtime/size are compared with the pair being served. A changed
    pair is read once, checked in a scratch context, and only then loaded into the served one (the same
    bytes), so a broken or half-written pair never reaches it: the old certificate keeps serving and the
    error is logged (once per broken pair). Connections already open keep the certificate they shook hands
    with; new handshakes get the new one. The load runs on the event loop, between handshakes.
    """

    def __init__(
        self,
        context: ssl.SSLContext,
        certfile: Path,
        keyfile: Path,
        interval: float = 2.0,
        *,
        served: tuple[tuple[int, int, int], ...] | None = None,
    ) -> None:
        self.context = context
        self.certfile = certfile
        self.keyfile = keyfile
        self.interval = interval
        # the state of the files the context was loaded from (taken before loading them)
        self.served = served if served is not None else _file_state(certfile, keyfile)
        self._seen_failing: tuple[tuple[int, int, int], ...] | None = None
        self._reported: tuple[tuple[int, int, int], ...] | None = None

    def check(self) -> bool:
        """Load the pair if it changed and is good; True when a new pair is now served."""
        state = _file_state(self.certfile, self.keyfile)
        if state == self.served:
            return False
        try:
            if state is None:
                raise OSError(f"{self.certfile} or {self.keyfile} cannot be read")
            cert_pem, key_pem = self.certfile.read_bytes(), self.keyfile.read_bytes()
            if _file_state(self.certfile, self.keyfile) != state:
                return False  # changed while being read: next time
            _load_pem_pair(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), cert_pem, key_pem)
            described = _describe(cert_pem)
        except (OSError, ValueError, ssl.SSLError) as err:
            # The two files are replaced one after the other: a pair that fails once may be mid-rotation.
            # Only a pair that fails twice in a row, unchanged, is broken; say so once.
            if state == self._seen_failing and state != self._reported:
                log.error(
                    "certificate reload failed, still serving the previous certificate: %s (%s, %s)",
                    err,
                    self.certfile,
                    self.keyfile,
                )
                self._reported = state
            self._seen_failing = state
            return False
        _load_pem_pair(self.context, cert_pem, key_pem)
        self.served = state
        self._seen_failing = self._reported = None
        log.info("serving certificate reloaded from %s (%s)", self.certfile, described)
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.check()
            except Exception:  # never let the watcher die: the next rotation must still be seen
                log.exception("certificate reload check failed")


class _WroteAfterClose(logging.Filter):
    """A client that writes on a connection after the server closed it (e.g. after ``Connection: close``) makes
    ssl raise APPLICATION_DATA_AFTER_CLOSE_NOTIFY while hypercorn closes the socket; hypercorn and asyncio log it as
    an error with a traceback. It is the client's doing and harms nothing: one line at INFO instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ssl.SSLError) and "APPLICATION_DATA_AFTER_CLOSE_NOTIFY" in str(exc):
            if record.name == "asyncio":
                return False  # the same event, logged by hypercorn too
            record.msg = "a client wrote on a connection after it was closed (TLS close_notify); dropped it"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
            record.levelno = logging.INFO
            record.levelname = "INFO"
        return True


_WROTE_AFTER_CLOSE = _WroteAfterClose()


def hypercorn_config(settings: ServerSettings) -> ReloadableConfig:
    config = ReloadableConfig()
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    config.bind = [f"{host}:{settings.port}"]
    config.certfile = str(settings.certfile)
    config.keyfile = str(settings.keyfile)
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    for name in ("hypercorn.error", "asyncio"):
        logging.getLogger(name).addFilter(_WROTE_AFTER_CLOSE)
    config.graceful_timeout = 5.0
    config.keep_alive_timeout = 60.0
    # hypercorn closes a keep-alive connection after 1000 requests by default; the API server reconnects,
    # but each reconnect is a TLS handshake, so allow many more
    config.keep_alive_max_requests = 1_000_000
    return config


def run(settings: ServerSettings) -> None:
    """Serve; with ``workers`` > 1, fork that many processes that accept on one shared socket (pre-fork), and
    restart one that dies. In cluster mode only the first runs audit and status writes."""
    for path in (settings.certfile, settings.keyfile):
        if not path.is_file():
            raise SystemExit(f"mutator serve: {path}: no such file (make certificates with `mutator certs`)")
    if settings.workers <= 1:
        _serve(settings)
        return
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    listener = socket.create_server((settings.host, settings.port), family=family, backlog=2048)
    listener.set_inheritable(True)
    children: dict[int, int] = {}
    stopping = False

    def spawn(index: int) -> None:
        child = settings
        if index > 0 and settings.cluster is not None:
            ops = [op for op in settings.cluster.operations if op not in ("audit", "status")]
            child = replace(settings, cluster=replace(settings.cluster, operations=ops))
        pid = os.fork()
        if pid == 0:  # the worker
            code = 0
            try:
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                _serve(child, listen_fd=listener.fileno())
            except BaseException:
                log.exception("worker %d failed", index)
                code = 1
            finally:
                os._exit(code)
        children[pid] = index

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for index in range(settings.workers):
        spawn(index)
    log.info("%d workers on https://%s:%d", settings.workers, settings.host, settings.port)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        index = children.pop(pid, None)
        if index is not None and not stopping:
            log.error("worker %d (pid %d) exited with status %d; starting it again", index, pid, status)
            time.sleep(0.5)
            spawn(index)


def _serve(settings: ServerSettings, *, listen_fd: int | None = None) -> None:
    config = hypercorn_config(settings)
    if listen_fd is not None:
        config.bind = [f"fd://{listen_fd}"]
    # our SSLContext, made now (a bad pair fails here, before anything starts) and handed to hypercorn when it
    # asks; the files' state is taken first, so a rotation racing this load is still seen by the reloader
    served = _file_state(settings.certfile, settings.keyfile)
    try:
        context = config.create_ssl_context()
    except (OSError, ssl.SSLError) as err:
        raise SystemExit(f"mutator serve: cannot load {settings.certfile} / {settings.keyfile}: {err}") from err
    assert context is not None
    reloader = CertReloader(context, settings.certfile, settings.keyfile, settings.cert_reload_interval, served=served)
    metrics = Metrics()
    background: Callable[[], list[Coroutine[Any, Any, None]]]
    if settings.cluster is not None:
        from ..cluster.runtime import ClusterRuntime

        try:
            runtime = ClusterRuntime(
                settings.cluster,
                on_audit=lambda r: (
                    metrics.set_audit_violations(r.by_action),
                    metrics.observe_audit(r.duration, r.started),
                ),
                on_sync=lambda counts, seconds: (metrics.set_sync(counts), metrics.observe_sync(seconds)),
            )
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
    metrics.policies = provider
    app = create_app(provider, ready=ready, options=settings.options, validation=settings.validation, metrics=metrics)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        log.info("serving https://%s:%d (policies: %s)", settings.host, settings.port, where)
        tasks = [asyncio.create_task(c) for c in [*background(), reloader.run()]]
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
