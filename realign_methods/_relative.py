"""Which model each ``adapters`` input is relative to, and the update a method must add for it.

A LoRA adapter is a difference to the model it was trained on, R: θ_F = R + Δ_F. Methods add an
adapter's delta to their reference input T (θ_A for RESTA, Safe LoRA and sft; the anchor, base or θ_A,
for the fusion rules), so the update they need is θ_F − T = Δ_F + (R − T). With R = T that is Δ_F.
An adapter that *continues* θ_A's adapter on the base (the organism's θ_F) has R = base while T = θ_A =
base + Δ_A: adding Δ_F alone would count Δ_A twice, so the update is the combined adapter Δ_F − Δ_A.

R comes from ``adapter_base`` (``aligned``, ``base`` or a model path; CLI ``--adapter-base``) or else
from ``base_model_name_or_path`` in the adapter's config; when neither says, the merge is refused
rather than guessed. R and T must be LoRAs on one dense base (R − T is then low-rank), else refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.core.checkpoints import (
    AdaptedReader,
    CheckpointReader,
    CombinedAdapter,
    LoraAdapter,
    adapter_base_path,
    is_adapter_dir,
)
from harness.core.errors import ConfigError
from realign_methods._method import Role

log = logging.getLogger(__name__)

ADAPTER_BASE_HINT = (
    "say which with --adapter-base aligned (trained on θ_A), --adapter-base base (trained on the base "
    "model, e.g. continuing θ_A's adapter) or --adapter-base PATH (adapter_base= in a MergeSpec)"
)


@dataclass(frozen=True)
class Stack:
    """A model as a dense directory plus the LoRA adapters merged on it (none for a dense model)."""

    base: Path
    adapters: tuple[LoraAdapter, ...] = ()

    @classmethod
    def of(cls, reader: CheckpointReader) -> Stack:
        adapters = (reader.adapter,) if isinstance(reader, AdaptedReader) else ()
        return cls(Path(reader.path).resolve(), adapters)

    def describe(self) -> str:
        return str(self.base) + "".join(f" + adapter {a.path}" for a in self.adapters)


def _same_model(a: Path, b: Path) -> bool:
    """One dense model: the same directory, or (rarely needed, so hashed only then) the same content."""
    from harness.core.checkpoints import checkpoint_hash

    return a == b or checkpoint_hash(a) == checkpoint_hash(b)


def _same(a: LoraAdapter, b: LoraAdapter) -> bool:
    return a is b or Path(a.path).resolve() == Path(b.path).resolve()


def relative_to(
    choice: str | None,
    adapter: LoraAdapter,
    label: str,
    readers: dict[str, list[Any]],
    base: Path | None,
    aligned_path: Path | None,
) -> tuple[Stack, str]:
    """R of one adapter and how it was found. ``base``: the base model path given (also when it is only
    used to resolve adapter folders); ``aligned_path``: the aligned input as given."""
    aligned = readers.get(Role.ALIGNED, [None])[0]
    if choice == "aligned":
        if aligned is None:
            raise ConfigError(f"adapter_base 'aligned' (--adapter-base aligned): no aligned model was given ({label})")
        return Stack.of(aligned), "--adapter-base aligned"
    if choice == "base":
        if Role.BASE in readers:
            return Stack.of(readers[Role.BASE][0]), "--adapter-base base"
        if base is not None:
            return Stack(base.resolve()), "--adapter-base base"
        if isinstance(aligned, AdaptedReader):
            return Stack(Path(aligned.path).resolve()), "--adapter-base base (the base of the aligned adapter)"
        raise ConfigError(f"adapter_base 'base' (--adapter-base base): no base model was given; pass --base ({label})")
    if choice is not None:
        path = Path(choice)
        if not path.is_dir() or is_adapter_dir(path):
            raise ConfigError(
                f"adapter_base {choice!r} (--adapter-base): expected 'aligned', 'base' or a model directory"
            )
        return Stack(path.resolve()), f"--adapter-base {choice}"
    found = adapter_base_path(adapter)
    if found is None:
        named = adapter.base_model
        why = (
            f"base_model_name_or_path {named!r} in its adapter_config.json is not a local model"
            if named
            else "its adapter_config.json has no base_model_name_or_path"
        )
        raise ConfigError(
            f"{label} {adapter.path}: cannot tell which model the adapter is relative to ({why}); {ADAPTER_BASE_HINT}"
        )
    how = f"base_model_name_or_path of {adapter.path}"
    if aligned is not None and aligned_path is not None and found.resolve() == Path(aligned_path).resolve():
        return Stack.of(aligned), how
    return Stack(found.resolve()), how


def relative_update(adapter: LoraAdapter, r: Stack, t: Stack, label: str, target: str) -> LoraAdapter | CombinedAdapter:
    """The update θ_F − T as an adapter: ``adapter`` itself when R = T, else a CombinedAdapter."""
    if not _same_model(r.base, t.base):
        raise ConfigError(
            f"{label} {adapter.path} is relative to {r.describe()}, but the method adds it to the {target} model "
            f"{t.describe()}: θ_F − {target} is then not a low-rank update. Give the {target} model as a LoRA adapter "
            f"on {r.base}, pass the fine-tune as a model instead (-f {adapter.path} --base {r.base}, merged exactly), "
            f"or, if the adapter was in fact trained on the {target} model, {ADAPTER_BASE_HINT}"
        )
    plus = [a for a in r.adapters if not any(_same(a, b) for b in t.adapters)]
    minus = [b for b in t.adapters if not any(_same(b, a) for a in r.adapters)]
    if not plus and not minus:
        return adapter
    return CombinedAdapter(adapter, [(a, 1.0) for a in plus] + [(b, -1.0) for b in minus])


def relative_adapters(
    adapters: list[LoraAdapter],
    choice: str | None,
    readers: dict[str, list[Any]],
    reference: str,
    base: Path | None,
    aligned_path: Path | None,
) -> tuple[list[LoraAdapter | CombinedAdapter], dict[str, str]]:
    """Each adapter's update relative to the ``reference`` input, and a note per adapter for provenance."""
    if not adapters or reference not in readers:
        return list(adapters), {}
    target = Stack.of(readers[reference][0])
    out: list[LoraAdapter | CombinedAdapter] = []
    notes: dict[str, str] = {}
    for index, adapter in enumerate(adapters):
        label = f"adapters[{index}]"
        r, how = relative_to(choice, adapter, label, readers, base, aligned_path)
        update = relative_update(adapter, r, target, label, reference)
        notes[label] = f"relative to {r.describe()} ({how}); added to {reference} {target.describe()}"
        if isinstance(update, CombinedAdapter):
            notes[label] += f" as {update.describe()}"
            log.info("%s: %s", label, notes[label])
        out.append(update)
    return out, notes
