"""The inference agent's own metrics, and vLLM's, relayed on the agent's ``/metrics``."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

ENGINE_UP = Gauge("scriptorium_inference_engine_up", "1 while the vLLM engine is serving.")
ENGINE_RESTARTS = Counter(
    "scriptorium_inference_engine_restarts_total", "Times the managed vLLM server was restarted."
)
#: The ``kind`` label of :data:`TOKENS`: the prompt's tokens, and the generated ones.
TOKEN_KINDS = ("prompt", "completion")
TOKENS = Counter(
    "scriptorium_inference_tokens_total",
    "Tokens of finished A2A generate tasks, from the engine's usage report: kind=prompt "
    "(tokens read) or kind=completion (tokens generated). The OpenAI-compatible /v1 is not "
    "counted here; vLLM's vllm:prompt_tokens_total and vllm:generation_tokens_total count all.",
    ["kind"],
)
for _kind in TOKEN_KINDS:
    TOKENS.labels(_kind)  # both series exist (at 0) from the start
RELAYED_PREFIX = "vllm:"


def vllm_families(text: str) -> str:
    """Only the ``vllm:*`` families of a Prometheus exposition (drop its process/python ones,
    which would clash with the agent's own)."""
    kept: list[str] = []
    for line in text.splitlines():
        if line.startswith("# "):
            fields = line.split(" ", 3)
            name = fields[2] if len(fields) > 2 else ""
        else:
            name = line.split("{", 1)[0].split(" ", 1)[0]
        if name.startswith(RELAYED_PREFIX):
            kept.append(line)
    return "\n".join(kept) + "\n" if kept else ""
