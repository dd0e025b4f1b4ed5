"""Validation in a child process, so a runaway policy is cut off at the webhook's deadline.

The Rego and CEL engines cannot be interrupted: an evaluation holds the GIL until it ends, so no thread of the
serving process can even notice a deadline passing.  The :class:`Evaluator` therefore runs
``ValidationSystem.review`` in a child forked from the serving worker — it inherits the compiled policy set, the
engines included (fork keeps the thread that made them), so nothing is compiled twice — and talks to it over a
socket pair: one review out, its violations back, each a length-prefixed orjson frame.  The serving event loop
awaits the answer, so it keeps serving other requests meanwhile.  When the deadline passes first, the child is
killed (SIGKILL), the request is answered per the failure policy with the reason (naming the template that was
running), and a fresh child is forked.

What the child knows is a snapshot: a new policy set forks a new child; ``data.inventory``, which changes without
a new policy set, travels with the next review after each change.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import gc
import logging
import mmap
import os
import signal
import socket
import struct
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from ..validation.constraints import Constraint
from ..validation.system import ReviewResult, ValidationSystem, Violation

log = logging.getLogger("mutator.evaluator")

_HEADER = struct.Struct("!I")
_PROGRESS_SIZE = 256
_PR_SET_PDEATHSIG = 1
# The child skips templates it has not started once the deadline passes; this much longer is given for it to say
# so before it is killed.
_GRACE = 0.02


class EvaluatorError(RuntimeError):
    """The child failed in a way that is not a policy's fault (it crashed, or answered out of turn)."""


class CutOff(Exception):
    """The deadline passed before a child answered (that child has been killed)."""


class _InventorySnapshot:
    """``data.inventory`` as the serving process last sent it: what the engines read (version and JSON text)."""

    def __init__(self, version: int, inventory_json: str) -> None:
        self.version = version
        self._inventory_json = inventory_json

    def inventory_json(self) -> str:
        return self._inventory_json

    def data_json(self) -> str:
        return f'{{"inventory":{self._inventory_json}}}'


# --------------------------------------------------------------------------- the child


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            return None
        got += n
    return bytes(buf)


def _child_main(sock: socket.socket, validation: ValidationSystem, progress: mmap.mmap) -> None:
    """Answer reviews until the serving process closes its end (or dies)."""

    def note(kind: str) -> None:
        progress[:_PROGRESS_SIZE] = kind.encode()[: _PROGRESS_SIZE - 1].ljust(_PROGRESS_SIZE, b"\0")

    while True:
        header = _recv_exactly(sock, _HEADER.size)
        if header is None:
            return
        body = _recv_exactly(sock, _HEADER.unpack(header)[0])
        if body is None:
            return
        # the frame: the length of the settings, the settings, then the review (JSON text handed on as is)
        split = _HEADER.size + _HEADER.unpack_from(body)[0]
        message = orjson.loads(body[_HEADER.size : split])
        review_bytes = body[split:]
        shipped = message.get("inventory")
        if shipped is not None:
            validation.inventory = _InventorySnapshot(shipped[0], shipped[1])  # type: ignore[assignment]
        try:
            result = validation.review(
                orjson.loads(review_bytes),
                namespace_object=message.get("namespace"),
                deadline=message.get("deadline"),
                review_json=review_bytes.decode(),
                progress=note,
            )
            answer: dict[str, Any] = {
                "violations": [
                    [v.constraint.kind, v.constraint.name, v.message, v.details, list(v.actions)]
                    for v in result.violations
                ],
                "errors": result.errors,
            }
        except BaseException as err:  # noqa: BLE001 — also a panic inside an engine; the parent reports it
            answer = {"failure": f"{type(err).__name__}: {err}"}
        note("")
        try:
            data = orjson.dumps(answer)
        except TypeError as err:
            data = orjson.dumps({"failure": f"answer not serializable: {err}"})
        sock.sendall(_HEADER.pack(len(data)) + data)


def _enter_child(keep: int) -> None:
    """Become a quiet child: default signals, no inherited descriptors but ``keep`` and stdio, dies with its
    parent."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The serving process's sockets (listener, client connections, the event loop's) must not stay open here:
    # a connection the server closes would otherwise stay open for the client.
    os.closerange(3, keep)
    os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 65536)
    # Objects inherited from the server are never collected here (some wrap descriptors closed just above).
    gc.freeze()


# --------------------------------------------------------------------------- the serving side


class _Channel(asyncio.Protocol):
    """The serving side of the socket pair: one request frame out, one answer frame back. The socket stays
    registered with the event loop for the child's life (no per-review register/unregister)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[bytes] | None = None
        self._lost: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) < _HEADER.size:
            return
        size = _HEADER.unpack_from(self._buffer)[0]
        if len(self._buffer) < _HEADER.size + size:
            return
        frame = bytes(self._buffer[_HEADER.size : _HEADER.size + size])
        del self._buffer[: _HEADER.size + size]
        waiter, self._waiter = self._waiter, None
        if waiter is None or waiter.done():
            self._fail("the evaluating process answered out of turn")
        else:
            waiter.set_result(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail("the evaluating process exited")

    def _fail(self, reason: str) -> None:
        self._lost = reason
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(EvaluatorError(reason))

    async def request(self, data: bytes) -> bytes:
        if self._lost is not None or self.transport is None:
            raise EvaluatorError(self._lost or "not connected")
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(_HEADER.pack(len(data)) + data)
        return await self._waiter


class _Child:
    def __init__(self, validation: ValidationSystem) -> None:
        ours, theirs = socket.socketpair()
        self.progress = mmap.mmap(-1, _PROGRESS_SIZE)
        self.validation = validation
        self.constraints: dict[tuple[str, str], Constraint] = {c.key: c for c in validation.constraints()}
        self.inventory_version: int | None = validation.inventory.version  # the snapshot forked with it
        pid = os.fork()
        if pid == 0:  # the child
            code = 0
            try:
                ours.close()
                _enter_child(theirs.fileno())
                _child_main(theirs, validation, self.progress)
            except BaseException:  # noqa: BLE001
                code = 1
            finally:
                os._exit(code)
        theirs.close()
        ours.setblocking(False)
        self.pid = pid
        self.sock = ours
        self.channel: _Channel | None = None

    async def connect(self) -> _Channel:
        if self.channel is None:
            loop = asyncio.get_running_loop()
            _, self.channel = await loop.create_unix_connection(_Channel, sock=self.sock)
        return self.channel

    def running(self) -> str:
        return bytes(self.progress[:_PROGRESS_SIZE]).split(b"\0", 1)[0].decode(errors="replace")

    def close(self, *, kill: bool) -> None:
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        # without kill, the child sees EOF and exits
        if self.channel is not None and self.channel.transport is not None:
            try:
                self.channel.transport.abort()
            except RuntimeError:  # its event loop has ended (a test's asyncio.run): close the socket itself
                self.sock.close()
        else:
            self.sock.close()
        _reap(self.pid, wait=kill)


_unreaped: set[int] = set()


def _reap(pid: int | None = None, *, wait: bool = False) -> None:
    """Collect exited children (so none stays a zombie); ``wait`` for ``pid`` (just killed: it is quick)."""
    if pid is not None:
        _unreaped.add(pid)
    for p in list(_unreaped):
        try:
            done, _ = os.waitpid(p, 0 if wait and p == pid else os.WNOHANG)
        except ChildProcessError:
            done = p
        if done:
            _unreaped.discard(p)


class Evaluator:
    """The evaluating children of one serving process.

    Normally one child does all the work, one review at a time. A review that has waited ``spare_after`` seconds
    for a busy child (one evaluation is taking long) gets a child of its own, forked then, up to ``max_children``:
    so a runaway evaluation holds up only its own review, not every review queued behind it."""

    def __init__(
        self,
        *,
        max_children: int = 4,
        spare_after: float = 0.05,
        idle_for: float = 60.0,
        on_cut_off: Callable[[], None] | None = None,
    ) -> None:
        self.on_cut_off = on_cut_off
        self.max_children = max(1, max_children)
        self.spare_after = spare_after
        self.idle_for = idle_for  # an extra child idle this long is closed (one is always kept)
        self._idle: list[tuple[_Child, float]] = []  # (child, idle since)
        self._busy: set[_Child] = set()
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.cut_offs = 0  # evaluations cut off at their deadline (their child killed)
        self.forks = 0  # children forked, for any reason

    def pids(self) -> list[int]:
        """The children alive now (idle first)."""
        return [c.pid for c, _ in self._idle] + [c.pid for c in self._busy]

    def prefork(self, validation: ValidationSystem) -> None:
        """Have an idle child for ``validation`` ready (the first review would fork one otherwise)."""
        if not any(c.validation is validation for c, _ in self._idle):
            self._idle.append((self._fork(validation), time.monotonic()))

    def close(self) -> None:
        for child, _ in self._idle:
            child.close(kill=False)
        for child in self._busy:
            child.close(kill=True)
        self._idle.clear()
        self._busy.clear()

    def _fork(self, validation: ValidationSystem) -> _Child:
        self.forks += 1
        return _Child(validation)

    def _tidy(self, validation: ValidationSystem) -> None:
        """Close idle children of another policy set, and extra ones idle for ``idle_for``."""
        now = time.monotonic()
        keep: list[tuple[_Child, float]] = []
        for child, since in self._idle:
            if child.validation is not validation or (keep and now - since > self.idle_for):
                child.close(kill=False)
            else:
                keep.append((child, since))
        self._idle = keep

    async def _take(self, validation: ValidationSystem, deadline: float | None) -> _Child:
        loop = asyncio.get_running_loop()
        since = time.monotonic()
        while True:
            self._tidy(validation)
            if self._idle:
                child, _ = self._idle.pop()
                self._busy.add(child)
                return child
            now = time.monotonic()
            room = len(self._busy) < self.max_children
            if not self._busy or (room and now - since >= self.spare_after):
                child = self._fork(validation)
                self._busy.add(child)
                return child
            if deadline is not None and now >= deadline + _GRACE:
                raise CutOff("not evaluated: every evaluating process was busy with earlier reviews until the deadline")
            waits = [since + self.spare_after - now] if room else []
            if deadline is not None:
                waits.append(deadline + _GRACE - now)
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, min(waits) if waits else None)
            except TimeoutError:
                pass
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)

    def _give_back(self, child: _Child, *, broken: bool) -> None:
        self._busy.discard(child)
        if broken:
            child.close(kill=True)
        else:
            self._idle.append((child, time.monotonic()))
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break

    async def review(
        self,
        validation: ValidationSystem,
        review: Mapping[str, Any],
        *,
        namespace_object: Mapping[str, Any] | None = None,
        deadline: float | None = None,
    ) -> ReviewResult:
        """``validation.review(review, ...)`` in a child. Raises :class:`CutOff` (with the reason) when
        ``deadline`` (a ``time.monotonic()`` value) passes first, :class:`EvaluatorError` when the child fails."""
        child = await self._take(validation, deadline)
        message: dict[str, Any] = {"namespace": namespace_object, "deadline": deadline}
        inventory = validation.inventory
        if inventory.version != child.inventory_version:
            message["inventory"] = [inventory.version, inventory.inventory_json()]
        settings = orjson.dumps(message)
        data = _HEADER.pack(len(settings)) + settings + orjson.dumps(review)
        wait = None if deadline is None else max(0.0, deadline + _GRACE - time.monotonic())
        try:
            answer = await asyncio.wait_for(self._roundtrip(child, data), wait)
        except TimeoutError:
            running = child.running()
            self._give_back(child, broken=True)
            self.cut_offs += 1
            if self.on_cut_off is not None:
                self.on_cut_off()
            self._replenish(validation)
            where = f" while evaluating template {running}" if running else ""
            raise CutOff(f"validation cut off at the webhook's deadline{where}; the evaluation was stopped") from None
        except (OSError, EvaluatorError, orjson.JSONDecodeError) as err:
            self._give_back(child, broken=True)
            self._replenish(validation)
            raise EvaluatorError(f"the evaluating process failed: {err}") from err
        except BaseException:
            self._give_back(child, broken=True)  # cancelled mid-frame: the stream cannot be trusted any more
            raise
        child.inventory_version = inventory.version
        self._give_back(child, broken=False)
        if "failure" in answer:
            raise EvaluatorError(str(answer["failure"]))
        result = ReviewResult(errors=list(answer["errors"]))
        for kind, name, text, details, actions in answer["violations"]:
            constraint = child.constraints.get((kind, name))
            if constraint is None:  # cannot happen: the child was forked from this very policy set
                raise EvaluatorError(f"the evaluating process named an unknown constraint {kind}/{name}")
            result.violations.append(Violation(constraint, text, details, tuple(actions)))
        return result

    def _replenish(self, validation: ValidationSystem) -> None:
        """After a child was killed: have one ready before the next review arrives."""
        if not self._idle:
            try:
                self.prefork(validation)
            except OSError as err:
                log.error("cannot start a new evaluating process yet: %s", err)

    @staticmethod
    async def _roundtrip(child: _Child, data: bytes) -> dict[str, Any]:
        channel = await child.connect()
        answer = orjson.loads(await channel.request(data))
        if not isinstance(answer, dict):
            raise EvaluatorError("the evaluating process answered out of turn")
        return answer
