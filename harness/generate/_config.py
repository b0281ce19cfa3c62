"""What to generate (GenerationConfig) and what comes back (Completion)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from harness.core.hashing import hash_value

FinishReason = Literal["stop", "length"]

# Fields that change *how fast* outputs are produced but not *what* is produced; they stay out of
# the hash so a resumed run may use another batch size.
_NOT_HASHED = frozenset({"batch_size"})


class GenerationConfig(BaseModel):
    """Decoding settings shared by every backend. ``temperature == 0`` means greedy decoding."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_new_tokens: int = Field(default=256, ge=1, le=32768)
    temperature: float = Field(default=0.0, ge=0.0, le=5.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int = Field(default=0, ge=0)
    stop: tuple[str, ...] = ()
    num_samples: int = Field(default=1, ge=1, le=1024)
    batch_size: int = Field(default=16, ge=1)

    @model_validator(mode="after")
    def _check(self) -> GenerationConfig:
        if any(not s for s in self.stop):
            raise ValueError("stop strings must be non-empty")
        if self.num_samples > 1 and self.greedy:
            raise ValueError(
                f"num_samples={self.num_samples} with temperature=0 would give {self.num_samples} "
                "identical greedy completions; set temperature > 0 to sample"
            )
        return self

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def hash(self) -> str:
        """Identity of the decoding settings (batch size excluded: it does not change outputs)."""
        return hash_value(self.model_dump(exclude=set(_NOT_HASHED)))


class Completion(BaseModel):
    """One generated continuation of one prompt."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str
    finish_reason: FinishReason | None = None
    num_tokens: int = Field(ge=0)


def truncate_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """Cut ``text`` before the earliest stop string (the stop string itself is dropped, as vLLM does)."""
    cut = min((pos for s in stop if (pos := text.find(s)) >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
