"""A sandbox for model-written code (HumanEval): separate process, limits, no network."""

from benchmarks.sandbox._sandbox import (
    AUDIT_WARNING,
    SandboxResult,
    humaneval_candidate,
    humaneval_program,
    namespaces_available,
    resolve_isolation,
    run_humaneval,
    run_humaneval_samples,
    run_program,
)

__all__ = [
    "AUDIT_WARNING",
    "SandboxResult",
    "humaneval_candidate",
    "humaneval_program",
    "namespaces_available",
    "resolve_isolation",
    "run_humaneval",
    "run_humaneval_samples",
    "run_program",
]
