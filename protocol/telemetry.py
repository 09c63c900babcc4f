"""OpenTelemetry traces for the registry and every agent: one setup, W3C propagation, names.

Tracing is **off unless asked for**. :func:`configure_tracing` (called once per process, by
``serve_agent`` and the registry's ``serve``) reads the standard ``OTEL_*`` environment:

- ``OTEL_SDK_DISABLED=true`` keeps it off whatever else is set;
- ``OTEL_TRACES_EXPORTER``: a comma-separated list of ``otlp``, ``console``, ``none``, and our
  ``discard`` (spans are made, batched and encoded as OTLP, then dropped: the cost of tracing
  without a collector, for benchmarks); unset, it is ``otlp`` when
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set, else off
  (the one departure from the specification's default, so a stack without a collector pays
  nothing);
- ``otlp`` speaks ``http/protobuf`` unless ``OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL=grpc``; the
  exporter reads its own endpoint, headers, timeout and compression variables;
- ``OTEL_TRACES_SAMPLER`` (default ``parentbased_always_on``), ``OTEL_BSP_*`` (the batch
  processor) and ``OTEL_RESOURCE_ATTRIBUTES`` work as everywhere; ``service.name`` is the
  component's name (``orchestrator``, ``registry``...), ``service.namespace`` ``scriptorium``.

When off, :func:`tracer` is OpenTelemetry's no-op tracer: a span costs a context switch of a
few microseconds (``docs/observability.md`` has the figures) and :func:`inject` writes nothing.

**a2a-sdk's own spans** (``a2a.utils.telemetry``: a span per request-handler method, per event
queued, per transport call) are dropped by our provider unless
``OTEL_INSTRUMENTATION_A2A_SDK_ENABLED=true`` is set explicitly: they would double our
``invoke_agent`` spans (one per streamed token) and start traces of their own, because the SDK
does not read the caller's ``traceparent``.

Span and attribute names follow the OpenTelemetry GenAI semantic conventions (development
status); ``a2a.*`` and ``scriptorium.*`` attributes are ours.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, TraceFlags, Tracer
from opentelemetry.util.types import AttributeValue

log = logging.getLogger(__name__)

INSTRUMENTATION = "scriptorium"
SERVICE_NAMESPACE = "scriptorium"
#: The instrumentation scope of a2a-sdk's spans, and its switch (default on in the SDK).
A2A_SDK_SCOPE = "a2a-python-sdk"
A2A_SDK_SWITCH = "OTEL_INSTRUMENTATION_A2A_SDK_ENABLED"
EXPORTERS = ("otlp", "console", "discard", "none")

# -- names (GenAI semantic conventions; a2a.* and scriptorium.* are ours) ----------------------
OPERATION = "gen_ai.operation.name"
AGENT_NAME = "gen_ai.agent.name"
CONVERSATION_ID = "gen_ai.conversation.id"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
REQUEST_TEMPERATURE = "gen_ai.request.temperature"
REQUEST_TOP_P = "gen_ai.request.top_p"
REQUEST_SEED = "gen_ai.request.seed"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
DATA_SOURCE = "gen_ai.data_source.id"
RETRIEVAL_QUERY = "gen_ai.retrieval.query.text"
RETRIEVAL_TOP_K = "gen_ai.retrieval.top_k"
RETRIEVAL_DOCUMENTS = "gen_ai.retrieval.documents"
EVALUATION_RESULT = "gen_ai.evaluation.result"
EVALUATION_NAME = "gen_ai.evaluation.name"
EVALUATION_SCORE = "gen_ai.evaluation.score.value"
EVALUATION_LABEL = "gen_ai.evaluation.score.label"
EVALUATION_EXPLANATION = "gen_ai.evaluation.explanation"
SERVER_ADDRESS = "server.address"
TASK_ID = "a2a.task.id"
TASK_STATE = "a2a.task.state"
SKILL = "a2a.skill"
RETRIEVAL_HITS = "scriptorium.retrieval.hits"
TTFT_MS = "scriptorium.inference.ttft_ms"

_FALLBACK = trace.get_tracer(INSTRUMENTATION)  # follows the global provider, no-op until set
_tracer: Tracer | None = None
_provider: TracerProvider | None = None  # the one configure_tracing installed
_NOOP = trace.NoOpTracer()


def tracer() -> Tracer:
    """Scriptorium's tracer: the configured provider's, else the global (no-op) one."""
    return _tracer if _tracer is not None else _FALLBACK


class ScriptoriumTracerProvider(TracerProvider):
    """The SDK's provider, giving a2a-sdk's instrumentation a no-op tracer unless asked."""

    def __init__(self, *args: Any, sdk_spans: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sdk_spans = sdk_spans

    def get_tracer(self, instrumenting_module_name: str, *args: Any, **kwargs: Any) -> Tracer:
        if instrumenting_module_name == A2A_SDK_SCOPE and not self.sdk_spans:
            return _NOOP
        return super().get_tracer(instrumenting_module_name, *args, **kwargs)


def configure_tracing(
    service_name: str,
    *,
    exporter: SpanExporter | None = None,
    environ: Mapping[str, str] | None = None,
) -> TracerProvider | None:
    """Trace this process as ``service_name`` when the environment asks for it.

    Returns the provider (installed as OpenTelemetry's global one too), or None when tracing
    stays off. ``exporter`` replaces what ``OTEL_TRACES_EXPORTER`` says (tests). Calling it
    again returns the provider already installed.
    """
    global _tracer, _provider
    env = os.environ if environ is None else environ
    current = trace.get_tracer_provider()
    if isinstance(current, ScriptoriumTracerProvider):
        return current
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    exporters = [exporter] if exporter is not None else exporters_from(env)
    if not exporters:
        return None
    provider = ScriptoriumTracerProvider(
        resource=Resource.create(
            {"service.name": service_name, "service.namespace": SERVICE_NAMESPACE}
        ),
        sdk_spans=env.get(A2A_SDK_SWITCH, "").strip().lower() == "true",
    )
    for each in exporters:
        provider.add_span_processor(BatchSpanProcessor(each))
    trace.set_tracer_provider(provider)
    _provider, _tracer = provider, provider.get_tracer(INSTRUMENTATION)
    log.info(
        "tracing on",
        extra={"service": service_name, "exporters": [type(e).__name__ for e in exporters]},
    )
    return provider


def shutdown_tracing() -> None:
    """Export what is left and stop (a stopping app's last step). uvicorn ends a process
    stopped by SIGTERM with that signal once it has shut down, so the SDK's exit hook would
    not run and the last batch would be lost. Nothing to do when tracing is off."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
        _provider, _tracer = None, None


def exporters_from(env: Mapping[str, str]) -> list[SpanExporter]:
    """The exporters ``OTEL_TRACES_EXPORTER`` names (empty: tracing stays off)."""
    named = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not named:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        named = "otlp" if endpoint else "none"
    chosen = [name.strip() for name in named.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in EXPORTERS]
    if unknown:
        raise ValueError(
            f"OTEL_TRACES_EXPORTER={named!r}: unknown {', '.join(unknown)}; "
            f"use one or more of {', '.join(EXPORTERS)}"
        )
    exporters: list[SpanExporter] = []
    for name in dict.fromkeys(chosen):
        if name == "otlp":
            exporters.append(_otlp_exporter(env))
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name == "discard":
            exporters.append(DiscardExporter())
    return exporters


def _otlp_exporter(env: Mapping[str, str]) -> SpanExporter:
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcExporter,
            )
        except ImportError as exc:
            raise ImportError(
                "OTLP over gRPC needs opentelemetry-exporter-otlp-proto-grpc: install it, or "
                "set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf"
            ) from exc
        return GrpcExporter()
    if protocol != "http/protobuf":
        raise ValueError(
            f"OTLP protocol {protocol!r} is not supported here; use http/protobuf or grpc"
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


class DiscardExporter(SpanExporter):
    """Encodes every batch as OTLP protobuf, as the OTLP exporters do before sending, then
    drops it; counts what went through (logged at shutdown). For measuring tracing's cost."""

    def __init__(self) -> None:
        self.spans = 0
        self.bytes = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        self.bytes += len(encode_spans(spans).SerializeToString())
        self.spans += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        log.info("traces discarded", extra={"spans": self.spans, "bytes": self.bytes})


@contextlib.contextmanager
def using_provider(provider: TracerProvider) -> Iterator[TracerProvider]:
    """Send Scriptorium's spans to ``provider`` inside the block (tests, benchmarks), without
    touching OpenTelemetry's global provider (which can be set only once per process)."""
    global _tracer
    previous, _tracer = _tracer, provider.get_tracer(INSTRUMENTATION)
    try:
        yield provider
    finally:
        _tracer = previous


# -- propagation (W3C traceparent / tracestate, through OpenTelemetry's global propagator) ---


def inject(carrier: dict[str, str] | None = None) -> dict[str, str]:
    """The active trace context as headers (empty when there is none)."""
    carrier = {} if carrier is None else carrier
    propagate.inject(carrier)
    return carrier


def extract(headers: Mapping[str, Any] | None) -> Context:
    """The caller's trace context from request headers or gRPC metadata (lower-case keys)."""
    return propagate.extract(headers or {})


def trace_id_of(span: Span | None = None) -> str | None:
    """The trace id (32 hex digits) of ``span`` (default: the active one), if any."""
    context = (span or trace.get_current_span()).get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def remote_parent(*, sampled: bool) -> Context:
    """A context as if a caller with a fresh trace had sent ``traceparent`` (sampled or not):
    what a load generator attaches to decide, per request, whether the team records it."""
    span_context = SpanContext(
        trace_id=int(secrets.token_hex(16), 16) or 1,
        span_id=int(secrets.token_hex(8), 16) or 1,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
    )
    return trace.set_span_in_context(NonRecordingSpan(span_context))


# -- recording ----------------------------------------------------------------------------------


def annotate(attributes: Mapping[str, AttributeValue | None], span: Span | None = None) -> None:
    """Set ``attributes`` (None values skipped) on ``span`` (default: the active one), if it
    is recording."""
    span = span or trace.get_current_span()
    if span.is_recording():
        span.set_attributes({k: v for k, v in attributes.items() if v is not None})


def record_evaluation(
    span: Span,
    name: str,
    *,
    score: float | None = None,
    label: str | None = None,
    explanation: str | None = None,
    **extra: AttributeValue,
) -> None:
    """A ``gen_ai.evaluation.result`` event on ``span``."""
    attributes: dict[str, AttributeValue] = {EVALUATION_NAME: name, **extra}
    if score is not None:
        attributes[EVALUATION_SCORE] = score
    if label is not None:
        attributes[EVALUATION_LABEL] = label
    if explanation:
        attributes[EVALUATION_EXPLANATION] = explanation
    span.add_event(EVALUATION_RESULT, attributes)
