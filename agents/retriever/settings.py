"""Settings of the retriever (prefix ``SCRIPTORIUM_``; ``WEAVIATE_URL`` picks Weaviate)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr

from agents.common.settings import EmbeddingSettings


class RetrieverSettings(EmbeddingSettings):
    """The document store, the embedding model and ingestion limits."""

    store: Literal["lancedb", "weaviate"] | None = Field(
        default=None, description="Store backend (default: weaviate if WEAVIATE_URL is set)."
    )
    lancedb_dir: Path | None = Field(default=None, description="Default: <data_dir>/lancedb.")
    weaviate_url: str | None = Field(
        default=None, validation_alias=AliasChoices("WEAVIATE_URL", "SCRIPTORIUM_WEAVIATE_URL")
    )
    weaviate_grpc_port: int | None = None
    weaviate_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("WEAVIATE_API_KEY", "SCRIPTORIUM_WEAVIATE_API_KEY"),
    )
    weaviate_tenant: str | None = None
    chunk_words: int = Field(default=90, ge=16)
    chunk_max_words: int = Field(default=150, ge=16)
    chunk_overlap_words: int = Field(default=15, ge=0)
    ann_min_rows: int = Field(default=5_000, ge=1)
    ingest_roots: list[Path] = Field(
        default_factory=lambda: [Path.cwd()],
        description="Server-side paths the ingest skill may read (A2A callers cannot read "
        "anything outside them).",
    )

    @property
    def store_backend(self) -> str:
        """The backend in use."""
        if self.store is not None:
            return self.store
        return "weaviate" if self.weaviate_url else "lancedb"

    @property
    def resolved_lancedb_dir(self) -> Path:
        return self.lancedb_dir or self.data_dir / "lancedb"
