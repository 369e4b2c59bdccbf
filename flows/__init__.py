"""Orchestration: Prefect flows, their deployments and the ``facezoo`` command line (the only layer that
composes the core library, storage and tasks)."""
