"""The Starlette application: routes only; the work is in admission.py and the policy set it is given."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..metrics import CONTENT_TYPE, Metrics
from ..policy import PolicySet
from .admission import (
    MAX_BODY_BYTES,
    BadReview,
    MutationOptions,
    ValidationOptions,
    admitlabel_review,
    envelope,
    mutate_review,
    parse_review,
    validate_review,
    validate_review_isolated,
)
from .evaluator import Evaluator

log = logging.getLogger("mutator.webhook")

PolicyProvider = Callable[[], PolicySet]
# (review, or None when malformed; outcome, or None when answering failed; seconds taken)
Observer = Callable[[dict[str, Any] | None, Any, float], None]


class _TooLarge(Exception):
    pass


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _TooLarge(int(declared))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _TooLarge(size)
        chunks.append(chunk)
    return b"".join(chunks)


class FastJSONResponse(JSONResponse):
    """JSON through orjson (the answer to every AdmissionReview is serialized on the hot path)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _bad_request(reason: str) -> JSONResponse:
    return FastJSONResponse({"error": "bad request", "reason": reason}, status_code=400)


def create_app(
    policies: PolicyProvider,
    *,
    ready: Callable[[], bool] = lambda: True,
    options: MutationOptions | None = None,
    validation: ValidationOptions | None = None,
    metrics: Metrics | None = None,
) -> Starlette:
    """Build the app. ``policies`` returns the current policy set (read once per request).

    ``GET /metrics`` serves ``metrics`` (a new :class:`Metrics` by default) in the Prometheus text format on the
    app's own (TLS) port; Gatekeeper serves them on a separate plain-HTTP port (8888).
    """
    mutation_options = options or MutationOptions()
    validation_options = validation or ValidationOptions()
    metrics = metrics or Metrics()
    if metrics.policies is None:
        metrics.policies = policies

    async def read_review(request: Request) -> dict[str, Any] | Response:
        try:
            body = await _read_body(request)
        except _TooLarge as err:
            # the rest of the body is not read, so this connection cannot carry another request
            response = _bad_request(f"request body is over the {MAX_BODY_BYTES} byte limit ({err.args[0]} bytes)")
            response.headers["Connection"] = "close"
            return response
        except ClientDisconnect:
            return Response(status_code=400)
        try:
            return parse_review(body)
        except BadReview as err:
            return _bad_request(str(err))

    def internal_error(review: dict[str, Any], fail_open: bool) -> Response:
        # a bug must not become a traceback on the wire or a dead worker
        log.exception("internal error while answering request %s", review["request"].get("uid"))
        response = {
            "uid": review["request"]["uid"],
            "allowed": fail_open,
            "status": {"code": 500, "message": "internal error in mutator; see its log"},
        }
        return FastJSONResponse(envelope(review, response))

    def endpoint(answer: Callable[[dict[str, Any], PolicySet], Any], fail_open: bool, observe: Observer) -> Any:
        """``answer`` returns an outcome with the ``.response``; ``observe`` records every request."""

        async def handle(request: Request) -> Response:
            start = time.perf_counter()
            review = await read_review(request)
            if isinstance(review, Response):
                observe(None, None, time.perf_counter() - start)
                return review
            try:
                outcome = answer(review, policies())
                if inspect.isawaitable(outcome):
                    outcome = await outcome
            except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
                raise
            except BaseException:  # also a panic inside an engine (pyo3's PanicException is a BaseException)
                observe(review, None, time.perf_counter() - start)
                return internal_error(review, fail_open)
            response = FastJSONResponse(envelope(review, outcome.response))
            observe(review, outcome, time.perf_counter() - start)
            return response

        return handle

    mutate = endpoint(
        lambda review, current: mutate_review(
            review,
            current.mutation,
            current.namespace,
            mutation_options,
            excluded=current.excluder("mutation-webhook"),
        ),
        mutation_options.fail_open,
        lambda review, outcome, seconds: metrics.observe_mutation(outcome, seconds),
    )
    if validation_options.isolate:
        evaluator = Evaluator(on_cut_off=metrics.observe_cut_off)

        def validate(review: dict[str, Any], current: PolicySet) -> Any:
            return validate_review_isolated(
                review,
                current.validation,
                current.namespace,
                evaluator,
                validation_options,
                excluded=current.excluder("webhook"),
            )

    else:

        def validate(review: dict[str, Any], current: PolicySet) -> Any:
            return validate_review(
                review, current.validation, current.namespace, validation_options, excluded=current.excluder("webhook")
            )

    admit = endpoint(
        validate,
        validation_options.fail_open,
        metrics.observe_validation,
    )
    # Gatekeeper's namespace label webhook: not counted in the request metrics, as in Gatekeeper
    admitlabel = endpoint(lambda review, current: admitlabel_review(review, validation_options), False, lambda *_: None)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(request: Request) -> Response:
        if ready():
            return PlainTextResponse("ok")
        return PlainTextResponse("policies not loaded yet", status_code=503)

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    routes = [
        Route("/v1/mutate", mutate, methods=["POST"]),
        Route("/v1/admit", admit, methods=["POST"]),
        Route("/v1/admitlabel", admitlabel, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
    return Starlette(routes=routes)
