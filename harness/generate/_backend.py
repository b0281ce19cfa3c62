"""The Backend protocol and the backend registry (``get_backend``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from harness.core.errors import CheckpointError, ConfigError, name_unknown
from harness.core.registry import Registry
from harness.generate._config import Completion, GenerationConfig
from harness.generate._dummy import DummyBackend
from harness.generate._hf import HFBackend
from harness.generate._vllm import VLLMBackend
from harness.generate._weights import check_model_weights


@runtime_checkable
class Backend(Protocol):
    """A loaded model that turns prompt texts (chat template already applied) into completions.

    One backend object serves many ``generate`` calls for the same base model; ``set_adapter``
    switches the LoRA adapter in use (``None`` = the base model) without reloading the base.
    """

    name: str

    @property
    def model_dir(self) -> Path | None:
        """The base model directory (None for the dummy backend without a model)."""
        ...

    @property
    def adapter(self) -> Path | None:
        """The LoRA adapter in use (None = the base model)."""
        ...

    def set_adapter(self, adapter: str | Path | None) -> None: ...

    def generate(self, prompts: Sequence[str], config: GenerationConfig) -> list[list[Completion]]:
        """One list of ``config.num_samples`` completions per prompt, in prompt order."""
        ...

    def close(self) -> None: ...


BackendFactory = Callable[..., Backend]
BACKENDS: Registry[BackendFactory] = Registry("generation backend")


def _hf(model_dir: str | Path, **opts: Any) -> Backend:
    return HFBackend(model_dir, **opts)


def _vllm(model_dir: str | Path, **opts: Any) -> Backend:
    return VLLMBackend(model_dir, **opts)


def _dummy(model_dir: str | Path | None = None, **opts: Any) -> Backend:
    return DummyBackend(model_dir, **opts)


BACKENDS.add("hf", _hf, aliases=("transformers",))
BACKENDS.add("vllm", _vllm)
BACKENDS.add("dummy", _dummy)


_BACKEND_CLASSES = {
    "hf": ("harness.generate._hf", "HFBackend"),
    "vllm": ("harness.generate._vllm", "VLLMBackend"),
    "dummy": ("harness.generate._dummy", "DummyBackend"),
}


def backend_option_names(name: str) -> list[str]:
    """The options backend ``name`` accepts (its constructor's keyword parameters)."""
    import importlib
    import inspect

    module, cls = _BACKEND_CLASSES[BACKENDS.canonical_name(name)]
    signature = inspect.signature(getattr(importlib.import_module(module), cls).__init__)
    return [
        p.name
        for p in signature.parameters.values()
        if p.name not in ("self", "model_dir", "adapter", "allow_pickle")
        and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]


def check_backend_options(name: str, options: dict[str, Any], where: str = "backend options") -> None:
    """ConfigError naming every option backend ``name`` does not accept (with a did-you-mean)."""
    accepted = backend_option_names(name)
    unknown = [key for key in options if key not in accepted]
    if unknown:
        raise ConfigError(
            f"{where}: unknown option {name_unknown(unknown, accepted)} for backend {name!r}; "
            f"accepted: {', '.join(accepted)}"
        )


def get_backend(
    name: str,
    model_dir: str | Path | None = None,
    *,
    adapter: str | Path | None = None,
    allow_pickle: bool = False,
    **opts: Any,
) -> Backend:
    """Load backend ``name`` ("vllm", "hf" or "dummy") for ``model_dir``, optionally with a LoRA adapter.

    The weights are checked first (:func:`check_model_weights`): pickle checkpoints are refused unless
    ``allow_pickle``, and non-finite weights always. ``opts`` go to the backend (see HFBackend,
    VLLMBackend, DummyBackend). Heavy libraries are imported here, not at module import.
    """
    factory = BACKENDS.get(name)
    canonical = BACKENDS.canonical_name(name)
    if model_dir is None and canonical != "dummy":
        raise ConfigError(f"backend {name!r} needs a model directory")
    check_backend_options(name, opts)
    if model_dir is not None and canonical != "dummy" and not (Path(model_dir) / "config.json").is_file():
        raise CheckpointError(f"{model_dir}: not a model directory (config.json not found)")
    check_model_weights(model_dir, adapter, allow_pickle=allow_pickle)
    if canonical == "hf":
        opts["allow_pickle"] = allow_pickle
    return factory(model_dir, adapter=adapter, **opts)
