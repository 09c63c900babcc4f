"""The document store: one contract (:mod:`.base`), two backends (LanceDB, Weaviate)."""
