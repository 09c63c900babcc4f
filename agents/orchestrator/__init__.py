"""The orchestrator: takes questions over A2A and runs retrieve, write and critique."""
