"""The Safe LoRA alignment subspace, shared by Safe LoRA and SafeMERGE.

Per weight, V = W_aligned − W_base spans the "alignment direction" and C = V Vᵀ / ‖V‖_F projects an
update onto it. C·X is computed as V (Vᵀ X) / ‖V‖_F, never forming the out×out matrix.
"""

from __future__ import annotations

import torch


def project_onto_alignment(alignment: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
    """C·X with C = V Vᵀ / ‖V‖_F (``alignment`` is V [out, in], ``update`` X [out, …]; float32)."""
    norm = torch.linalg.vector_norm(alignment)
    if norm == 0:
        return torch.zeros_like(update)
    return alignment @ (alignment.T @ update) / norm


def flat_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two tensors as flat vectors (0 when either is all zeros)."""
    return float(torch.nn.functional.cosine_similarity(a.reshape(1, -1), b.reshape(1, -1)))
