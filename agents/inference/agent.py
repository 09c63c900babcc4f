"""The inference agent: the one place the model runs.

Skill ``generate`` (A2A): chat messages and sampling parameters in; tokens streamed as chunks
of a ``tokens`` artifact, then a ``generation`` artifact with the final text and usage.
Every task is one streaming request to the engine, so concurrent tasks share its continuous
batch; cancelling a task closes that request and vLLM aborts it. The same agent serves an
OpenAI-compatible ``/v1`` and relays vLLM's metrics on ``/metrics``.

Each generation is a ``chat {model}`` CLIENT span (GenAI semantic conventions: the request's
model and sampling parameters, the response's model, finish reason and token usage) inside
the task's ``invoke_agent inference`` span; its ``traceparent`` goes to vLLM with the request.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.trace import SpanKind

from agents.inference import metrics
from agents.inference.engine import Engine, open_engine
from agents.inference.openai_api import openai_routes
from agents.inference.settings import InferenceSettings
from agents.inference.upstream import UpstreamError
from agents.scaffold.app import AgentParts
from agents.scaffold.executor import BadRequest, SkillCall, SkillError
from agents.scaffold.settings import AgentSettings
from protocol import telemetry
from protocol.cards import CardSpec, Skill
from protocol.payloads import ChatMessage, GenerateRequest, Generation, Usage

CARD = CardSpec(
    name="inference",
    description="Serves the language model through vLLM with continuous batching and streaming.",
    capacity=64,
    skills=[
        Skill(
            id="generate",
            name="Generate",
            description="Chat messages and sampling parameters (GenerateRequest) -> tokens "
            "streamed as a 'tokens' artifact, then a 'generation' artifact with the text and "
            "usage. Cancellable.",
            tags=["llm", "generation", "vllm", "streaming"],
            examples=[
                '{"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 64}',
                "Hello",
            ],
            input_modes=("application/json", "text/plain"),
            output_modes=("text/plain", "application/json"),
        )
    ],
    primary_skill="generate",
)
TOKENS_ARTIFACT = "tokens"
GENERATION_ARTIFACT = "generation"


def generate_request(text: str) -> GenerateRequest:
    """A plain text message is one user turn, generated with the default parameters."""
    return GenerateRequest(messages=[ChatMessage(role="user", content=text)])


class Inference:
    """The generate skill over one engine (managed vLLM server or external URL)."""

    def __init__(self, settings: InferenceSettings) -> None:
        self.settings = settings
        self.engine: Engine = open_engine(settings)
        self.stream_interval_s = settings.stream_interval_ms / 1000

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        await self.engine.start()
        try:
            yield
        finally:
            await self.engine.stop()

    def ready(self) -> bool:
        return self.engine.ready

    def status(self) -> dict[str, Any]:
        return {"engine": self.engine.status()}

    async def metrics_text(self) -> str:
        if not self.engine.ready:
            return ""
        return metrics.vllm_families(await self.engine.upstream.metrics())

    @property
    def default_model(self) -> str:
        if self.settings.served_model_name or not self.engine.models:
            return self.settings.model_name
        return self.engine.models[0]

    def _body(self, request: GenerateRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model or self.default_model,
            "messages": [m.model_dump() for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "stream_options": {"include_usage": True},
        }
        if request.stop:
            body["stop"] = request.stop
        if request.seed is not None:
            body["seed"] = request.seed
        if request.ignore_eos:
            body["ignore_eos"] = True
        if request.json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": request.json_schema},
            }
        return body

    async def generate(self, call: SkillCall) -> None:
        request = call.parse(GenerateRequest, from_text=generate_request)
        if not self.engine.ready:
            raise SkillError("the inference engine is starting (or restarting); retry shortly")
        body = self._body(request)
        with telemetry.tracer().start_as_current_span(
            f"chat {body['model']}",
            kind=SpanKind.CLIENT,
            attributes={
                telemetry.OPERATION: "chat",
                telemetry.PROVIDER: "vllm",
                telemetry.REQUEST_MODEL: str(body["model"]),
                telemetry.REQUEST_MAX_TOKENS: request.max_tokens,
                telemetry.REQUEST_TEMPERATURE: request.temperature,
                telemetry.REQUEST_TOP_P: request.top_p,
                telemetry.SERVER_ADDRESS: urlsplit(self.engine.upstream.root_url).hostname or "",
            },
        ) as span:
            generation, answered_by = await self._generate(call, body)
            finish = generation.finish_reason
            telemetry.annotate(
                {
                    telemetry.RESPONSE_MODEL: answered_by,
                    telemetry.RESPONSE_FINISH_REASONS: [finish] if finish else None,
                    telemetry.INPUT_TOKENS: generation.usage.prompt_tokens,
                    telemetry.OUTPUT_TOKENS: generation.usage.completion_tokens,
                    telemetry.TTFT_MS: generation.usage.ttft_ms,
                    telemetry.REQUEST_SEED: request.seed,
                },
                span,
            )
        await call.emit(generation, name=GENERATION_ARTIFACT)

    async def _generate(self, call: SkillCall, body: dict[str, Any]) -> tuple[Generation, str]:
        """Stream one chat completion from the engine, tokens forwarded as they come; the
        generation, and the model the engine says answered."""
        started = time.perf_counter()
        first_token_at: float | None = None
        last_flush = 0.0
        text: list[str] = []
        pending: list[str] = []
        finish_reason: str | None = None
        usage: dict[str, Any] = {}
        response_model = str(body["model"])
        try:
            async for chunk in self.engine.upstream.stream_chat(body):
                response_model = str(chunk.get("model") or response_model)
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices", ()):
                    finish_reason = choice.get("finish_reason") or finish_reason
                    delta = (choice.get("delta") or {}).get("content")
                    if delta:
                        pending.append(delta)
                if not pending:
                    continue
                now = time.perf_counter()
                if first_token_at is None:
                    first_token_at = now
                elif now - last_flush < self.stream_interval_s:
                    continue
                piece = "".join(pending)
                pending.clear()
                text.append(piece)
                last_flush = now
                await call.stream_text(TOKENS_ARTIFACT, piece)
        except UpstreamError as exc:
            if exc.is_client_error:
                raise BadRequest(exc.message) from exc
            raise SkillError(
                f"the inference engine failed: {exc.message}. It is restarted automatically; "
                "retry, and see the agent's log if this persists."
            ) from exc
        ended = time.perf_counter()
        piece = "".join(pending)
        text.append(piece)
        await call.stream_text(TOKENS_ARTIFACT, piece, last=True)
        prompt_tokens = int(usage.get("prompt_tokens", 0))
        completion_tokens = int(usage.get("completion_tokens", 0))
        metrics.TOKENS.labels("prompt").inc(prompt_tokens)
        metrics.TOKENS.labels("completion").inc(completion_tokens)
        generation = Generation(
            text="".join(text),
            finish_reason=finish_reason,
            model=str(body["model"]),
            usage=Usage(
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                ttft_ms=round(((first_token_at or ended) - started) * 1000, 2),
                duration_ms=round((ended - started) * 1000, 2),
            ),
        )
        return generation, response_model


def parts(settings: InferenceSettings) -> AgentParts:
    """The inference agent's parts for explicit settings."""
    inference = Inference(settings)
    return AgentParts(
        card=CARD,
        handlers={"generate": inference.generate},
        lifespan=inference.lifespan,
        routes=openai_routes(lambda: inference.engine),
        ready=inference.ready,
        status=inference.status,
        metrics=inference.metrics_text,
    )


def build(settings: AgentSettings) -> AgentParts:
    """The inference agent's parts, configured from the environment."""
    return parts(InferenceSettings(**settings.model_dump(exclude_unset=True)))
