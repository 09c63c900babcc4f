"""The retriever (librarian): ingests documents into the shared store and searches it."""
