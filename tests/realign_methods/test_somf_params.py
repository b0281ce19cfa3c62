"""SOMF's method parameters and training config are one field set, and the mask cache key stays put.

The pinned keys were computed before ``SomfParams`` and ``SomfTrainConfig`` were joined: a change here
would silently orphan every trained mask in users' caches.
"""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest

from harness.core.errors import ConfigError
from realign_methods import get_method, validate_params
from realign_methods.methods.somf import SomfParams
from realign_methods.somf import (
    FUSIONS,
    FusionName,
    SomfTrainConfig,
    SomfTrainingFields,
    make_config,
    train_cache_key,
)
from realign_methods.somf._vectors import TaskVectors

DATA_SHA = "cd" * 32


@pytest.fixture
def vectors() -> TaskVectors:
    # The key reads only the inputs' content hashes; the path is left out of it.
    return TaskVectors(
        setting="full",
        model_dir=Path("aligned"),
        deltas=[{}],
        provenance={"aligned": {"path": "/x/aligned", "sha256": "ab" * 32}},
    )


def test_content_hash_ignores_paths(vectors: TaskVectors) -> None:
    assert vectors.content_hash == "66d5e832f7f4c9b5c55a363880cdbe5d"


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({}, "e2960df8f86d5a6109b61960597ca8fd"),
        (
            {
                "fusion": "ties",
                "fusion_params": {"lam": 0.5},
                "granularity": "row",
                "steps": 3,
                "seed": 7,
                "max_pairs": 10,
                "eval_every": 5,
                "checkpoint_every": 2,
                "eval_train_pairs": 4,
                "weight_decay": 0.01,
            },
            "575ffd8a6d8ce21e18f0b67f49fc5c38",
        ),
        (
            {"fusion": "dare", "batch_size": 2, "micro_batch_size": 2, "reference": "aligned", "lr": 0.1, "seed": 3},
            "b933caa9883c493df128c33fe5eace68",
        ),
    ],
)
def test_train_cache_key_is_pinned(vectors: TaskVectors, fields: dict, key: str) -> None:
    assert train_cache_key(vectors, DATA_SHA, make_config(**fields)) == key


def test_method_params_map_to_the_same_keys(vectors: TaskVectors) -> None:
    assert train_cache_key(vectors, DATA_SHA, SomfParams().train_config(seed=0)) == "e2960df8f86d5a6109b61960597ca8fd"
    # micro_batch_size (default 4) is capped at a smaller batch instead of refused
    params = SomfParams(fusion="dare", batch_size=2, reference="aligned", lr=0.1)
    assert train_cache_key(vectors, DATA_SHA, params.train_config(seed=3)) == "b933caa9883c493df128c33fe5eace68"
    ties = SomfParams(fusion="ties", lam=0.5, granularity="row", steps=3, max_pairs=10).train_config(seed=7)
    assert ties.fusion_params == {"lam": 0.5}
    assert ties.model_dump(
        exclude={"weight_decay", "eval_every", "checkpoint_every", "eval_train_pairs"}
    ) == make_config(
        fusion="ties", fusion_params={"lam": 0.5}, granularity="row", steps=3, seed=7, max_pairs=10
    ).model_dump(exclude={"weight_decay", "eval_every", "checkpoint_every", "eval_train_pairs"})


def test_shared_fields_are_declared_once() -> None:
    shared = set(SomfTrainingFields.model_fields)
    assert len(shared) == 14
    for model in (SomfParams, SomfTrainConfig, get_method("somf_ties").info.params):
        assert shared <= set(model.model_fields)
        for name in shared - {"fusion"}:
            assert repr(model.model_fields[name]) == repr(SomfTrainingFields.model_fields[name]), (model, name)
    assert get_method("somf_ties").info.params().fusion == "ties"
    assert get_args(FusionName) == tuple(FUSIONS)


def test_misspelt_fusion_gets_a_hint_from_both() -> None:
    with pytest.raises(ConfigError, match=r"unknown fusion rule 'tie'.*did you mean 'ties'"):
        make_config(fusion="tie")
    with pytest.raises(ConfigError, match=r"did you mean 'ties'"):
        validate_params(get_method("somf").info, {"fusion": "tie"})
