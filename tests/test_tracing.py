"""Tracing (issue 19, item 6): a claim is one request span with its SQL and Redis children.

The app gets its own tracer provider with an in-memory exporter (``create_app(...,
tracer_provider=...)``); the global provider is never set, so these tests leave nothing
behind for the rest of the suite. On the embedded backend there is no Redis: a claim's
children are SQL spans only.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, format_trace_id

from bff.app import create_app
from bff.keys import TRACING
from tests.conftest import expect
from tests.helpers import claim, create_template, json_log_lines

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.shutdown()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


def _system(span: ReadableSpan) -> Any:
    attributes = span.attributes or {}
    return attributes.get("db.system.name", attributes.get("db.system"))


def _ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[int]:
    chain = []
    while span.parent is not None:
        chain.append(span.parent.span_id)
        if span.parent.span_id not in by_id:
            break
        span = by_id[span.parent.span_id]
    return chain


async def test_a_claim_is_one_request_span_with_its_sql_and_redis_children(
    backend, aiohttp_client, settings, clock, tmp_path, auth, merchant, provider, exporter
):
    server = dataclasses.replace(settings.server, access_log=True)
    app = create_app(
        settings.replace(server=server), clock=clock, base_dir=tmp_path, tracer_provider=provider
    )
    client = await aiohttp_client(app)
    template = await create_template(client, clock, merchant)
    exporter.clear()

    with json_log_lines("bff.access") as lines:
        response = await claim(client, auth("user", sub="u1"), template["id"], device={"id": "d1"})
    await expect(response, HTTPStatus.CREATED)
    request_id = response.headers["X-Request-Id"]

    finished = exporter.get_finished_spans()
    requests = [span for span in finished if span.kind is SpanKind.SERVER]
    assert len(requests) == 1, [span.name for span in requests]
    request = requests[0]
    assert request.name == "POST /api/v1/shops/{shop_id}/coupons/claim"
    assert request.parent is None
    assert request.attributes is not None
    assert request.attributes["bff.request_id"] == request_id
    assert request.attributes["http.status_code"] == HTTPStatus.CREATED
    trace_id = request.context.trace_id
    children = [span for span in finished if span is not request]
    assert children and all(span.context.trace_id == trace_id for span in children)
    by_id = {span.context.span_id: span for span in finished}
    for span in children:
        assert request.context.span_id in _ancestors(span, by_id), span.name
        assert span.kind is SpanKind.CLIENT, span.name
    sql = [span for span in children if _system(span) in ("sqlite", "mysql")]
    redis = [span for span in children if _system(span) == "redis"]
    assert len(sql) + len(redis) == len(children), [span.name for span in children]
    statements = " ".join(str((span.attributes or {}).get("db.statement", "")) for span in sql)
    assert "INSERT INTO coupons" in statements, statements
    if backend == "mariadb":
        assert redis, "a claim on Redis goes through the gate's scripts"
        assert any("EVALSHA" in span.name for span in redis), [span.name for span in redis]
    else:
        assert redis == []  # the embedded backend's gate is in-process: no Redis

    # The access log line of the claim carries its request id and trace id.
    (line,) = [entry for entry in lines if entry.get("request_id") == request_id]
    assert line["trace_id"] == format_trace_id(trace_id)


async def test_tracing_off_adds_no_middleware_and_no_trace_id(aiohttp_client, make_app, settings):
    server = dataclasses.replace(settings.server, access_log=True)
    client = await aiohttp_client(make_app(settings=settings.replace(server=server)))
    assert client.app[TRACING] is None
    modules = [getattr(middleware, "__module__", "") for middleware in client.app.middlewares]
    assert not [name for name in modules if name.startswith(("opentelemetry", "bff.tracing"))]
    with json_log_lines("bff.access") as lines:
        response = await client.get("/healthz", headers={"X-Request-Id": "untraced-1"})
    assert response.status == HTTPStatus.OK
    (line,) = lines
    assert line["request_id"] == "untraced-1" and "trace_id" not in line


def test_tracing_off_imports_nothing_of_opentelemetry_tracing(tmp_path):
    """Off: building and serving the app never imports the SDK's tracing or the
    instrumentations (redis-py 8 itself imports the metrics SDK when it is installed)."""
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from bff.app import create_app\n"
        "from config.loader import load_settings\n"
        f"create_app(load_settings({{}}, base_dir=Path({str(tmp_path)!r})))\n"
        "names = sorted(n for n in sys.modules if n.startswith(("
        "'opentelemetry.instrumentation', 'opentelemetry.sdk.trace')))\n"
        "print(','.join(names))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == ""


def test_the_console_exporter_setting_builds_a_provider_of_our_own(tmp_path):
    from bff.tracing import SERVICE_NAME, Tracing
    from config.loader import TracingSettings

    assert Tracing.from_settings(TracingSettings()) is None
    tracing = Tracing.from_settings(TracingSettings(exporter="console"))
    assert tracing is not None and tracing.owned
    try:
        resource = tracing.provider.resource.attributes
        assert resource["service.name"] == SERVICE_NAME
    finally:
        tracing.close()
