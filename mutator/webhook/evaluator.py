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
from collections.abc import Mapping
from typing import Any

import orjson

from ..validation.constraints import WEBHOOK_POINT, Constraint
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
    """The deadline passed before the child answered; the child has been replaced."""


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
        message = orjson.loads(body)
        shipped = message.get("inventory")
        if shipped is not None:
            validation.inventory = _InventorySnapshot(shipped[0], shipped[1])  # type: ignore[assignment]
        try:
            result = validation.review(
                message["review"],
                namespace_object=message.get("namespace"),
                source=message.get("source") or "Original",
                point=message.get("point") or WEBHOOK_POINT,
                deadline=message.get("deadline"),
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

    def running(self) -> str:
        return bytes(self.progress[:_PROGRESS_SIZE]).split(b"\0", 1)[0].decode(errors="replace")

    def close(self, *, kill: bool) -> None:
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        self.sock.close()  # without kill, the child sees EOF and exits
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
    """One evaluating child per serving process; reviews go to it one at a time, in arrival order."""

    def __init__(self) -> None:
        self._child: _Child | None = None
        self._lock = asyncio.Lock()
        self.cut_offs = 0  # evaluations cut off at their deadline (the child was replaced each time)
        self.restarts = 0  # children forked after the first, for any reason

    def _current(self, validation: ValidationSystem) -> _Child:
        child = self._child
        if child is not None and child.validation is validation:
            return child
        if child is not None:
            child.close(kill=False)
            self.restarts += 1
        self._child = _Child(validation)
        return self._child

    def close(self) -> None:
        if self._child is not None:
            self._child.close(kill=False)
            self._child = None

    async def review(
        self,
        validation: ValidationSystem,
        review: Mapping[str, Any],
        *,
        namespace_object: Mapping[str, Any] | None = None,
        deadline: float | None = None,
    ) -> ReviewResult:
        """``validation.review(review, ...)`` in the child. Raises :class:`CutOff` (with the reason) when
        ``deadline`` (a ``time.monotonic()`` value) passes first, :class:`EvaluatorError` when the child fails."""
        if not await _acquire(self._lock, None if deadline is None else deadline + _GRACE):
            raise CutOff("not evaluated: an earlier review held the evaluating process until the deadline")
        try:
            return await self._review_locked(validation, review, namespace_object, deadline)
        finally:
            self._lock.release()

    async def _review_locked(
        self,
        validation: ValidationSystem,
        review: Mapping[str, Any],
        namespace_object: Mapping[str, Any] | None,
        deadline: float | None,
    ) -> ReviewResult:
        child = self._current(validation)
        message: dict[str, Any] = {"review": review, "namespace": namespace_object, "deadline": deadline}
        inventory = validation.inventory
        if inventory.version != child.inventory_version:
            message["inventory"] = [inventory.version, inventory.inventory_json()]
        data = orjson.dumps(message)
        wait = None if deadline is None else max(0.0, deadline + _GRACE - time.monotonic())
        try:
            answer = await asyncio.wait_for(self._roundtrip(child, data), wait)
        except TimeoutError:
            running = child.running()
            self._replace(child, kill=True)
            self.cut_offs += 1
            where = f" while evaluating template {running}" if running else ""
            raise CutOff(f"validation cut off at the webhook's deadline{where}; the evaluation was stopped") from None
        except (OSError, EvaluatorError, orjson.JSONDecodeError) as err:
            self._replace(child, kill=True)
            raise EvaluatorError(f"the evaluating process failed: {err}") from err
        except BaseException:
            self._replace(child, kill=True)  # cancelled mid-frame: the stream cannot be trusted any more
            raise
        child.inventory_version = inventory.version
        if "failure" in answer:
            raise EvaluatorError(str(answer["failure"]))
        result = ReviewResult(errors=list(answer["errors"]))
        for kind, name, text, details, actions in answer["violations"]:
            constraint = child.constraints.get((kind, name))
            if constraint is None:  # cannot happen: the child was forked from this very policy set
                raise EvaluatorError(f"the evaluating process named an unknown constraint {kind}/{name}")
            result.violations.append(Violation(constraint, text, details, tuple(actions)))
        return result

    def _replace(self, child: _Child, *, kill: bool) -> None:
        child.close(kill=kill)
        if self._child is child:
            self._child = None
        self.restarts += 1
        try:
            self._child = _Child(child.validation)  # ready before the next review arrives
        except OSError as err:
            log.error("cannot start a new evaluating process yet: %s", err)

    @staticmethod
    async def _roundtrip(child: _Child, data: bytes) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(child.sock, _HEADER.pack(len(data)) + data)
        header = await _read(loop, child.sock, _HEADER.size)
        body = await _read(loop, child.sock, _HEADER.unpack(header)[0])
        answer = orjson.loads(body)
        if not isinstance(answer, dict):
            raise EvaluatorError("the evaluating process answered out of turn")
        return answer


async def _acquire(lock: asyncio.Lock, deadline: float | None) -> bool:
    """``lock.acquire()`` until ``deadline``; False (and the lock not held) when it passed first."""
    if not lock.locked():
        return await lock.acquire()
    task = asyncio.ensure_future(lock.acquire())
    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if done:
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        if await task:  # acquired just as it was cancelled
            lock.release()
    return False


async def _read(loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int) -> bytes:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = await loop.sock_recv_into(sock, view[got:])
        if n == 0:
            raise EvaluatorError("the evaluating process exited")
        got += n
    return bytes(buf)
