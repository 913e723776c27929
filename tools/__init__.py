"""Developer tooling that is not part of the operator package (run from the repository root)."""
