"""Optimal Brain Surgeon pieces shared by the Hessian-based methods (Safe Delta, IRR), as their
authors run them: SparseGPT's column-sequential OBS.

For a linear layer with inputs X the layer-wise loss of a weight change ΔW is Σ_rows Δw H Δwᵀ with
H = XᵀX. With U the upper Cholesky factor of H⁻¹ (H⁻¹ = UᵀU), the columns are walked left to right:
column j's chosen entries are set to their targets, and the error e = (w_j − q_j) / U_jj is spread
over the columns not yet visited, w_k −= e · U_jk (k > j). Each step is the exact OBS update for the
remaining columns (the Cholesky rows are the inverse Hessians of the remaining coordinates), so the
walk accounts for how the changed entries interact, unlike a sum of independent single-weight steps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from harness.core.errors import ConfigError

#: select(columns, current values of those columns) -> which of their entries take their targets
Selector = Callable[[slice, torch.Tensor], torch.Tensor]


def inverse_hessian_cholesky(xtx: torch.Tensor, damp: float) -> torch.Tensor:
    """U, upper Cholesky factor of (XᵀX + damp · mean diag · I)⁻¹ in float64; a dead input (zero
    diagonal) gets diagonal 1 first, as SparseGPT does, so the damped matrix stays invertible."""
    h = xtx.double().clone()
    diagonal = torch.diagonal(h)
    diagonal[diagonal == 0] = 1.0
    h.diagonal().add_(damp * float(diagonal.mean()))
    try:
        inverse = torch.cholesky_inverse(torch.linalg.cholesky(h))
        return torch.linalg.cholesky(inverse, upper=True)
    except RuntimeError as exc:  # torch.linalg.LinAlgError
        raise ConfigError(f"XᵀX + damping is not positive definite ({exc}); raise the damping parameter") from None


def sequential_obs(
    start: torch.Tensor,
    targets: torch.Tensor,
    u: torch.Tensor,
    select: Selector,
    block: int,
    sub_block: int = 1,
    compensate: bool = True,
) -> torch.Tensor:
    """Walk ``start``'s columns in blocks of ``block``: ``select`` picks, from the block's current
    (already compensated) values, the entries that take their ``targets``; then, ``sub_block``
    columns at a time, the chosen entries are set and their error is spread over the columns after
    the sub-block (``compensate``). Float64 throughout; returns the final weight."""
    w = start.double().clone()
    goal = targets.double()
    diag = torch.diagonal(u)
    columns = w.shape[1]
    for b0 in range(0, columns, block):
        b1 = min(b0 + block, columns)
        chosen = select(slice(b0, b1), w[:, b0:b1])
        for s0 in range(b0, b1, sub_block):
            s1 = min(s0 + sub_block, b1)
            current = w[:, s0:s1]
            q = torch.where(chosen[:, s0 - b0 : s1 - b0], goal[:, s0:s1], current)
            if compensate and s1 < columns:
                w[:, s1:] -= ((current - q) / diag[s0:s1]) @ u[s0:s1, s1:]
            w[:, s0:s1] = q
    return w
