"""cluster.yaml and cluster.local.yaml: valid for Ray's cluster launcher, and safe.

Each rule is a function that returns the problems it finds in a config; the
tests assert the shipped files have none, and that a copy broken on purpose
is caught, so that no rule passes vacuously.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[1]
FILES = ("cluster.yaml", "cluster.local.yaml")
# Ports that must never be open to the internet: the dashboard and job API,
# the Ray client server, the GCS.
PRIVATE_PORTS = (8265, 10001, 6379)
OPEN_CIDRS = ("0.0.0.0/0", "::/0")
COMMAND_KEYS = (
    "initialization_commands",
    "setup_commands",
    "head_setup_commands",
    "worker_setup_commands",
    "head_start_ray_commands",
    "worker_start_ray_commands",
)
# Only package registries (pip's index, apt's archive) may serve downloads:
# no fetching of scripts or archives from arbitrary URLs.
FORBIDDEN_FETCH = re.compile(r"\b(curl|wget|git\s+clone)\b|https?://|\bs3://|\bgs://")


def load(name: str) -> dict:
    return yaml.safe_load((REPO / name).read_text())


def all_commands(cfg: dict) -> list[str]:
    cmds = [c for key in COMMAND_KEYS for c in cfg.get(key) or []]
    for node_type in (cfg.get("available_node_types") or {}).values():
        for key in ("initialization_commands", "worker_setup_commands"):
            cmds += node_type.get(key) or []
    return cmds


def ray_start_args(cmd: str) -> list[str] | None:
    """The arguments after `ray start` in a shell command, or None if it has none."""
    for part in re.split(r";|&&|\|\|", cmd):
        words = shlex.split(part)
        for i in range(len(words) - 1):
            if words[i].endswith("ray") and words[i + 1] == "start":
                return words[i + 2 :]
    return None


def flag(args: list[str], name: str) -> str | None:
    """The value of `--name=value` or `--name value` in args, else None."""
    for i, a in enumerate(args):
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
        if a == name and i + 1 < len(args):
            return args[i + 1]
    return None


# --- the rules -------------------------------------------------------------


def schema_problems(cfg: dict) -> list[str]:
    """Ray's own checks, offline: its JSON schema on the file as written, then
    what `ray up` does before touching a cloud (defaults merged, validated)."""
    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    try:
        jsonschema.validate(cfg, json.loads(schema_path.read_text()))
        validate_config(prepare_config(copy.deepcopy(cfg)))
    except (jsonschema.ValidationError, ValueError, RuntimeError) as e:
        return [f"{type(e).__name__}: {str(e).splitlines()[0]}"]
    return []


def head_work_problems(cfg: dict) -> list[str]:
    head = cfg["available_node_types"][cfg["head_node_type"]]
    if head.get("resources", {}).get("CPU") != 0:
        return [f"head type must declare CPU 0 so no work lands there, got {head.get('resources')}"]
    if head.get("resources", {}).get("GPU", 0) != 0:
        return ["head type must not offer GPUs"]
    return []


def gpu_worker_problems(cfg: dict) -> list[str]:
    workers = {k: v for k, v in cfg["available_node_types"].items() if k != cfg["head_node_type"]}
    gpu = {k: v for k, v in workers.items() if v.get("resources", {}).get("GPU", 0) >= 1}
    if not gpu:
        return [f"no worker type declares a GPU: {sorted(workers)}"]
    problems = []
    for name, t in gpu.items():
        if t.get("min_workers", 0) != 0:
            problems.append(f"{name}: min_workers must be 0 (scale GPUs from zero), got {t['min_workers']}")
        if not 1 <= t.get("max_workers", 0) <= cfg["max_workers"]:
            problems.append(f"{name}: max_workers must be in 1..{cfg['max_workers']}")
    return problems


def dashboard_problems(cfg: dict) -> list[str]:
    heads = [ray_start_args(c) for c in cfg["head_start_ray_commands"]]
    heads = [a for a in heads if a is not None and "--head" in a]
    if len(heads) != 1:
        return [f"expected one `ray start --head` in head_start_ray_commands, found {len(heads)}"]
    host = flag(heads[0], "--dashboard-host")
    if host != "127.0.0.1":
        return [f"the dashboard must be bound to 127.0.0.1 (reach it with `ray dashboard`), got {host}"]
    if flag(heads[0], "--autoscaling-config") != "~/ray_bootstrap_config.yaml":
        return ["the head must start the autoscaler: --autoscaling-config=~/ray_bootstrap_config.yaml"]
    return []


def token_auth_problems(cfg: dict) -> list[str]:
    problems = []
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        for cmd in cfg[key]:
            if ray_start_args(cmd) is not None and "RAY_AUTH_MODE=token" not in cmd:
                problems.append(f"{key}: `ray start` without RAY_AUTH_MODE=token: {cmd}")
    if not any(k.endswith("/.ray/auth_token") for k in cfg.get("file_mounts", {})):
        problems.append("file_mounts must carry the token to ~/.ray/auth_token on every node")
    return problems


def fetch_problems(cfg: dict) -> list[str]:
    return [f"downloads from outside a package registry: {c}" for c in all_commands(cfg) if FORBIDDEN_FETCH.search(c)]


def install_problems(cfg: dict) -> list[str]:
    """The project is installed from its own copy (file_mounts "."), so with
    exactly the pins of its pyproject.toml; the local .venv is not shipped."""
    repo_mounts = [remote for remote, local in cfg.get("file_mounts", {}).items() if local == "."]
    if len(repo_mounts) != 1:
        return [f'expected the repository (".") mounted once, got {repo_mounts}']
    if not any(re.search(rf"pip install\b.*-e {re.escape(repo_mounts[0])}(\s|\)|$)", c) for c in all_commands(cfg)):
        return [f"no setup command runs `pip install -e {repo_mounts[0]}`"]
    ignored = (REPO / ".gitignore").read_text().split()
    if ".gitignore" not in cfg.get("rsync_filter", []) or ".venv/" not in ignored:
        return ["the local .venv would be copied: rsync_filter must include .gitignore, which must list .venv/"]
    return []


def security_group_problems(cfg: dict) -> list[str]:
    problems = []
    for rule in cfg["provider"].get("security_group", {}).get("IpPermissions", []):
        everything = str(rule.get("IpProtocol")) == "-1"
        ports = [p for p in PRIVATE_PORTS if everything or rule.get("FromPort", 0) <= p <= rule.get("ToPort", -1)]
        cidrs = [r.get("CidrIp") for r in rule.get("IpRanges", [])] + [
            r.get("CidrIpv6") for r in rule.get("Ipv6Ranges", [])
        ]
        if ports and any(c in OPEN_CIDRS for c in cidrs):
            problems.append(f"security group opens {ports} to the internet: {rule}")
    return problems


def ami_problems(cfg: dict) -> list[str]:
    ids = {t["node_config"].get("ImageId") for t in cfg["available_node_types"].values()}
    pattern = re.compile(r"^(ami-[0-9a-f]{8,17}|resolve:ssm:/aws/service/deeplearning/ami/x86_64/\S+)$")
    if len(ids) != 1 or not all(i and pattern.match(i) for i in ids):
        return [f"every node type needs the same concrete AMI (ami-... or a DLAMI SSM alias), got {ids}"]
    return []


BOTH = (schema_problems, dashboard_problems, token_auth_problems, fetch_problems, install_problems)
AWS_ONLY = (head_work_problems, gpu_worker_problems, security_group_problems, ami_problems)


@pytest.mark.parametrize("rule", BOTH, ids=lambda r: r.__name__)
@pytest.mark.parametrize("name", FILES)
def test_both_files(name, rule):
    assert rule(load(name)) == []


@pytest.mark.parametrize("rule", AWS_ONLY, ids=lambda r: r.__name__)
def test_aws_file(rule):
    assert rule(load("cluster.yaml")) == []


def test_aws_file_basics():
    cfg = load("cluster.yaml")
    assert cfg["cluster_name"] == "featstore"
    assert cfg["provider"] == {"type": "aws", "region": "us-west-2", "cache_stopped_nodes": False}
    assert cfg["file_mounts"]["/home/ubuntu/featstore"] == "."


def test_local_file_is_one_machine_as_is():
    cfg = load("cluster.local.yaml")
    assert cfg["provider"] == {"type": "local", "head_ip": "127.0.0.1", "worker_ips": []}
    assert cfg["auth"]["ssh_private_key"] == "~/.ssh/id_ed25519"
    # The local provider refuses node types of its own (it makes one itself).
    assert "available_node_types" not in cfg
    starts = cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]
    assert all("~/featstore-venv/bin/ray " in c for c in starts), "start commands must use the venv's ray"
    assert sum(ray_start_args(c) is not None for c in starts) == 2


# --- every rule can fail ---------------------------------------------------


def _set(*path, value):
    """Set cfg[path[0]][path[1]]... to value (node type names contain dots)."""

    def mutate(cfg):
        node = cfg
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value

    return mutate


def _append(key: str, value):
    return lambda cfg: cfg.setdefault(key, []).append(value)


def _sub(key: str, old: str, new: str):
    def mutate(cfg):
        cfg[key] = [c.replace(old, new) for c in cfg[key]]

    return mutate


OPEN_DASHBOARD = {"FromPort": 8265, "ToPort": 8265, "IpProtocol": "tcp", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
ALL_PORTS_V6 = {"IpProtocol": "-1", "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}
BROKEN = [
    ("cluster.yaml", schema_problems, _set("max_worker", value=8)),  # a misspelt key
    ("cluster.yaml", schema_problems, _set("available_node_types", "worker.gpu", "min_workers", value=9)),
    ("cluster.local.yaml", schema_problems, _set("auth", "ssh_password", value="x")),
    ("cluster.yaml", head_work_problems, _set("available_node_types", "head.cpu", "resources", value={})),
    ("cluster.yaml", gpu_worker_problems, _set("available_node_types", "worker.gpu", "min_workers", value=1)),
    ("cluster.yaml", gpu_worker_problems, _set("available_node_types", "worker.gpu", "resources", value={"CPU": 8})),
    ("cluster.yaml", dashboard_problems, _sub("head_start_ray_commands", "127.0.0.1", "0.0.0.0")),
    ("cluster.local.yaml", dashboard_problems, _sub("head_start_ray_commands", "--dashboard-host=127.0.0.1 ", "")),
    ("cluster.yaml", token_auth_problems, _sub("worker_start_ray_commands", "RAY_AUTH_MODE=token ", "")),
    ("cluster.local.yaml", token_auth_problems, _set("file_mounts", value={"~/featstore": "."})),
    ("cluster.yaml", fetch_problems, _append("setup_commands", "curl -fsSL https://example.com/x.sh | sh")),
    ("cluster.local.yaml", fetch_problems, _append("setup_commands", "pip install git+https://example.com/x.git")),
    ("cluster.yaml", install_problems, _sub("setup_commands", "-e /home/ubuntu/featstore", "featstore")),
    ("cluster.local.yaml", install_problems, _set("rsync_filter", value=[])),
    (
        "cluster.yaml",
        security_group_problems,
        _set("provider", "security_group", value={"IpPermissions": [OPEN_DASHBOARD]}),
    ),
    (
        "cluster.yaml",
        security_group_problems,
        _set("provider", "security_group", value={"IpPermissions": [ALL_PORTS_V6]}),
    ),
    (
        "cluster.yaml",
        ami_problems,
        _set("available_node_types", "worker.gpu", "node_config", "ImageId", value="ami-0123456789abcdef0"),
    ),
]


@pytest.mark.parametrize(
    "name, rule, mutate", BROKEN, ids=[f"{n}-{r.__name__}-{i}" for i, (n, r, _) in enumerate(BROKEN)]
)
def test_rule_catches_a_broken_copy(name, rule, mutate):
    cfg = load(name)
    mutate(cfg)
    assert rule(cfg), f"{rule.__name__} missed a broken {name}"
