"""What users deploy, checked as they meet it.

The Dockerfile: hadolint lints it, and its stages are read for what the image promises (only the
built environment reaches the final stage, a fixed non-root user, the entrypoint, the version label).
tests/deploy/test_image.py builds the image from it with buildah and runs it against the simulator.

Kubernetes: `kubectl kustomize` renders the base and the dry-run overlay, every core object passes
`kubernetes-validate --strict`, and the rendered objects are read for what operators rely on: two
replicas under leader election with the RBAC it needs and nothing more, a disruption budget, a spread
across nodes, a NetworkPolicy, a hardened pod, probes on the health endpoints, the token from a Secret,
the config from a ConfigMap that rotator accepts.
"""

from __future__ import annotations

import copy
import functools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from rotator import __version__
from rotator.config.model import Config, load_config

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
KUSTOMIZE = ROOT / "deploy" / "kubernetes"
BASE = KUSTOMIZE / "base"
SECRET_EXAMPLE = BASE / "secret.example.yaml"
PROMETHEUS_RULES = BASE / "prometheusrule.yaml"
# The targets users apply, and the config file each one ships.
TARGETS = {
    "base": (KUSTOMIZE, BASE / "config.yaml"),
    "dry-run": (KUSTOMIZE / "overlays" / "dry-run", BASE / "config.yaml"),
}
# Objects of these kinds come from CRDs (the prometheus-operator's): kubernetes-validate has no
# schema for them. The PrometheusRule's rules are checked with promtool in tests/deploy/test_monitoring.py.
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}
# The repo's virtual environment holds the test tools (hadolint, kubernetes-validate).
TOOLS = Path(sys.executable).parent


def run(args: list[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, check=False, **kwargs)


def tool(name: str) -> Path:
    path = TOOLS / name
    if not path.exists():
        pytest.fail(f"{name} is missing from {TOOLS}: install the test extra (pip install -e '.[test]')")
    return path


def without_credentials() -> dict[str, str]:
    """The environment minus anything that could stand in for the config or a token under test."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("ROTATOR_", "CLOUDFLARE_", "CF_"))}


# --- the Dockerfile ---------------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction.upper(), " ".join(arguments.split())))
    return stages


def instructions(stage: list[tuple[str, str]], name: str) -> list[str]:
    return [arguments for instruction, arguments in stage if instruction == name]


def test_dockerfile_passes_hadolint() -> None:
    result = run([tool("hadolint"), DOCKERFILE])
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_installs_only_the_locked_set_and_the_wheel_built_from_the_copied_sources() -> None:
    build, final = dockerfile_stages()
    (built,) = instructions(build, "RUN")
    # The locked set, hash-checked, nothing resolved beyond it; then the wheel built from the
    # copied sources, alone; into an environment made without pip, by another environment's pip.
    assert "venv --without-pip /opt/rotator" in built
    assert "--python /opt/rotator/bin/python install --no-deps --require-hashes" in built
    assert "-r requirements.txt" in built
    assert "pip wheel --no-deps --wheel-dir /dist ." in built
    assert "--python /opt/rotator/bin/python install --no-deps --no-index /dist/*.whl" in built
    assert "/opt/rotator/bin/pip" not in built
    # Nothing but the installed environment reaches the final stage: no source, wheel or pip cache.
    assert instructions(final, "COPY") == ["--from=build /opt/rotator /opt/rotator"]
    assert not any("pip" in r for r in instructions(final, "RUN"))


def test_image_runs_the_daemon_as_a_fixed_non_root_user() -> None:
    final = dockerfile_stages()[-1]
    (user,) = instructions(final, "USER")
    uid, _, gid = user.partition(":")
    # Numeric, so the kubelet can verify runAsNonRoot without reading /etc/passwd.
    assert uid.isdigit(), user
    assert int(uid) != 0, user
    assert gid.isdigit(), user
    assert int(gid) != 0, user
    assert instructions(final, "ENTRYPOINT") == ['["rotator"]']
    assert instructions(final, "CMD") == ['["run"]']
    env = " ".join(instructions(final, "ENV"))
    # The root filesystem is read-only in the pod: Python must not try to write bytecode.
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "ROTATOR_CONFIG=/etc/rotator/config.yaml" in env
    listen = yaml.safe_load(TARGETS["base"][1].read_text(encoding="utf-8"))["http"]["listen"]
    assert instructions(final, "EXPOSE") == [listen.rpartition(":")[2]]


def test_image_labels_carry_the_package_version() -> None:
    final = dockerfile_stages()[-1]
    assert f"VERSION={__version__}" in instructions(final, "ARG"), (
        "the image's default org.opencontainers.image.version differs from rotator.__version__"
    )
    assert 'org.opencontainers.image.version="${VERSION}"' in " ".join(instructions(final, "LABEL"))


# --- Kubernetes ---------------------------------------------------------------------------------


def kubectl() -> str:
    found = os.environ.get("ROTATOR_KUBECTL") or shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl is not on PATH: .ci/run installs it (or set ROTATOR_KUBECTL)")
    return found


def kustomize(directory: Path) -> list[dict[str, Any]]:
    result = run([kubectl(), "kustomize", directory], timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


class Rendered:
    def __init__(self, target: str) -> None:
        directory, self.config_file = TARGETS[target]
        self.target = target
        self.objects = kustomize(directory)

    def one(self, kind: str) -> dict[str, Any]:
        (found,) = [o for o in self.objects if o["kind"] == kind]
        return found

    @property
    def deployment(self) -> dict[str, Any]:
        return self.one("Deployment")

    @property
    def pod(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.deployment["spec"]["template"]["spec"]
        return spec

    @property
    def container(self) -> dict[str, Any]:
        (container,) = self.pod["containers"]
        return container

    @property
    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = yaml.safe_load(self.one("ConfigMap")["data"]["config.yaml"])
        return config


@functools.cache
def render(target: str) -> Rendered:
    return Rendered(target)


@pytest.fixture(params=list(TARGETS))
def rendered(request: pytest.FixtureRequest) -> Rendered:
    return render(request.param)


def loaded_config(rendered: Rendered, tmp_path: Path) -> Config:
    """The shipped config as rotator reads it (defaults filled in), from the rendered ConfigMap."""
    path = tmp_path / "shipped-config.yaml"
    path.write_text(rendered.one("ConfigMap")["data"]["config.yaml"], encoding="utf-8")
    return load_config(path, environ={})


def secret_example() -> dict[str, Any]:
    secret: dict[str, Any] = yaml.safe_load(SECRET_EXAMPLE.read_text(encoding="utf-8"))
    return secret


def port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return int(number)


def listen_port(config: dict[str, Any]) -> int:
    return int(config["http"]["listen"].rpartition(":")[2])


def quantity(value: str | int) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9}
    text = str(value)
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return float(text.removesuffix(suffix)) * factor
    return float(text)


def test_renders_the_documented_objects_without_a_namespace(rendered: Rendered) -> None:
    kinds = sorted(o["kind"] for o in rendered.objects)
    assert kinds == sorted(
        [
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "ConfigMap",
            "Deployment",
            "PodDisruptionBudget",
            "NetworkPolicy",
            "Service",
            "ServiceMonitor",
            "PrometheusRule",
        ]
    )
    # Namespace-agnostic: users choose the namespace when they apply.
    assert [o["metadata"]["name"] for o in rendered.objects if "namespace" in o["metadata"]] == []
    # The ledger ConfigMap is rotator's to create: shipped here, every `kubectl apply` would reset it
    # and forget the rotations in flight.
    assert [o["metadata"]["name"] for o in rendered.objects if o["kind"] == "ConfigMap"] == ["rotator-config"]


def test_applying_never_overwrites_the_token_secret(rendered: Rendered) -> None:
    # A Secret among the rendered objects would replace the user's real token on every apply.
    assert "Secret" not in {o["kind"] for o in rendered.objects}
    (value,) = secret_example()["stringData"].values()
    assert value.startswith("REPLACE-ME"), "the Secret example must hold a placeholder, never a token"


def validate_strict(objects: list[dict[str, Any]], directory: Path) -> subprocess.CompletedProcess[str]:
    files = []
    for obj in objects:
        file = directory / f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"
        file.write_text(yaml.safe_dump(obj), encoding="utf-8")
        files.append(file)
    return run([tool("kubernetes-validate"), "--strict", *files], timeout=120)


def test_core_objects_pass_kubernetes_validate_strict(rendered: Rendered, tmp_path: Path) -> None:
    core = [o for o in rendered.objects if o["kind"] not in CUSTOM_KINDS]
    assert {o["kind"] for o in rendered.objects} - {o["kind"] for o in core} == CUSTOM_KINDS
    core.append(secret_example())
    result = validate_strict(core, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    # An object whose kind or apiVersion has no schema only gets a warning: insist on a pass.
    for obj in core:
        resource = f"{obj['kind'].lower()}/{obj['metadata']['name']}"
        assert f"passed for resource {resource} " in result.stdout, result.stdout


def test_strict_validation_catches_a_misspelt_security_setting(tmp_path: Path) -> None:
    # Without --strict, this typo would pass and the root filesystem would stay writable.
    deployment = copy.deepcopy(render("base").deployment)
    security = deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    security["readOnlyRootFileSystem"] = security.pop("readOnlyRootFilesystem")
    result = validate_strict([deployment], tmp_path)
    assert result.returncode != 0
    assert "readOnlyRootFileSystem" in result.stdout + result.stderr


def test_runs_two_replicas_of_which_only_the_lease_holder_acts(rendered: Rendered, tmp_path: Path) -> None:
    spec = rendered.deployment["spec"]
    assert spec["replicas"] == 2
    # Safe only because one replica acts: a new pod starts as a follower, and no pod is taken away
    # before its replacement is ready.
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    election = loaded_config(rendered, tmp_path).settings.leader_election
    assert election.enabled is True, "two replicas without leader election would both rotate"


def test_each_replica_names_itself_by_its_pod(rendered: Rendered) -> None:
    # leader_election.identity defaults to $POD_NAME: `kubectl get lease` then names the leading pod.
    assert "identity" not in rendered.config["leader_election"]
    (pod_name,) = [e for e in rendered.container["env"] if e["name"] == "POD_NAME"]
    assert pod_name == {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}


def test_shutdown_has_time_to_finish_a_rotation_and_release_the_lease(
    rendered: Rendered, tmp_path: Path
) -> None:
    # On SIGTERM a rotate request in flight finishes (bounded by cloudflare.timeout), the ledger's
    # ConfigMap is written (renew_deadline), then the Lease released (retry_period); SIGKILL before
    # that leaves the Lease to expire, and no leader for lease_duration.
    settings = loaded_config(rendered, tmp_path).settings
    election = settings.leader_election
    needed = settings.cloudflare.timeout + election.renew_deadline + election.retry_period
    assert rendered.pod["terminationGracePeriodSeconds"] >= needed + 5, needed


def test_pod_runs_non_root_read_only_without_privileges(rendered: Rendered) -> None:
    pod, container = rendered.pod["securityContext"], rendered.container["securityContext"]
    assert container.get("runAsNonRoot", pod.get("runAsNonRoot")) is True
    (image_user,) = instructions(dockerfile_stages()[-1], "USER")
    assert str(container.get("runAsUser", pod.get("runAsUser"))) == image_user.partition(":")[0]
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}
    seccomp = container.get("seccompProfile", pod.get("seccompProfile"))
    assert seccomp == {"type": "RuntimeDefault"}
    # Nowhere to write: the ledger lives in a ConfigMap under leader election, so no state_file and
    # no writable volume for one.
    assert "state_file" not in rendered.config
    assert all(m.get("readOnly") is True for m in rendered.container["volumeMounts"])
    assert not [v for v in rendered.pod["volumes"] if "emptyDir" in v or "hostPath" in v]


def test_the_kubernetes_api_token_is_mounted_for_rotator_pods_only(rendered: Rendered) -> None:
    account = rendered.one("ServiceAccount")
    assert rendered.pod["serviceAccountName"] == account["metadata"]["name"]
    # The kubelet's projected token at /var/run/secrets/kubernetes.io/serviceaccount, where
    # in-cluster config looks; asked for by this pod, not given to every pod run as the account.
    assert rendered.pod["automountServiceAccountToken"] is True
    assert account["automountServiceAccountToken"] is False
    volumes = [v for v in rendered.pod["volumes"] if "projected" in v]
    assert volumes == [], "a token volume of our own besides the kubelet's would be a second token"


def rbac_grants(role: dict[str, Any]) -> set[tuple[str, str, str, str | None]]:
    """(apiGroup, resource, verb, resourceName or None for any) for every grant of the Role."""
    return {
        (group, resource, verb, name)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
        for name in rule.get("resourceNames") or [None]
    }


def test_rbac_grants_exactly_the_calls_leader_election_makes(rendered: Rendered, tmp_path: Path) -> None:
    election = loaded_config(rendered, tmp_path).settings.leader_election
    lease, ledger = election.lease_name, election.ledger_name
    shards = [ledger, *(f"{ledger}-{n}" for n in range(1, election.ledger_shards))]
    # get and update pinned to the Lease and each of the ledger's shards; create cannot be (the name
    # is in the body, which RBAC does not see). No list, watch, patch or delete, and nothing else:
    # no Secrets, no pods.
    assert rbac_grants(rendered.one("Role")) == {
        ("coordination.k8s.io", "leases", "get", lease),
        ("coordination.k8s.io", "leases", "update", lease),
        ("coordination.k8s.io", "leases", "create", None),
        *(("", "configmaps", verb, shard) for shard in shards for verb in ("get", "update")),
        ("", "configmaps", "create", None),
        ("events.k8s.io", "events", "create", None),  # Events about the Lease (issue 18)
    }
    # The ledger must not be the ConfigMap the config comes from: rotator would overwrite its config.
    assert rendered.one("ConfigMap")["metadata"]["name"] not in shards


def test_rbac_is_bound_to_the_pods_service_account_in_their_namespace(rendered: Rendered) -> None:
    role, binding = rendered.one("Role"), rendered.one("RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    # No namespace in the subject: in a RoleBinding that means the binding's own, whichever the user
    # applies to (`kubectl apply -n`); a namespace written here would bind another namespace's account.
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": rendered.pod["serviceAccountName"]}]


def test_rbac_subject_follows_the_namespace_an_overlay_sets(tmp_path: Path) -> None:
    objects = _overlay(tmp_path, "namespace: rotator-prod\nresources:\n  - BASE_DIR/base\n")
    (binding,) = [o for o in objects if o["kind"] == "RoleBinding"]
    assert binding["metadata"]["namespace"] == "rotator-prod"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rotator", "namespace": "rotator-prod"}]


def test_a_drain_evicts_one_replica_at_a_time(rendered: Rendered) -> None:
    budget = rendered.one("PodDisruptionBudget")["spec"]
    pod_labels = rendered.deployment["spec"]["template"]["metadata"]["labels"]
    assert budget["selector"]["matchLabels"].items() <= pod_labels.items()
    # maxUnavailable, not minAvailable 1, which at one replica would block every drain for good.
    assert budget["maxUnavailable"] == 1 and "minAvailable" not in budget
    assert rendered.deployment["spec"]["replicas"] - budget["maxUnavailable"] >= 1
    # A pod that is not ready protects nothing: a drain may evict it even with the budget used up.
    assert budget["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_replicas_spread_across_nodes_without_blocking_scheduling(rendered: Rendered) -> None:
    (spread,) = rendered.pod["topologySpreadConstraints"]
    pod_labels = rendered.deployment["spec"]["template"]["metadata"]["labels"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["maxSkew"] == 1
    # A preference: a follower left Pending would also use up the disruption budget.
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway"
    assert spread["labelSelector"]["matchLabels"].items() <= pod_labels.items()
    assert spread["matchLabelKeys"] == ["pod-template-hash"]


def policy_ports(rules: list[dict[str, Any]], container: dict[str, Any]) -> set[tuple[str, int]]:
    return {(p.get("protocol", "TCP"), port_number(container, p["port"])) for r in rules for p in r["ports"]}


def test_network_policy_admits_only_what_rotator_uses(rendered: Rendered, tmp_path: Path) -> None:
    policy = rendered.one("NetworkPolicy")["spec"]
    pod_labels = rendered.deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    # In: the metrics port only (scrapes; the kubelet's probes come from the node, always allowed),
    # and only from Prometheus' pods in the monitoring namespace: every rule names its sources, and
    # each source both a namespace and a pod (one entry: both must match).
    assert policy_ports(policy["ingress"], rendered.container) == {("TCP", listen_port(rendered.config))}
    for rule in policy["ingress"]:
        assert rule.get("from"), "an ingress rule without `from` admits every pod and address"
        for source in rule["from"]:
            assert source["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
            assert source["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}
            assert "ipBlock" not in source
    # DNS only to the cluster's resolver: CoreDNS's pods, or NodeLocal DNSCache's address.
    (dns,) = [r for r in policy["egress"] if ("UDP", 53) in policy_ports([r], rendered.container)]
    assert dns["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        },
        {"ipBlock": {"cidr": "169.254.20.10/32"}},
    ]
    # Every egress rule names its ports: no rule lets out everything.
    assert all(rule.get("ports") for rule in policy["egress"])
    # Out: DNS over UDP and TCP, HTTPS (Cloudflare, certs, webhooks, the API server's Service), and
    # 6443, where the API server listens once the Service's DNAT has happened.
    assert policy_ports(policy["egress"], rendered.container) == {
        ("UDP", 53),
        ("TCP", 53),
        ("TCP", 443),
        ("TCP", 6443),
    }
    base_url = loaded_config(rendered, tmp_path).settings.cloudflare.base_url
    assert (httpx.URL(base_url).port or 443) == 443, f"{base_url}: the policy admits no egress to it"


def test_requests_and_limits_are_set(rendered: Rendered) -> None:
    resources = rendered.container["resources"]
    for name in ("cpu", "memory"):
        request, limit = resources["requests"][name], resources["limits"][name]
        assert 0 < quantity(request) <= quantity(limit), (name, request, limit)


def test_probes_ask_the_health_endpoints_on_the_configured_port(rendered: Rendered) -> None:
    container = rendered.container
    port = listen_port(rendered.config)
    liveness, readiness = container["livenessProbe"]["httpGet"], container["readinessProbe"]["httpGet"]
    assert liveness["path"] == "/healthz"
    assert readiness["path"] == "/readyz"
    assert port_number(container, liveness["port"]) == port
    assert port_number(container, readiness["port"]) == port


def test_prometheus_scrapes_metrics_through_the_service(rendered: Rendered) -> None:
    service, monitor = rendered.one("Service"), rendered.one("ServiceMonitor")
    pod_labels = rendered.deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (service_port,) = service["spec"]["ports"]
    assert port_number(rendered.container, service_port["targetPort"]) == listen_port(rendered.config)
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == (service_port["name"], "/metrics")


def test_token_comes_from_the_secret_users_create(rendered: Rendered) -> None:
    """As a file of the Secret's volume, read-only, not an environment variable: the config's
    api_token_file is one of the Secret's keys under the mount."""
    secret = secret_example()
    container = rendered.container
    assert not [s for s in container.get("envFrom", []) if "secretRef" in s], "the token is not an env var"
    assert not [e for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})]
    assert not [e for e in container.get("env", []) if "value" in e and "TOKEN" in e["name"]]
    volumes = {v["name"]: v for v in rendered.pod["volumes"]}
    (mount,) = [
        m
        for m in container["volumeMounts"]
        if volumes[m["name"]].get("secret", {}).get("secretName") == secret["metadata"]["name"]
    ]
    assert mount.get("readOnly") is True and "subPath" not in mount
    assert volumes[mount["name"]]["secret"]["defaultMode"] == 0o440
    token_file = Path(rendered.config["cloudflare"]["api_token_file"])
    assert "api_token_env" not in rendered.config["cloudflare"]
    assert token_file.parent == Path(mount["mountPath"])
    assert token_file.name in secret["stringData"]


def test_config_comes_from_the_configmap_generated_from_the_config_file(rendered: Rendered) -> None:
    configmap = rendered.one("ConfigMap")
    assert configmap["data"] == {"config.yaml": rendered.config_file.read_text(encoding="utf-8")}
    container = rendered.container
    args = container["args"]
    config_path = Path(args[args.index("-c") + 1])
    volume = {v["name"]: v for v in rendered.pod["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if volume[m["name"]].get("configMap") is not None]
    assert volume[mount["name"]]["configMap"]["name"] == configmap["metadata"]["name"]
    # No hash suffix: an edit updates the mounted file in place and rotator reloads it, instead of
    # a rollout of both pods (two Lease handovers) that a refused config would stall.
    assert configmap["metadata"]["name"] == "rotator-config"
    assert Path(mount["mountPath"]) / "config.yaml" == config_path
    assert mount.get("readOnly") is True
    # A subPath mount would never see the ConfigMap's updates, and rotator could not reload them.
    assert "subPath" not in mount


def test_shipped_config_is_accepted_by_rotator(rendered: Rendered, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(rendered.one("ConfigMap")["data"]["config.yaml"], encoding="utf-8")
    # No token here, as in CI: --without-secrets reports the missing credential as a warning only.
    result = run(
        [sys.executable, "-m", "rotator", "validate", "--without-secrets", "-c", config],
        env=without_credentials(),
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dry_run_overlay_is_a_patch_that_sets_only_dry_run(tmp_path: Path) -> None:
    """The overlay carries no copy of the config: it adds ROTATOR_DRY_RUN=true to the container,
    and that puts every account in dry run, whatever the shipped config says."""
    base, dry_run = render("base"), render("dry-run")
    overlay = KUSTOMIZE / "overlays" / "dry-run"
    assert sorted(p.name for p in overlay.iterdir()) == ["kustomization.yaml"]
    assert dry_run.config == base.config and base.config["rotation"]["dry_run"] is False
    # Appended to the base's environment (POD_NAME), not in its place.
    assert dry_run.container["env"] == [*base.container["env"], {"name": "ROTATOR_DRY_RUN", "value": "true"}]
    assert "ROTATOR_DRY_RUN" not in {e["name"] for e in base.container["env"]}
    # Otherwise the same objects.
    patched = copy.deepcopy(dry_run.objects)
    for o in patched:
        if o["kind"] == "Deployment":
            o["spec"]["template"]["spec"]["containers"][0]["env"].pop()
    assert patched == base.objects

    config = tmp_path / "config.yaml"
    config.write_text(dry_run.one("ConfigMap")["data"]["config.yaml"], encoding="utf-8")
    env = {
        **without_credentials(),
        **{e["name"]: e["value"] for e in dry_run.container["env"] if "value" in e},
    }
    result = run(
        [sys.executable, "-m", "rotator", "validate", "--without-secrets", "-c", config], env=env, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "warning: $ROTATOR_DRY_RUN is set: every account is in dry run" in result.stdout
    loaded = load_config(config, environ={"ROTATOR_DRY_RUN": "true"})
    assert [a.policy.dry_run for a in loaded.accounts] == [True] * len(loaded.accounts)
    assert not any(a.policy.dry_run for a in load_config(config, environ={}).accounts)


def test_deployment_runs_the_image_of_this_version(rendered: Rendered) -> None:
    image = rendered.container["image"]
    assert image.rpartition(":")[2] == __version__, (
        f"{image}: update `images` in deploy/kubernetes/base/kustomization.yaml on each release"
    )


# --- components, runbook links (issue 12, items 14 and 15) ------------------------------------------


def _overlay(tmp_path: Path, text: str) -> list[dict[str, Any]]:
    """Render a user's overlay next to this checkout (``BASE_DIR`` stands for deploy/kubernetes)."""
    overlay = tmp_path / "my-rotator"
    overlay.mkdir(exist_ok=True)
    (overlay / "kustomization.yaml").write_text(
        text.replace("BASE_DIR", os.path.relpath(KUSTOMIZE, overlay)), encoding="utf-8"
    )
    return kustomize(overlay)


def _runbook_urls(objects: list[dict[str, Any]]) -> list[str]:
    (rule,) = [o for o in objects if o["kind"] == "PrometheusRule"]
    return [r["annotations"]["runbook_url"] for g in rule["spec"]["groups"] for r in g["rules"]]


def test_runbook_links_are_absolute_and_their_base_is_one_setting(rendered: Rendered, tmp_path: Path) -> None:
    placeholder = "https://github.com/your-org/rotator/blob/main"
    urls = _runbook_urls(rendered.objects)
    assert urls and all(u.startswith(f"{placeholder}/docs/runbooks/Rotator") for u in urls), urls

    overlay_dir = tmp_path / "my-rotator"
    overlay_dir.mkdir()
    example = KUSTOMIZE / "components" / "runbook-links" / "runbook.example.yaml"
    (overlay_dir / "runbook.yaml").write_text(example.read_text(encoding="utf-8"), encoding="utf-8")
    base_url = yaml.safe_load(example.read_text(encoding="utf-8"))["data"]["base_url"]
    objects = _overlay(
        tmp_path,
        """\
resources:
  - BASE_DIR/base
  - runbook.yaml
components:
  - BASE_DIR/components/runbook-links
""",
    )
    rules = yaml.safe_load(PROMETHEUS_RULES.read_text(encoding="utf-8"))["spec"]["groups"]
    alerts = [r["alert"] for g in rules for r in g["rules"]]
    assert _runbook_urls(objects) == [f"{base_url}/docs/runbooks/{a}.md" for a in alerts]
    assert "rotator-runbook" not in [o["metadata"]["name"] for o in objects]  # local-config: not applied


def test_token_file_and_metrics_token_components_mount_what_the_configs_name(tmp_path: Path) -> None:
    objects = _overlay(
        tmp_path,
        """\
resources:
  - BASE_DIR/base
components:
  - BASE_DIR/components/token-file
  - BASE_DIR/components/metrics-token
""",
    )
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"] if m["name"] in secrets}

    example = yaml.safe_load((ROOT / "config.example.yaml").read_text(encoding="utf-8"))
    (token_file,) = [a["api_token_file"] for a in example["accounts"] if "api_token_file" in a]
    mount = mounts[str(Path(token_file).parent)]
    assert secrets[mount["name"]] == "rotator-cloudflare-files" and mount["readOnly"] is True

    base_config = (BASE / "config.yaml").read_text(encoding="utf-8")
    (auth_token_file,) = re.findall(r"# auth_token_file: (\S+)", base_config)
    mount = mounts[str(Path(auth_token_file).parent)]
    assert secrets[mount["name"]] == "rotator-metrics-token" and mount["readOnly"] is True
    (monitor,) = [o for o in objects if o["kind"] == "ServiceMonitor"]
    assert monitor["spec"]["endpoints"][0]["authorization"] == {
        "type": "Bearer",
        "credentials": {"name": "rotator-metrics-token", "key": Path(auth_token_file).name},
    }
