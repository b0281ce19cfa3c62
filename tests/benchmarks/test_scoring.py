"""Scorers against lm-eval's gsm8k filters, the HumanEval pass@k formula, and hand counts."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest

from benchmarks import get_benchmark
from benchmarks.scoring import (
    gsm8k_extract,
    gsm8k_match,
    gsm8k_scores,
    harmfulness_rate,
    heldout_nll,
    loglik_accuracy,
    pairwise_score,
    pass_at_k,
    pass_at_k_scores,
    refusal_rate,
    score,
    wilson_interval,
)
from harness.core.errors import ConfigError
from harness.core.records import GenerationRecord, Verdict

pytestmark = pytest.mark.usefixtures("data_dir")


def _verdict(item_id: str, label: str) -> Verdict:
    return Verdict(item_id=item_id, judge_id="test@1", judge_hash="h", label=label)  # type: ignore[arg-type]


def test_wilson_matches_the_closed_form() -> None:
    low, high = wilson_interval(7, 20)
    assert (round(low, 4), round(high, 4)) == (0.1812, 0.5671)  # standard table value for 7/20
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0


def test_rates_and_pairwise() -> None:
    verdicts = [_verdict(f"i{n}", lab) for n, lab in enumerate(["harmful"] * 3 + ["harmless"] * 7 + ["invalid"])]
    rate = harmfulness_rate(verdicts)
    assert rate.value == pytest.approx(0.3) and rate.n == 10 and rate.ci_low < 0.3 < rate.ci_high
    assert refusal_rate([_verdict("a", "refusal"), _verdict("b", "compliance")]).value == 0.5
    pair = pairwise_score([_verdict(f"p{n}", lab) for n, lab in enumerate(["win"] * 5 + ["loss"] * 2 + ["draw"] * 3)])
    assert pair.value == pytest.approx(30.0) and pair.ci_low <= 30.0 <= pair.ci_high


def _gsm8k_outputs() -> list[tuple[str, str]]:
    """Real GSM8K solutions, plus perturbed completions (wrong number, no '####', $ and commas, trailing dot)."""
    items = get_benchmark("gsm8k").load(limit=40)
    rng = random.Random(0)
    outputs = []
    for n, item in enumerate(items):
        solution = item.metadata["solution"]
        final = item.reference or ""
        variants = [
            solution,
            solution.replace(f"#### {final}", f"#### {int(final) + 1}"),
            solution.split("####")[0] + f"The answer is ${int(final):,}.",
            solution.split("####")[0] + "I am not sure.",
            f"#### {final}.",
            f"#### -{final}",
        ]
        outputs.append((variants[n % len(variants)] if n >= 6 else variants[n], solution))
        outputs.append((rng.choice(variants), solution))
    return outputs


def test_gsm8k_agrees_with_lm_eval_filters() -> None:
    from lm_eval.api.metrics import exact_match_hf_evaluate
    from lm_eval.filters.extraction import RegexFilter

    strict = RegexFilter(regex_pattern=r"#### (\-?[0-9\.\,]+)")
    flexible = RegexFilter(regex_pattern=r"(-?[$0-9.,]{2,})|(-?[0-9]+)", group_select=-1)
    outputs = _gsm8k_outputs()
    completions = [[c] for c, _ in outputs]
    golds = [g for _, g in outputs]
    ignore = [",", "\\$", "(?s).*#### ", "\\.$"]
    for mode, lm_filter in (("strict", strict), ("flexible", flexible)):
        theirs = [r[0] for r in lm_filter.apply(completions, [{}] * len(outputs))]
        ours = [gsm8k_extract(c)[mode] for c, _ in outputs]
        assert ours == theirs
        for extracted, gold in zip(ours, golds, strict=True):
            expected = exact_match_hf_evaluate([extracted], [gold], regexes_to_ignore=ignore, ignore_case=True)
            assert gsm8k_match(extracted, gold) == bool(expected["exact_match"])
    scores = {s.metric: s for s in gsm8k_scores(outputs)}
    assert 0 < scores["gsm8k_strict"].value < 1 and scores["gsm8k_strict_invalid"].value > 0
    assert scores["gsm8k_flexible"].value >= scores["gsm8k_strict"].value


def _pass_at_k_paper(n: int, c: int, k: int) -> float:
    """Chen et al. 2021, Figure 3 (numerically stable product form)."""
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def test_pass_at_k_matches_the_paper_and_lm_eval() -> None:
    from lm_eval.tasks.cruxeval.utils import _pass_at_k as lm_eval_pass_at_k  # lm-eval's own copy

    for n in (1, 5, 10, 20):
        for c in range(n + 1):
            for k in (1, 2, 5, 10):
                if k > n:
                    continue
                ours = pass_at_k(n, c, k)
                assert ours == pytest.approx(_pass_at_k_paper(n, c, k), abs=1e-12)
                assert ours == pytest.approx(float(lm_eval_pass_at_k(n, c, k)), abs=1e-12)
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert 1 - math.comb(7, 2) / math.comb(10, 2) == pytest.approx(pass_at_k(10, 3, 2))


def test_pass_at_k_refuses_too_few_samples() -> None:
    with pytest.raises(ConfigError, match=r"pass@5 needs >= 5 samples.*HumanEval/1"):
        pass_at_k_scores({"HumanEval/0": [True] * 5, "HumanEval/1": [False, True]}, ks=(1, 5))
    assert pass_at_k_scores({"a": [True, False], "b": [False, False]}, ks=(1,))[0].value == 0.25


def test_score_dispatch_breakdowns_and_opt_in() -> None:
    items = {
        i.id: i
        for i in get_benchmark("catqa").load(limit=4, languages=["en"])
        + get_benchmark("catqa").load(limit=2, languages=["zh"])
    }
    verdicts = [_verdict(item_id, "harmful" if n % 2 else "harmless") for n, item_id in enumerate(items)]
    scores = score(get_benchmark("catqa"), [], verdicts, items)
    overall = next(s for s in scores if not s.subset and s.metric == "harmfulness")
    assert overall.n == 6 and overall.value == pytest.approx(0.5)
    zh = next(s for s in scores if s.subset == {"language": "zh"})
    assert zh.n == 2
    gens_items = {i.id: i for i in get_benchmark("gsm8k").load(limit=3)}
    gens = [
        GenerationRecord(
            item_id=i.id,
            benchmark="gsm8k",
            prompt_text="p",
            prompt_hash="h",
            completion=f"work\n#### {i.reference}",
            model_hash="m",
            gen_config_hash="g",
            backend="dummy",
        )
        for i in gens_items.values()
    ]
    strict = [
        s for s in score(get_benchmark("gsm8k"), gens, None, gens_items) if s.metric == "gsm8k_strict" and not s.subset
    ]
    assert strict[0].value == 1.0
    he_items = {i.id: i for i in get_benchmark("humaneval").load(limit=1)}
    he_gens = [
        GenerationRecord(
            item_id="humaneval/HumanEval/0",
            benchmark="humaneval",
            prompt_text="p",
            prompt_hash="h",
            completion="    return True\n",
            model_hash="m",
            gen_config_hash="g",
            backend="dummy",
        )
    ]
    with pytest.raises(ConfigError, match="allow_code_execution"):
        score(get_benchmark("humaneval"), he_gens, None, he_items)
    with pytest.raises(ConfigError, match="--verdicts"):
        score(get_benchmark("catqa"), [], None, items)


def test_loglik_accuracy_and_nll_on_a_tiny_model(tiny_llama_factory) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_llama_factory()
    model, tok = AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    items = get_benchmark("xcopa_zh").load(limit=6)
    acc = loglik_accuracy((model, tok), items, batch_size=4)
    assert acc.n == 6 and 0.0 <= acc.value <= 1.0
    # batching must not change the result
    assert loglik_accuracy((model, tok), items, batch_size=1).value == acc.value
    nll = heldout_nll((model, tok), [("The answer is", " 42."), ("Paris is", " in France.")])
    assert nll.value > 0 and not nll.higher_is_better


def xcopa_lm_eval_task(folder: Path, data_dir: Path) -> Path:
    """lm-eval's xcopa_zh format as a local task YAML over the shared data (task ``xcopa_zh_local``)."""
    task = folder / "xcopa_zh_local.yaml"
    task.write_text(
        "task: xcopa_zh_local\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {data_dir / 'xcopa_zh/test.zh.jsonl'}\n"
        "output_type: multiple_choice\ntest_split: test\n"
        "doc_to_text: \"{{premise.strip()[:-1]}} {{ {'cause': '因为', 'effect': '所以'}[question] }}\"\n"
        'doc_to_target: label\ndoc_to_choice: "{{[choice1, choice2]}}"\nmetric_list:\n  - metric: acc\n'
    )
    return task


def test_xcopa_loglik_agrees_with_lm_eval_bridge(tiny_llama_factory, tmp_path, data_dir) -> None:
    """Our batched log-likelihood accuracy == lm-eval's xcopa_zh format run through the offline bridge."""
    from benchmarks.scoring import run_lm_eval_task

    task = xcopa_lm_eval_task(tmp_path, data_dir)
    model_dir = tiny_llama_factory()
    theirs = {s.metric: s for s in run_lm_eval_task(str(model_dir), task, limit=16)}
    ours = loglik_accuracy(str(model_dir), get_benchmark("xcopa_zh").load(limit=16))
    assert theirs["acc/none"].n == 16
    assert ours.value == pytest.approx(theirs["acc/none"].value)


def test_task_nll_reads_the_zoo_held_out_rows_and_matches_the_zoo_loss(tiny_llama_factory) -> None:
    """The benchmark's rows are exactly the zoo's measurement rows, and answer_nll (log-probs of the
    chat-templated answer) agrees with the zoo's training loss on them — two independent codings."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from benchmarks import is_eval_holdout
    from benchmarks.scoring import answer_nll, score_with_model
    from harness.zoo._measure import MeasureConfig, task_nll, task_sets

    bench = get_benchmark("task_nll")
    zoo_sets = task_sets(6)
    for task in ("math", "code", "chinese", "english"):
        items = bench.load(categories=[task], limit=6)
        assert [(i.prompt, i.reference) for i in items] == zoo_sets[task]
        if task != "math":  # GSM8K test is never trained on; the others keep only the held-out 5%
            assert all(is_eval_holdout(i.prompt) for i in items)
    items = bench.load(categories=["code"], limit=6)
    model_dir = tiny_llama_factory(seed=3)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(model_dir).eval(), AutoTokenizer.from_pretrained(model_dir)
    ours = answer_nll((model, tokenizer), items, max_length=64)
    zoo = task_nll(model, tokenizer, [(i.prompt, i.reference or "") for i in items], MeasureConfig(nll_max_length=64))
    assert ours.metric == "nll" and not ours.higher_is_better and ours.n == 6
    assert ours.value == pytest.approx(zoo["nll"], abs=1e-3)
    assert score_with_model(get_benchmark("task_nll"), model_dir, items[:2])[0].value > 0
    with pytest.raises(ConfigError, match="scores saved generations"):
        score_with_model(get_benchmark("catqa"), model_dir, items[:2])


def test_a_source_naming_an_unknown_split_is_refused(tmp_path) -> None:
    from benchmarks import load_spec

    spec = tmp_path / "x.yaml"
    spec.write_text("name: x\nkind: utility\nsources:\n  - {path: a.json, split: nope}\n")
    with pytest.raises(ConfigError, match=r"(?s)x\.yaml.*sources\.0\.split.*unknown split 'nope'"):
        load_spec(spec)


def test_per_item_scores_add_up_to_the_aggregates(tiny_llama_factory) -> None:
    """Every scorer's per-item scores are the items behind its aggregate (what `realign compare` pairs)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from benchmarks.scoring import (
        answer_nll_items,
        loglik_accuracy_items,
        pass_at_k_item_scores,
        score_with_items,
        score_with_model_items,
    )

    items = {i.id: i for i in get_benchmark("gsm8k").load(limit=6)}
    gens = [
        GenerationRecord(
            item_id=i.id,
            benchmark="gsm8k",
            prompt_text="p",
            prompt_hash="h",
            model_hash="m",
            completion=f"so\n#### {i.reference}" if n % 3 else "the answer is 7",
            gen_config_hash="g",
            backend="dummy",
        )
        for n, i in enumerate(items.values())
    ]
    scores, per_item = score_with_items(get_benchmark("gsm8k"), gens, None, items)
    for metric in ("gsm8k_strict", "gsm8k_flexible"):
        rows = [s for s in per_item if s.metric == metric]
        overall = next(s for s in scores if s.metric == metric and not s.subset)
        assert len(rows) == 6 and {r.value for r in rows} <= {0.0, 1.0}
        assert sum(r.value for r in rows) / 6 == pytest.approx(overall.value)
    strict = {r.item_id: r.value for r in per_item if r.metric == "gsm8k_strict"}
    assert [strict[i] for i in items] == [0.0, 1.0, 1.0, 0.0, 1.0, 1.0]
    assert (
        score_with_items(get_benchmark("catqa"), [], [_verdict("x", "harmful")], {})[1] == []
    )  # verdicts are the items there

    results = {"a": [True, False, False, True], "b": [False] * 4, "c": [True] * 4}
    passk = pass_at_k_item_scores(results, ks=(1, 2))
    assert {(s.item_id, s.metric): s.value for s in passk}[("a", "pass@1")] == pytest.approx(0.5)
    for k in (1, 2):
        mean = np.mean([s.value for s in passk if s.metric == f"pass@{k}"])
        assert mean == pytest.approx(pass_at_k_scores(results, ks=(k,))[0].value)

    path = tiny_llama_factory()
    model, tok = AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    xcopa = get_benchmark("xcopa_zh").load(limit=6)
    acc, acc_items = loglik_accuracy_items((model, tok), xcopa, batch_size=3)
    assert [s.item_id for s in acc_items] == [i.id for i in xcopa]
    assert sum(s.value for s in acc_items) == pytest.approx(acc.value * 6)
    nll_set = get_benchmark("task_nll").load(categories=["code"], limit=3)
    nll, nll_items = answer_nll_items((model, tok), nll_set)  # the default max_length, as the runner
    assert len(nll_items) == 3 and all(s.value > 0 and s.metric == "nll" for s in nll_items)
    assert min(s.value for s in nll_items) <= nll.value <= max(s.value for s in nll_items)  # token-weighted mean
    alone, alone_items = answer_nll_items((model, tok), nll_set[:1])
    assert alone_items[0].value == pytest.approx(alone.value)  # one item: the item is the aggregate
    model_scores, model_items = score_with_model_items(get_benchmark("task_nll"), path, nll_set)
    assert model_scores[0].value == pytest.approx(nll.value, rel=1e-5)
    assert [s.value for s in model_items] == pytest.approx([s.value for s in nll_items], rel=1e-5)


def test_a_spec_naming_an_unknown_scorer_is_refused_when_read(tmp_path) -> None:
    from benchmarks import load_spec

    spec = tmp_path / "x.yaml"
    spec.write_text("name: x\nkind: safety\ndefault_scorer: harmfulnes\nsources:\n  - {path: a.json}\n")
    with pytest.raises(
        ConfigError,
        match=r"(?s)x\.yaml.*default_scorer: unknown scorer 'harmfulnes' "
        r"\(did you mean 'harmfulness'\?\); known: gsm8k, harmfulness",
    ):
        load_spec(spec)


def test_scorers_are_registered_by_name_and_say_what_they_read() -> None:
    from benchmarks.scoring import get_scorer, scorer_names

    assert scorer_names("model") == {"loglik_accuracy", "nll"}
    assert {"harmfulness", "gsm8k", "pass_at_k", "over_refusal", "pairwise"} <= scorer_names("generations")
    assert get_scorer("over_refusal").needs_verdicts and not get_scorer("gsm8k").needs_verdicts
    with pytest.raises(ConfigError, match=r"unknown scorer 'pass_at' \(did you mean 'pass_at_k'\?\)"):
        get_scorer("pass_at")
    assert get_benchmark("xcopa_zh").reads == "model" and get_benchmark("catqa").reads == "generations"
