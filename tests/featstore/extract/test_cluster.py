"""Cluster launcher files as node groups at full size, and --price values."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from featstore.extract.cluster import load_prices, parse_cluster, parse_price_overrides

REPO = Path(__file__).resolve().parents[3]


def test_cluster_yaml_head_and_gpu_workers():
    head, workers = parse_cluster(REPO / "cluster.yaml")
    # The head runs no task (resources CPU 0); 8 single-GPU workers at most.
    assert (head.name, head.count, head.cpus, head.gpus, head.instance_type) == ("head.cpu", 1, 0.0, 0.0, "m5.2xlarge")
    assert (workers.name, workers.count, workers.cpus, workers.gpus) == ("worker.gpu", 8, 8.0, 1.0)
    assert (workers.instance_type, workers.gpu_name) == ("g5.2xlarge", "NVIDIA A10G")
    prices = load_prices()
    assert {head.instance_type, workers.instance_type} <= set(prices["instances"])  # every type it names is priced
    assert prices["region"] == "us-east-1" and prices["as_of"] == "2026-12-06"


def test_local_provider_file_is_its_machines(tmp_path):
    (group,) = parse_cluster(REPO / "cluster.local.yaml")
    assert (group.name, group.count, group.cpus, group.gpus) == ("local", 1, float(os.cpu_count()), 0.0)
    assert "assumed like this one" in group.notes[0]
    doc = yaml.safe_load((REPO / "cluster.local.yaml").read_text())
    doc["provider"]["worker_ips"] = ["10.0.0.11", "10.0.0.12"]
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(doc))
    assert parse_cluster(tmp_path / "two.yaml")[0].count == 3  # the head and two workers


def test_undeclared_resources_come_from_the_instance_and_caps_apply(tmp_path):
    doc = {
        "max_workers": 3,
        "head_node_type": "head",
        "available_node_types": {
            "head": {"resources": {"CPU": 0}, "node_config": {"InstanceType": "m5.xlarge"}},
            "gpu": {"max_workers": 10, "node_config": {"InstanceType": "g5.xlarge"}},
            "cpu": {"max_workers": 2, "resources": {"CPU": 16}, "node_config": {"InstanceType": "m5.4xlarge"}},
        },
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    head, gpu = parse_cluster(path)  # the cap of 3 workers is used up by the first worker type
    assert (head.count, gpu.count, gpu.cpus, gpu.gpus, gpu.gpu_name) == (1, 3, 4.0, 1.0, "NVIDIA A10G")
    assert any("from g5.xlarge's vCPUs" in n for n in gpu.notes) and any("capped to 3" in n for n in gpu.notes)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            {"head_node_type": "h", "available_node_types": {"h": {"node_config": {"InstanceType": "x9.huge"}}}},
            "x9.huge",
        ),
        ({"head_node_type": "nope", "available_node_types": {"h": {"resources": {"CPU": 1}}}}, "head_node_type 'nope'"),
        ({"provider": {"type": "aws"}}, "no available_node_types"),
        (["not", "a", "mapping"], "not a Ray cluster file"),
    ],
)
def test_malformed_cluster_files_are_named(tmp_path, doc, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ValueError, match=message):
        parse_cluster(path)


def test_price_overrides():
    assert parse_price_overrides(["g5.2xlarge=1.5", "local=0"]) == {"g5.2xlarge": 1.5, "local": 0.0}
    for bad in ("g5.2xlarge", "g5.2xlarge=", "=1.2", "g5.2xlarge=cheap", "g5.2xlarge=-1", "g5.2xlarge=inf"):
        with pytest.raises(ValueError, match=f"--price '{bad}': expected TYPE=USD_PER_HOUR"):
            parse_price_overrides([bad])
