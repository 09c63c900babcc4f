"""Settings of the shared embedding model (prefix ``SCRIPTORIUM_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from agents.common.embedding import Embedder, load_embedder
from agents.scaffold.settings import AgentSettings


class EmbeddingSettings(AgentSettings):
    """Which sentence embedder an agent loads; the retriever, writer and critic share one."""

    embedder: Literal["onnx-int8", "onnx", "torch"] = "onnx-int8"
    model_dir: Path | None = Field(
        default=None,
        description="A sentence-transformers model folder (default: the packaged "
        "all-MiniLM-L6-v2).",
    )
    max_seq_length: int = Field(
        default=128, ge=16, le=512, description="Tokens embedded per chunk (90-word chunks fit)."
    )
    embed_batch_size: int | None = Field(default=None, ge=1)
    grounding_embedder: Literal["onnx", "onnx-int8", "torch"] = Field(
        default="onnx",
        description="Backend of the grounding model's embedder (writer and critic). fp32: "
        "dynamic int8 quantizes activations per batch, so a text's vector (and a support "
        "score near the threshold) would depend on what else was in its batch.",
    )

    def load_embedder(self, backend: str | None = None) -> Embedder:
        """Load (preparing once) the configured embedder; synchronous and CPU-bound."""
        return load_embedder(
            backend or self.embedder,
            model_dir=self.model_dir,
            cache_dir=self.resolved_model_cache_dir,
            max_seq_length=self.max_seq_length,
            batch_size=self.embed_batch_size,
        )
