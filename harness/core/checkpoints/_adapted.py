"""An adapter folder given where a model is expected: read it as its base with the LoRA merged on read.

``open_model(path)`` returns a plain ``CheckpointReader`` for a model directory and an
``AdaptedReader`` for a PEFT adapter folder, resolved onto the base named by ``base=`` or, failing
that, by ``base_model_name_or_path`` in its ``adapter_config.json`` when that is a local model (or the
bundled model's name). Each tensor is ``LoraAdapter.apply`` of the base tensor, the formula
``merge_adapter`` writes, so reading a resolved adapter equals reading its merged dense copy, bit for bit,
without writing one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from harness.core.checkpoints._gguf import MODEL_ALIASES, resolve_model
from harness.core.checkpoints._lora import ADAPTER_CONFIG, LoraAdapter, LoraModule
from harness.core.checkpoints._reader import CheckpointReader, is_adapter_dir
from harness.core.errors import CheckpointError


def adapter_base_path(adapter: LoraAdapter) -> Path | None:
    """The local model directory ``base_model_name_or_path`` names (absolute, relative to the working
    directory or to the adapter folder, or the bundled model's name), or None if it names none."""
    name = adapter.base_model
    if not name:
        return None
    if name.strip().lower() in MODEL_ALIASES:
        try:
            return resolve_model(name)
        except CheckpointError:  # the bundled model is not installed: the name resolves to nothing here
            return None
    for candidate in (Path(name).expanduser(), adapter.path / name):
        if candidate.is_dir() and not is_adapter_dir(candidate):
            return candidate
    return None


class AdaptedReader(CheckpointReader):
    """``base`` with ``adapter`` merged on read: ``get(name)`` is ``adapter.apply(name, base[name])``.

    Names, shapes and dtypes are the base's (an adapter changes values only); ``path``/``root`` are the
    base's too, so config and tokenizer files come from there. ``file_hashes`` names both parts.
    """

    def __init__(self, base: str | Path, adapter: LoraAdapter, *, allow_pickle: bool = False) -> None:
        super().__init__(base, allow_pickle=allow_pickle)
        self.adapter = adapter
        adapter.check_base(self)

    def _get(self, name: str) -> torch.Tensor:
        return self.adapter.apply(name, super()._get(name))

    def file_hashes(self) -> dict[str, str]:
        return {
            **{f"base/{k}": v for k, v in super().file_hashes().items()},
            **{f"adapter/{k}": v for k, v in self.adapter.reader.file_hashes().items()},
        }

    def __repr__(self) -> str:
        return f"AdaptedReader({str(self.path)!r} + adapter {str(self.adapter.path)!r})"


def open_model(
    path: str | Path,
    *,
    base: str | Path | None = None,
    label: str = "model",
    base_hint: str = "base=BASE_DIR",
    allow_pickle: bool = False,
) -> CheckpointReader:
    """A reader of the model at ``path``; an adapter folder is resolved onto its base (see the module).

    ``base`` (if given) wins over the adapter config. Errors name ``label``, the folder and
    ``base_hint`` (how the caller passes a base, e.g. ``--base BASE_DIR``).
    """
    path = Path(path)
    if not is_adapter_dir(path):
        return CheckpointReader(path, allow_pickle=allow_pickle)
    adapter = LoraAdapter.load(path, allow_pickle=allow_pickle)
    base_path = Path(base) if base is not None else adapter_base_path(adapter)
    if base_path is None:
        named = adapter.base_model
        why = (
            f"its {ADAPTER_CONFIG} names base_model_name_or_path {named!r}, which is not a local model directory"
            if named
            else f"its {ADAPTER_CONFIG} has no base_model_name_or_path"
        )
        raise CheckpointError(
            f"{label} {path} is a PEFT LoRA adapter, not a model, and its base model cannot be found: {why}; "
            f"pass the model it was trained on with {base_hint}"
        )
    if is_adapter_dir(base_path):
        raise CheckpointError(
            f"{label} {path}: its base {base_path} is itself a LoRA adapter; pass a dense base model with {base_hint}"
        )
    try:
        return AdaptedReader(base_path, adapter, allow_pickle=allow_pickle)
    except CheckpointError as exc:
        raise CheckpointError(f"{label} {path} (a LoRA adapter, resolved onto base {base_path}): {exc}") from None


def join_lora_factors(pieces: Sequence[tuple[torch.Tensor, torch.Tensor, float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ s_i·B_i@A_i as one pair with scaling 1, exactly (not re-factorised): A' = [A_1; A_2; …] along the
    rank, B' = [s_1·B_1, s_2·B_2, …]. ``pieces`` are ``(A, B, signed scaling)`` with fitting shapes."""
    return torch.cat([a for a, _, _ in pieces], dim=0), torch.cat([b * scaling for _, b, scaling in pieces], dim=1)


class CombinedAdapter:
    """A signed sum of LoRA adapters on one base as one low-rank update: Σ sign·s·B@A.

    What a method must add to a model X to reach θ_F = R + Δ_F when X and R are LoRAs on the same base:
    Δ_F + Δ_R − Δ_X. Factors are concatenated along the rank with B pre-scaled, so the scaling is 1:
    A' = [A_1; A_2; …], B' = [±s_1·B_1, ±s_2·B_2, …] and B'A' is the signed sum, exactly (it is not
    re-factorised). A weight only some parts adapt gets those parts' factors (−Δ_X alone where only X
    adapts it: θ_F is the base there). Offers what merge methods read of a ``LoraAdapter``.
    """

    def __init__(self, adapter: LoraAdapter, parts: list[tuple[LoraAdapter, float]]) -> None:
        self.adapter = adapter
        self.parts = [(adapter, 1.0), *parts]
        self.path = adapter.path
        self.reader = adapter.reader
        self.config = adapter.config
        self.base_model = adapter.base_model
        self.scaling = 1.0
        for part, _ in self.parts:
            if part.replacements():
                raise CheckpointError(
                    f"adapter {part.path} saves whole modules (modules_to_save), which are not a low-rank update: "
                    f"it cannot be combined with {', '.join(str(p.path) for p, _ in self.parts if p is not part)}"
                )
        self._modules = {}
        for part, _ in reversed(self.parts):
            self._modules.update(part.modules())

    def modules(self) -> dict[str, LoraModule]:
        return dict(self._modules)

    def replacements(self) -> dict[str, torch.Tensor]:
        return {}

    def scaling_for(self, weight_name: str) -> float:
        return 1.0

    def factors(self, weight_name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        pieces = []
        for part, sign in self.parts:
            pair = part.factors(weight_name)
            if pair is not None:
                pieces.append((pair[0], pair[1], sign * part.scaling_for(weight_name)))
        return join_lora_factors(pieces) if pieces else None

    def check_base(self, base: CheckpointReader) -> None:
        for part, _ in self.parts:
            part.check_base(base)

    def describe(self) -> str:
        terms = " ".join(f"{'+' if sign > 0 else '-'} {part.path}" for part, sign in self.parts[1:])
        return f"{self.path} {terms}"

    def __repr__(self) -> str:
        return f"CombinedAdapter({self.describe()!r})"
