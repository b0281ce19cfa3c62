"""Optimal Brain Surgeon pieces shared by the Hessian-based methods (Safe Delta, IRR).

For a linear layer with inputs X the layer-wise loss of a weight change ΔW is ‖ΔW Xᵀ‖² = Σ_rows
Δw H Δwᵀ with H = XᵀX. Fixing coordinate q of a row to a change a_q and letting the others move
freely, the change of least loss is a_q · H⁻¹[q, :] / [H⁻¹]_qq (Lagrange), with loss a_q² / [H⁻¹]_qq.
"""

from __future__ import annotations

import torch

from harness.core.errors import ConfigError


def damped_inverse(xtx: torch.Tensor, damp: float) -> torch.Tensor:
    """(XᵀX + damp · mean(diag XᵀX) · I)⁻¹ in float64 (damp > 0 keeps dead inputs invertible)."""
    h = xtx.double()
    diag_mean = float(torch.diagonal(h).mean())
    ridge = damp * (diag_mean if diag_mean > 0 else 1.0)
    h = h + ridge * torch.eye(h.shape[0], dtype=h.dtype)
    try:
        return torch.cholesky_inverse(torch.linalg.cholesky(h))
    except RuntimeError as exc:  # torch.linalg.LinAlgError
        raise ConfigError(f"XᵀX + damping is not positive definite ({exc}); raise the damping parameter") from None


def obs_spread(fixed: torch.Tensor, hinv: torch.Tensor) -> torch.Tensor:
    """Σ_q fixed[:, q] · H⁻¹[q, :] / [H⁻¹]_qq per row: each fixed change spread as OBS would (float64).

    Each coordinate's update is the single-weight OBS step; summing them treats them independently
    (exact for one coordinate per row, the usual first-order combination otherwise).
    """
    return (fixed.double() / torch.diagonal(hinv)) @ hinv
