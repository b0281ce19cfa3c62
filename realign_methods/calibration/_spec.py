"""``CalibrationSpec``: what data a method's calibration needs and which statistics it computes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from harness.core.errors import ConfigError

DataKind = Literal["harmful_refusals", "harmful_answers", "preference_pairs", "benign_task"]
StatisticName = Literal["input_norms", "xtx", "fisher"]
#: input_norms: ‖X_j‖₂ per input column of each linear layer (Wanda); xtx: Σ x xᵀ of each linear
#: layer's inputs (the OBS Hessian up to a factor 2); fisher: Σ (∂loss/∂w)² per weight, per example
STATISTICS: tuple[str, ...] = ("input_norms", "xtx", "fisher")


@dataclass(frozen=True)
class CalibrationSpec:
    """A method's calibration needs.

    ``model`` names the input whose statistics are taken (``finetuned`` or ``aligned``); the method's
    parameters ``calibration_examples`` / ``calibration_max_length``, when it has them, override
    ``examples`` / ``max_length``.
    """

    data: DataKind
    statistics: frozenset[str]
    model: Literal["finetuned", "aligned"] = "finetuned"
    examples: int = 64
    max_length: int = 128
    #: loss of the Fisher statistic: next-token NLL of the response tokens only
    response_only_loss: bool = True

    def __post_init__(self) -> None:
        unknown = sorted(set(self.statistics) - set(STATISTICS))
        if unknown or not self.statistics:
            raise ConfigError(
                f"CalibrationSpec: statistics must be a non-empty subset of {STATISTICS}, got {sorted(self.statistics)}"
            )
        if self.examples < 1 or self.max_length < 8:
            raise ConfigError(
                f"CalibrationSpec: examples must be ≥ 1 and max_length ≥ 8, got {self.examples}, {self.max_length}"
            )
