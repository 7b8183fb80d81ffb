"""FeatureSpec ids: canonical, stable across processes, sensitive to every identity field."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys

import pytest

from featstore.spec import FORMAT_VERSION, FeatureSpec

BASE = FeatureSpec(
    name="audio",
    encoder="HubertModel",
    weights="3f2a9c",
    shape=(1024,),
    dtype="float16",
    preprocess={"sample_rate": 16000, "mono": True, "max_seconds": 30.0},
    layer=-1,
    pooling="mean",
    source="TencentGameMate/chinese-hubert-large",
)


def test_id_is_sha256_of_canonical_identity_json():
    expected = json.dumps(
        {
            "dtype": "float16",
            "encoder": "HubertModel",
            "format_version": FORMAT_VERSION,
            "layer": -1,
            "name": "audio",
            "pooling": "mean",
            "preprocess": {"max_seconds": 30.0, "mono": True, "sample_rate": 16000},
            "shape": [1024],
            "weights": "3f2a9c",
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    assert BASE.id == hashlib.sha256(expected.encode()).hexdigest()[:16]


def test_id_independent_of_dict_order_and_tuple_vs_list():
    other = dataclasses.replace(
        BASE, preprocess={"max_seconds": 30.0, "sample_rate": 16000, "mono": True}, shape=[1024]
    )
    assert other.id == BASE.id


def test_id_same_in_another_process_with_other_hash_seed():
    code = "from featstore.spec import FeatureSpec;import sys;print(FeatureSpec.from_json(sys.stdin.read()).id)"
    for seed in ("1", "12345"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            input=BASE.to_json(),
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
            check=True,
        )
        assert out.stdout.strip() == BASE.id


@pytest.mark.parametrize(
    "change",
    [
        {"name": "audio2"},
        {"encoder": "Wav2Vec2Model"},
        {"weights": "3f2a9d"},
        {"shape": (768,)},
        {"dtype": "float32"},
        {"preprocess": {"sample_rate": 16000, "mono": True, "max_seconds": 29.0}},
        {"preprocess": {"sample_rate": 16000, "mono": True}},
        {"layer": -2},
        {"layer": None},
        {"pooling": "max"},
        {"format_version": FORMAT_VERSION + 1},
    ],
)
def test_every_identity_field_changes_id(change):
    assert dataclasses.replace(BASE, **change).id != BASE.id


def test_source_is_provenance_only():
    moved = dataclasses.replace(BASE, source="/mnt/models/chinese-hubert-large")
    assert moved.id == BASE.id and moved.to_json() != BASE.to_json()


def test_json_round_trip():
    again = FeatureSpec.from_json(BASE.to_json())
    assert again == BASE and again.id == BASE.id and again.key == f"audio-{BASE.id}"


@pytest.mark.parametrize(
    "bad, needle",
    [
        ({"name": "Audio"}, "'Audio'"),
        ({"dtype": "bfloat16"}, "'bfloat16'"),
        ({"shape": (0,)}, "(0,)"),
        ({"shape": ()}, "()"),
        ({"weights": ""}, "weights"),
        ({"preprocess": {"x": float("nan")}}, "nan"),
        ({"preprocess": {"x": object}}, "x"),
        ({"layer": 1.5}, "1.5"),
    ],
)
def test_invalid_fields_named(bad, needle):
    with pytest.raises(ValueError, match=None) as err:
        dataclasses.replace(BASE, **bad)
    assert needle in str(err.value)


def test_unknown_keys_refused():
    d = BASE.to_dict() | {"colour": "red"}
    with pytest.raises(ValueError, match="colour"):
        FeatureSpec.from_dict(d)
