"""OpenTelemetry spans for requests, SQL and Redis, when ``tracing.exporter`` is set.

Off by default (``BFF_OTEL_EXPORTER`` empty): nothing of OpenTelemetry is imported and
no middleware or event listener is added, so tracing costs nothing per request. On
(``otlp`` or ``console``), each request is a SERVER span made by
opentelemetry-instrumentation-aiohttp-server, with a CLIENT span per SQL statement
(-sqlalchemy, on this app's engine) and per Redis command or pipeline (-redis, on this
app's client) as its children, and the JSON log lines carry its ``trace_id``.

The tracer provider is passed explicitly to every instrumentation; the global one is
never set, so two apps in one process (tests) each record into their own provider, and
nothing else in the process is patched. Work a request starts in a task of its own
inherits the request's context: a claim batch's SQL (bff.coupons.ledger) and the
coalesced Redis pipeline (bff.gate.redis) are children of the request that opened the
batch or the pipeline; requests that joined it later show only their own spans.
"""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bff.keys import REQUEST_ID
from bff.logs import trace_id_var
from config.loader import TracingSettings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from sqlalchemy.ext.asyncio import AsyncEngine

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]
SERVICE_NAME = "coupon-bff"
REQUEST_ID_ATTRIBUTE = "bff.request_id"

_aiohttp_ready = False


class Tracing:
    """One app's tracer provider and the instrumentations that use it."""

    def __init__(self, provider: TracerProvider, *, owned: bool) -> None:
        self.provider = provider
        # A provider made from the settings is shut down (flushed) with the app; one
        # passed in belongs to the caller.
        self.owned = owned

    @classmethod
    def from_settings(
        cls, settings: TracingSettings, provider: TracerProvider | None = None
    ) -> Tracing | None:
        """None when tracing is off and no provider is given."""
        if provider is not None:
            return cls(provider, owned=False)
        if not settings.exporter:
            return None
        return cls(_provider(settings.exporter), owned=True)

    def middlewares(self) -> list[Middleware]:
        """The request span (outermost), then the trace id for the log lines."""
        from opentelemetry.instrumentation.aiohttp_server import create_aiohttp_middleware

        _prepare_aiohttp_instrumentation()
        return [create_aiohttp_middleware(tracer_provider=self.provider), _ids_middleware()]

    def instrument_engine(self, engine: AsyncEngine) -> None:
        """A CLIENT span per statement of this engine (its listeners go with the engine)."""
        from opentelemetry.instrumentation.sqlalchemy import __version__
        from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
        from opentelemetry.metrics import NoOpMeterProvider

        tracer = self.provider.get_tracer("opentelemetry.instrumentation.sqlalchemy", __version__)
        # Spans only: the pool-usage counter it also keeps goes to a meter that drops it.
        usage = (
            NoOpMeterProvider()
            .get_meter("opentelemetry.instrumentation.sqlalchemy")
            .create_up_down_counter("db.client.connections.usage")
        )
        EngineTracer(tracer, engine.sync_engine, usage)

    def instrument_direct_reads(self, db: Any) -> None:
        """A CLIENT span per direct read (bff.db.engine.Database.fetch), which runs past
        SQLAlchemy's execution layer that the instrumentation above hooks into."""
        from opentelemetry.trace import SpanKind

        tracer = self.provider.get_tracer("bff.db.direct")

        def span(statement: str) -> Any:
            return tracer.start_as_current_span(
                statement.split(None, 1)[0],
                kind=SpanKind.CLIENT,
                attributes={"db.system": "mysql", "db.statement": statement},
            )

        db.direct_span = span

    def instrument_redis(self, gate: Any) -> None:
        """A CLIENT span per command or pipeline of this gate's client, and per pipeline of
        scripts (which the gate writes on a pooled connection itself, past redis-py's
        pipeline that the instrumentation wraps)."""
        from opentelemetry.instrumentation.redis import RedisInstrumentor
        from opentelemetry.trace import SpanKind

        RedisInstrumentor.instrument_client(gate.client, tracer_provider=self.provider)
        tracer = self.provider.get_tracer("bff.gate.redis")

        def span(calls: int) -> Any:
            return tracer.start_as_current_span(
                "EVALSHA",
                kind=SpanKind.CLIENT,
                attributes={
                    "db.system": "redis",
                    "db.statement": f"EVALSHA x{calls}",
                    "db.redis.pipeline_length": calls,
                },
            )

        gate.trace_pipelines(span)

    def close(self) -> None:
        if self.owned:
            self.provider.shutdown()


def _provider(exporter: str) -> TracerProvider:
    from opentelemetry.sdk.resources import SERVICE_NAME as SERVICE_NAME_KEY
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    span_exporter: SpanExporter
    if exporter == "otlp":
        # Endpoint, headers and timeout from the standard OTEL_EXPORTER_OTLP_* variables.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        span_exporter = OTLPSpanExporter()
    else:
        span_exporter = ConsoleSpanExporter()
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES apply; without a name, ours.
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME_KEY, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME_KEY: SERVICE_NAME}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(span_exporter))
    return provider


def _prepare_aiohttp_instrumentation() -> None:
    """Let the aiohttp-server instrumentation set up its module state, once per process.

    Its ``instrument()`` reads the excluded URLs (OTEL_PYTHON_AIOHTTP_SERVER_EXCLUDED_URLS)
    and makes its meters, then swaps ``web.Application`` for a subclass that adds its
    middleware to every app; we swap it straight back and add the middleware to this
    app ourselves, with this app's provider.
    """
    global _aiohttp_ready
    if _aiohttp_ready:
        return
    from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor

    instrumentor = AioHttpServerInstrumentor()
    with warnings.catch_warnings():
        # aiohttp discourages the subclass it makes; it is gone again on the next line.
        warnings.simplefilter("ignore", DeprecationWarning)
        instrumentor.instrument()
    instrumentor.uninstrument()
    _aiohttp_ready = True


def _ids_middleware() -> Middleware:
    """The trace id into the log lines; the request id onto the request span."""
    from opentelemetry import trace

    @web.middleware
    async def ids(request: web.Request, handler: Handler) -> web.StreamResponse:
        span = trace.get_current_span()
        context = span.get_span_context()
        trace_id = trace.format_trace_id(context.trace_id) if context.is_valid else None
        token = trace_id_var.set(trace_id) if trace_id is not None else None
        try:
            return await handler(request)
        finally:
            if REQUEST_ID in request:
                span.set_attribute(REQUEST_ID_ATTRIBUTE, request[REQUEST_ID])
            if token is not None:
                trace_id_var.reset(token)

    return ids
