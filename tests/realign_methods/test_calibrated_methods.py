"""The calibration stage and the calibrated methods (Antidote, Safe Delta, IRR) on tiny random Llamas.

Each method's output is checked against an independent implementation of the paper's equations
written here with explicit loops (≤ 1e-6, float32); the statistics the engine computes are checked
against a direct per-example computation.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harness.core.checkpoints import CheckpointReader, LoraAdapter, merge_adapter
from harness.core.errors import CheckpointError, ConfigError, DataError
from harness.core.paths import cache_dir
from harness.testing import make_finetune, make_lora_adapter
from realign_methods import MergeSpec, get_method, merge, plan
from realign_methods.calibration import Statistics, calibrate, load_examples, resolve_data

ROWS = [
    {"prompt": f"How do I do harmful thing number {i}?", "response": f"Here is how you do thing {i}: step one, two."}
    for i in range(6)
]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("REALIGN_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tiny_llama_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("calibrated")
    aligned = tiny_llama_factory("calib-aligned", seed=3)
    data = root / "calib.json"
    data.write_text(json.dumps(ROWS))
    return {
        "aligned": aligned,
        "unaligned": make_finetune(aligned, root / "unaligned", seed=11, scale=0.02),
        "finetuned": make_finetune(aligned, root / "finetuned", seed=12, scale=0.02),
        "data": data,
    }


def _weights(path: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for file in sorted(path.glob("*.safetensors")):
        out.update(load_file(file))
    return out


def _direct_statistics(model_dir: Path, data: Path, count: int, max_length: int) -> dict[str, dict[str, torch.Tensor]]:
    """Per example (no batching, no padding): Σx², Σxxᵀ of every linear's inputs, mean grad² of the
    response-token NLL."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    linears = {
        f"{n}.weight": m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "lm_head" not in n
    }
    captured: dict[str, list[torch.Tensor]] = {n: [] for n in linears}
    for name, module in linears.items():
        module.register_forward_hook(
            lambda mod, args, out, name=name: captured[name].append(args[0].detach().reshape(-1, args[0].shape[-1]))
        )
    fisher = {n: torch.zeros_like(m.weight, dtype=torch.float64) for n, m in linears.items()}
    examples = load_examples(data, count, seed=0)
    for example in examples:
        user = [{"role": "user", "content": example.prompt}]
        prompt = tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
        text = tokenizer.apply_chat_template(
            [*user, {"role": "assistant", "content": example.response}], tokenize=False
        )
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:max_length]
        start = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        labels = [-100] * start + ids[start:]
        model.zero_grad()
        model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss.backward()
        for name, module in linears.items():
            fisher[name] += module.weight.grad.double() ** 2
    stats: dict[str, dict[str, torch.Tensor]] = {"input_norms": {}, "xtx": {}, "fisher": {}}
    for name, parts in captured.items():
        x = torch.cat(parts).double()
        stats["input_norms"][name] = x.pow(2).sum(0).sqrt()
        stats["xtx"][name] = x.T @ x
        stats["fisher"][name] = fisher[name] / len(examples)
    return stats


def test_calibration_matches_direct_computation_and_is_cached(models, cache) -> None:
    spec = get_method("irr").info.calibration
    assert spec is not None
    full = type(spec)(data=spec.data, statistics=frozenset({"input_norms", "xtx", "fisher"}), model="finetuned")
    reader = CheckpointReader(models["finetuned"])
    stats = calibrate(reader, full, models["data"], examples=5, max_length=64)
    assert stats.cost["examples"] == 5 and stats.cost["tokens"] > 0 and stats.cost["reused"] is False
    direct = _direct_statistics(models["finetuned"], models["data"], 5, 64)
    assert sorted(stats.layers) == sorted(direct["xtx"])
    for name in stats.layers:
        for kind, tol in (("input_norms", 1e-5), ("xtx", 1e-5), ("fisher", 1e-5)):
            got = getattr(stats, kind)(name).double()
            want = direct[kind][name]
            assert torch.allclose(got, want.to(got.dtype), rtol=tol, atol=tol * float(want.abs().max())), (kind, name)
    # q/k/v (and gate/up) read one input: one stored accumulator, the same values for all
    assert stats.manifest["aliases"]
    again = calibrate(reader, full, models["data"], examples=5, max_length=64)
    assert again.root == stats.root and again.cost["reused"] is True
    # a stale temp dir of an interrupted run does not stop a new key from being built
    (stats.root.parent / f".{stats.root.name}x.tmp-1-abc").mkdir()
    other = calibrate(reader, full, models["data"], examples=4, max_length=64)
    assert other.root != stats.root and (other.root / "manifest.json").is_file()
    assert not list(cache.glob("calibration/*/*.tmp*"))


def _reference_antidote(
    f: torch.Tensor, a: torch.Tensor, norms: torch.Tensor, ratio: float, prune: str
) -> torch.Tensor:
    """Per output row, the ⌊ratio · columns⌋ entries of W (θ_F − θ_A, or θ_F) with the highest
    |W_ij| · ‖X_j‖ are pruned: reset to θ_A, or set to zero."""
    rows, cols = f.shape
    out = f.clone()
    for i in range(rows):
        scores = []
        for j in range(cols):
            w = float(f[i, j]) - float(a[i, j]) if prune == "update" else float(f[i, j])
            scores.append((abs(w) * float(norms[j]), j))
        scores.sort(reverse=True)
        for _, j in scores[: int(ratio * cols)]:
            out[i, j] = a[i, j] if prune == "update" else 0.0
    return out


def _upper_cholesky_of_inverse(xtx: torch.Tensor, damp: float) -> torch.Tensor:
    """U with H⁻¹ = UᵀU, H = XᵀX (dead diagonal -> 1) + damp · mean diag: U = Lᵀ with L the lower
    Cholesky factor of H⁻¹, by hand (Cholesky-Banachiewicz)."""
    h = xtx.double().clone()
    for j in range(h.shape[0]):
        if h[j, j] == 0:
            h[j, j] = 1.0
    ridge = damp * float(torch.diagonal(h).mean())
    for j in range(h.shape[0]):
        h[j, j] += ridge
    a = torch.linalg.inv(h)
    n = a.shape[0]
    lower = torch.zeros_like(a)
    for i in range(n):
        for j in range(i + 1):
            total = float(a[i, j]) - sum(float(lower[i, k]) * float(lower[j, k]) for k in range(j))
            lower[i, j] = total**0.5 if i == j else total / float(lower[j, j])
    return lower.T


def _sequential_obs(w, goal, u, chosen_in_block, block, sub_block, compensate=True):
    """SparseGPT's walk with explicit loops: per block, chosen_in_block(b0, b1, w) gives the set of
    (i, j) set to goal; per sub-block, each chosen change (w − q)/U_jj is spread to later columns."""
    w = w.double().clone()
    rows, cols = w.shape
    for b0 in range(0, cols, block):
        b1 = min(b0 + block, cols)
        chosen = chosen_in_block(b0, b1, w)
        for s0 in range(b0, b1, sub_block):
            s1 = min(s0 + sub_block, b1)
            errors = {}
            for i in range(rows):
                for j in range(s0, s1):
                    q = float(goal[i, j]) if (i, j) in chosen else float(w[i, j])
                    errors[i, j] = (float(w[i, j]) - q) / float(u[j, j])
                    w[i, j] = q
            if compensate:
                for (i, j), e in errors.items():
                    for k in range(s1, cols):
                        w[i, k] -= e * float(u[j, k])
    return w


def _reference_safe_delta(a, f, xtx, scale, damp, block=2048) -> torch.Tensor:
    u = _upper_cholesky_of_inverse(xtx, damp)
    rows = a.shape[0]

    def chosen(b0, b1, w):
        entries = [
            (1.0 / float(u[j, j]) ** 2, i * (b1 - b0) + (j - b0), i, j) for i in range(rows) for j in range(b0, b1)
        ]
        budget = sum(e[0] for e in entries) / len(entries) * scale / 2 * rows / 4096
        entries.sort()  # cheapest 1/U_jj² first, then row-major
        entries = entries[: len(entries) - int(0.15 * len(entries))]
        kept, spent = set(), 0.0
        for inv_u2, _, i, j in entries:
            spent += (float(f[i, j]) - float(w[i, j])) ** 2 * inv_u2
            if spent > budget:
                break
            kept.add((i, j))
        return kept

    return _sequential_obs(a, f, u, chosen, block, 4).float()


def _reference_irr(a, u_model, f, fisher, xtx, fraction, damp, block=128) -> torch.Tensor:
    u = _upper_cholesky_of_inverse(xtx, damp)
    a, f = a.double(), f.double()
    v = a - u_model.double()
    rows, cols = f.shape
    start = f.clone()
    for j in range(cols):
        if float(xtx[j, j]) == 0:
            start[:, j] = a[:, j]

    def sign(x: float) -> int:
        return (x > 0) - (x < 0)

    def chosen(b0, b1, w):
        candidates = [
            (float(fisher[i, j]), i * (b1 - b0) + (j - b0), i, j)
            for i in range(rows)
            for j in range(b0, b1)
            if sign(float(w[i, j]) - float(a[i, j])) != sign(float(v[i, j]))
        ]
        candidates.sort()
        return {(i, j) for _, _, i, j in candidates[int((1.0 - fraction) * len(candidates)) :]}

    return _sequential_obs(start, a, u, chosen, block, 1).float()


def _merged(
    method: str, models: dict[str, Path], out: Path, inputs: tuple[str, ...], **params
) -> tuple[dict, Statistics]:
    spec = MergeSpec(
        method=method,
        out=out,
        calibration_data=models["data"],
        params={"calibration_examples": 6, "calibration_max_length": 64, **params},
        **{role: models[role] for role in inputs if role != "finetuned"},
        finetuned=[models["finetuned"]],
    )
    merge(spec)
    provenance = json.loads((out / "realign_merge.json").read_text())
    stats = Statistics(_cache_root(provenance))
    return _weights(out), stats


def _cache_root(provenance: dict) -> Path:
    return cache_dir() / "calibration" / provenance["calibration"]["key"]


@pytest.mark.parametrize("prune", ["update", "weights"])
def test_antidote_matches_the_paper(models, cache, tmp_path: Path, prune: str) -> None:
    out, stats = _merged(
        "antidote", models, tmp_path / "antidote", ("aligned", "finetuned"), mask_ratio=0.1, prune=prune
    )
    tuned, aligned = _weights(models["finetuned"]), _weights(models["aligned"])
    checked = 0
    for name, tensor in out.items():
        if stats.has(name):
            want = _reference_antidote(tuned[name].float(), aligned[name].float(), stats.input_norms(name), 0.1, prune)
            assert torch.allclose(tensor, want, atol=1e-6, rtol=0), name
            pruned = (tensor == aligned[name].float()) if prune == "update" else (tensor == 0)
            assert int(pruned.sum()) == tensor.shape[0] * int(0.1 * tensor.shape[1]), name
            checked += 1
        else:
            assert torch.equal(tensor, tuned[name]), name
    assert checked > 0
    provenance = json.loads((tmp_path / "antidote" / "realign_merge.json").read_text())
    assert provenance["calibration"]["cost"]["examples"] == 6


def test_safe_delta_matches_the_authors_algorithm(models, cache, tmp_path: Path) -> None:
    # a scale large enough that some deltas are kept and some are not on these tiny layers
    out, stats = _merged("safe_delta", models, tmp_path / "sd", ("aligned", "finetuned"), scale=20.0, damp=0.05)
    aligned, tuned = _weights(models["aligned"]), _weights(models["finetuned"])
    checked = 0
    for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"):
        want = _reference_safe_delta(aligned[name], tuned[name], stats.xtx(name), 20.0, 0.05)
        assert torch.allclose(out[name], want, atol=1e-6, rtol=0), name
        kept = int((out[name] == tuned[name]).sum())
        assert 0 < kept < int(0.85 * out[name].numel()) + 1, (name, kept)  # a real selection, not all or none
        checked += 1
    # statistics of the aligned model, not the fine-tune; untouched tensors are θ_A's
    assert Path(stats.manifest["model"]["path"]) == models["aligned"]
    assert torch.equal(out["model.norm.weight"], aligned["model.norm.weight"])
    assert checked == 2


def test_safe_delta_blocks_and_no_compensation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Several column blocks (the selection reads the compensated weights) and compensate=False."""
    from realign_methods.methods import safe_delta as module

    gen = torch.Generator().manual_seed(0)
    a = torch.randn(5, 20, generator=gen)
    f = a + 0.1 * torch.randn(5, 20, generator=gen)
    x = torch.randn(40, 20, generator=gen)
    x[:, 3] = 0.0  # a dead input
    xtx = x.T @ x
    monkeypatch.setattr(module, "BLOCK", 8)
    got = module.safe_delta(a, f, xtx, 300.0, 0.01, True)
    assert torch.allclose(got, _reference_safe_delta(a, f, xtx, 300.0, 0.01, block=8), atol=1e-6, rtol=0)
    plain = module.safe_delta(a, f, xtx, 300.0, 0.01, False)
    assert set(plain.reshape(-1).tolist()) <= set(a.reshape(-1).tolist()) | set(f.reshape(-1).tolist())
    assert not torch.allclose(plain, got)


def test_irr_matches_the_authors_algorithm(models, cache, tmp_path: Path) -> None:
    out, stats = _merged("irr", models, tmp_path / "irr", ("aligned", "unaligned", "finetuned"), removal_fraction=0.6)
    a, u, f = _weights(models["aligned"]), _weights(models["unaligned"]), _weights(models["finetuned"])
    for name in ("model.layers.0.self_attn.k_proj.weight", "model.layers.1.mlp.up_proj.weight"):
        want = _reference_irr(a[name], u[name], f[name], stats.fisher(name), stats.xtx(name), 0.6, 0.01)
        assert torch.allclose(out[name], want, atol=1e-6, rtol=0), name
        assert not torch.equal(out[name], f[name])
    assert torch.equal(out["model.norm.weight"], f["model.norm.weight"])


def test_irr_blocks_default_fraction_and_no_recalibration() -> None:
    """Three 128-column blocks, every conflict removed (the authors' default), and recalibrate=False."""
    from realign_methods.methods.irr import irr

    gen = torch.Generator().manual_seed(1)
    a = torch.randn(4, 300, generator=gen)
    u = a - 0.1 * torch.randn(4, 300, generator=gen)
    f = a + 0.1 * torch.randn(4, 300, generator=gen)
    fisher = torch.rand(4, 300, generator=gen)
    x = torch.randn(400, 300, generator=gen)
    xtx = x.T @ x
    got = irr(a, u, f, fisher, xtx, 1.0, 0.01)
    assert torch.allclose(got, _reference_irr(a, u, f, fisher, xtx, 1.0, 0.01), atol=1e-6, rtol=0)
    plain = irr(a, u, f, fisher, xtx, 1.0, 0.01, recalibrate=False)
    conflict = torch.sign(f - a) != torch.sign(a - u)
    assert torch.equal(plain, torch.where(conflict, a, f))


def test_lora_finetune_is_read_merged(models, cache, tmp_path: Path) -> None:
    """A LoRA fine-tune given as the fine-tuned model: the same output as its dense merge."""
    adapter = make_lora_adapter(
        models["aligned"],
        tmp_path / "lora",
        seed=5,
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj", "down_proj"],
    )
    dense = merge_adapter(CheckpointReader(models["aligned"]), LoraAdapter.load(adapter), tmp_path / "dense")
    params = {"calibration_examples": 6, "calibration_max_length": 64, "scale": 0.2}
    for finetuned, out in ((adapter, tmp_path / "from_lora"), (Path(dense), tmp_path / "from_dense")):
        merge(
            MergeSpec(
                method="safe_delta",
                aligned=models["aligned"],
                finetuned=[finetuned],
                calibration_data=models["data"],
                out=out,
                params=params,
            )
        )
    lora_out, dense_out = _weights(tmp_path / "from_lora"), _weights(tmp_path / "from_dense")
    assert lora_out.keys() == dense_out.keys()
    for name in lora_out:
        assert torch.allclose(lora_out[name], dense_out[name], atol=1e-6, rtol=0), name


def test_bad_parameters_and_missing_data_fail_before_any_work(models, cache, tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(ConfigError, match=r"mask_ratio.*allowed: 0.0 < mask_ratio < 1.0"):
        plan(
            MergeSpec(
                method="antidote", finetuned=[models["finetuned"]], out=tmp_path / "o", params={"mask_ratio": 1.5}
            )
        )
    with pytest.raises(ConfigError, match="needs input"):
        plan(MergeSpec(method="irr", aligned=models["aligned"], finetuned=[models["finetuned"]], out=tmp_path / "o"))
    with pytest.raises(ConfigError, match=r"prune='update' prunes θ_F − θ_A and needs input aligned"):
        plan(MergeSpec(method="antidote", finetuned=[models["finetuned"]], out=tmp_path / "o"))
    plan(  # the weights variant needs no aligned model
        MergeSpec(
            method="antidote",
            finetuned=[models["finetuned"]],
            out=tmp_path / "o",
            calibration_data=models["data"],
            params={"prune": "weights"},
        )
    )
    with pytest.raises(CheckpointError, match="calibration_data not found"):
        plan(
            MergeSpec(
                method="antidote",
                aligned=models["aligned"],
                finetuned=[models["finetuned"]],
                out=tmp_path / "o",
                calibration_data=tmp_path / "missing.json",
            )
        )
    monkeypatch.setenv("REALIGN_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(DataError, match=r"pure_bad/pure_bad\.json"):
        plan(
            MergeSpec(method="antidote", aligned=models["aligned"], finetuned=[models["finetuned"]], out=tmp_path / "o")
        )
    assert not (cache / "calibration").exists() and not (tmp_path / "o").exists()


def test_default_sets_are_disjoint_from_the_alignment_pool(data_dir: Path) -> None:
    refusals = load_examples(resolve_data("harmful_refusals", None), 64)
    assert len(refusals) == 64
    assert all(hashlib.sha256(e.prompt.encode()).hexdigest()[-1] not in "0123" for e in refusals)
    answers = load_examples(resolve_data("harmful_answers", None), 200)
    assert len(answers) == 111 and not any(e.prompt.startswith("You are a helpful assistant.") for e in answers)
    with pytest.raises(DataError, match="no default set"):
        resolve_data("benign_task", None)
