"""OpenTelemetry traces: each tools/call is a span (``tools/call <tool>``) carrying the principal, the tool, the
decision, its reason code and the rule that decided it, exported over OTLP/HTTP (OTLP specification 1.x,
"OTLP/HTTP", protobuf body) when ``[tracing] otlp_endpoint`` is configured.

The client's trace context is continued (W3C Trace Context, "traceparent"/"tracestate"): from ``_meta.traceparent``
of the request when the client put one there (the MCP way to carry it per request, whatever the transport), else
from the ``traceparent`` HTTP header. So one trace shows the agent, then Mandate, then anything Mandate calls
(a provider call made inside the span is its child).

Mandate's own spans go to the provider built here; it is also installed as the process's global provider when none
is installed yet, so libraries' spans join the same export. Without an endpoint nothing is exported and spans
cost what OpenTelemetry's no-op (or an embedding application's) provider costs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()


class Tracing:
    """The tracer Mandate's spans come from, and the provider to flush and shut down with the process."""

    def __init__(self, tracer: trace.Tracer, provider: Any | None = None) -> None:
        self.tracer = tracer
        self.provider = provider

    def force_flush(self, timeout_millis: int = 10_000) -> bool:
        return bool(self.provider.force_flush(timeout_millis)) if self.provider is not None else True

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()


def configure_tracing(
    endpoint: str | None, *, service_name: str, instance: str, headers: Mapping[str, str] | None = None
) -> Tracing:
    """Export spans to ``endpoint`` (``http://collector:4318/v1/traces``) when given; else the global tracer."""
    if not endpoint:
        return Tracing(trace.get_tracer("mandate"))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": service_name, "service.instance.id": instance})
    provider = TracerProvider(resource=resource)
    exporter = OTLPSpanExporter(endpoint=endpoint, headers=dict(headers or {}), timeout=10)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000))
    if type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider":  # nobody installed one yet
        trace.set_tracer_provider(provider)
    return Tracing(provider.get_tracer("mandate"), provider)


def _carrier(traceparent: object, tracestate: object = None) -> dict[str, str] | None:
    if not isinstance(traceparent, str) or not traceparent:
        return None
    carrier = {"traceparent": traceparent}
    if isinstance(tracestate, str) and tracestate:
        carrier["tracestate"] = tracestate
    return carrier


_NOTHING_TO_CONTINUE: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
"""What a request naming no trace continues: nothing (``nullcontext`` keeps no state, so one serves every request)."""


def _attached(carrier: dict[str, str] | None) -> contextlib.AbstractContextManager[None]:
    return _NOTHING_TO_CONTINUE if carrier is None else _attached_carrier(carrier)


@contextlib.contextmanager
def _attached_carrier(carrier: dict[str, str]) -> Iterator[None]:
    extracted = _PROPAGATOR.extract(carrier)
    if not trace.get_current_span(extracted).get_span_context().is_valid:  # malformed: start a trace of our own
        yield
        return
    token = otel_context.attach(extracted)
    try:
        yield
    finally:
        otel_context.detach(token)


def continued_from_meta(meta: object) -> contextlib.AbstractContextManager[None]:
    """Continue the trace named in a request's ``_meta`` (``traceparent``, optionally ``tracestate``)."""
    if meta is None:  # most requests: no _meta at all
        return _NOTHING_TO_CONTINUE
    if not isinstance(meta, dict | Mapping):
        extra = getattr(meta, "model_extra", None)
        meta = extra if isinstance(extra, dict | Mapping) else {}
    return _attached(_carrier(meta.get("traceparent"), meta.get("tracestate")))


def continued_from_headers(headers: list[tuple[bytes, bytes]]) -> contextlib.AbstractContextManager[None]:
    """Continue the trace named by an HTTP request's ``traceparent``/``tracestate`` headers (ASGI header list)."""
    found: dict[str, str] = {}
    for name, value in headers:
        if name in (b"traceparent", b"tracestate"):
            found[name.decode()] = value.decode("latin-1")
    return continued_from(found.get("traceparent"), found.get("tracestate"))


def continued_from(traceparent: str | None, tracestate: str | None) -> contextlib.AbstractContextManager[None]:
    """Continue the trace named by ``traceparent`` (and ``tracestate``), header values already read (the last of
    each, as :func:`continued_from_headers` reads them)."""
    return _attached(_carrier(traceparent, tracestate))
