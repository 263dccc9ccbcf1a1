"""The Kubernetes API as rotator uses it: one Lease, one ConfigMap and Events, every call bounded.

Through kubernetes_asyncio, for its config discovery (in-cluster service account, else
``$KUBECONFIG`` or ``~/.kube/config``, with every kubeconfig authentication it supports) and its
typed API calls. Importing it costs about 0.7 s and 50 MB (it loads every API group's models), so
this module imports it only when a ``KubeAPI`` is connected: only with ``leader_election.enabled``.

Every failure is a ``KubernetesError`` naming the object and the call; a 409 (the object changed
since it was read, or exists already) is ``KubernetesConflict``. No call waits longer than the
deadline it is given: kubernetes_asyncio sets none of its own.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from rotator.errors import KubernetesConflict, KubernetesError, KubernetesNotFound

# Where a pod's service account puts its namespace (beside its token and the cluster's CA).
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
T = TypeVar("T")


@dataclass(frozen=True)
class Lease:
    """A coordination.k8s.io/v1 Lease's spec, as leader election reads and writes it."""

    holder: str | None
    lease_duration_seconds: int
    acquire_time: datetime | None
    renew_time: datetime | None
    transitions: int
    resource_version: str | None = None  # as read; None for a Lease not yet created
    uid: str | None = None  # as read (Events about the Lease name it)

    def body(self, name: str, namespace: str) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": name, "namespace": namespace}
        if self.resource_version is not None:
            metadata["resourceVersion"] = self.resource_version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": self.holder,
                "leaseDurationSeconds": self.lease_duration_seconds,
                "acquireTime": _micro_time(self.acquire_time),
                "renewTime": _micro_time(self.renew_time),
                "leaseTransitions": self.transitions,
            },
        }


@dataclass(frozen=True)
class ConfigMap:
    binary_data: dict[str, bytes]  # the ConfigMap's binaryData, decoded
    resource_version: str | None = None


class KubeAPI:
    """The Lease and ConfigMap calls of one namespace, each bounded by its ``deadline`` (seconds)."""

    def __init__(self, api_client: Any, namespace: str) -> None:
        from kubernetes_asyncio import client

        self.namespace = namespace
        self._api_client = api_client
        self._leases = client.CoordinationV1Api(api_client)
        self._core = client.CoreV1Api(api_client)
        self._events = client.EventsV1Api(api_client)

    @classmethod
    async def connect(cls, namespace: str | None) -> KubeAPI:
        """Find the API server as kubectl would from inside a pod (its service account), else from
        ``$KUBECONFIG`` or ``~/.kube/config``; KubernetesError saying what was looked for if neither."""
        from kubernetes_asyncio import client, config

        configuration = client.Configuration()
        kubeconfig = _kubeconfig()
        try:
            if kubeconfig is None:
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
                found = namespace or _service_account_namespace()
            else:
                await config.load_kube_config(
                    config_file=str(kubeconfig), client_configuration=configuration, persist_config=False
                )
                found = namespace or _context_namespace(str(kubeconfig))
        except config.ConfigException as exc:
            raise KubernetesError(
                f"leader_election: cannot use the Kubernetes configuration: {exc}"
            ) from None
        return cls(client.ApiClient(configuration), found)

    async def close(self) -> None:
        await self._api_client.close()

    # ----------------------------------------------------------------------- the Lease

    async def read_lease(self, name: str, *, deadline: float) -> Lease | None:
        found = await self._call(
            f"reading the Lease {self.namespace}/{name}",
            lambda: self._leases.read_namespaced_lease(name, self.namespace, _request_timeout=deadline),
            deadline,
            missing_ok=True,
        )
        return None if found is None else _lease(found)

    async def create_lease(self, name: str, lease: Lease, *, deadline: float) -> Lease:
        body: Any = lease.body(name, self.namespace)
        created = await self._call(
            f"creating the Lease {self.namespace}/{name}",
            lambda: self._leases.create_namespaced_lease(self.namespace, body, _request_timeout=deadline),
            deadline,
        )
        return _lease(created)

    async def replace_lease(self, name: str, lease: Lease, *, deadline: float) -> Lease:
        """Write ``lease`` over the one read at ``lease.resource_version`` (409 if it changed since)."""
        body: Any = lease.body(name, self.namespace)
        replaced = await self._call(
            f"updating the Lease {self.namespace}/{name}",
            lambda: self._leases.replace_namespaced_lease(
                name, self.namespace, body, _request_timeout=deadline
            ),
            deadline,
        )
        return _lease(replaced)

    # ----------------------------------------------------------------------- the ConfigMap

    async def read_config_map(self, name: str, *, deadline: float) -> ConfigMap | None:
        found = await self._call(
            f"reading the ConfigMap {self.namespace}/{name}",
            lambda: self._core.read_namespaced_config_map(name, self.namespace, _request_timeout=deadline),
            deadline,
            missing_ok=True,
        )
        return None if found is None else _config_map(found)

    async def write_config_map(self, name: str, config_map: ConfigMap, *, deadline: float) -> ConfigMap:
        """Create it (``resource_version`` None) or replace the version read (409 if it changed)."""
        metadata: dict[str, Any] = {"name": name, "namespace": self.namespace}
        if config_map.resource_version is not None:
            metadata["resourceVersion"] = config_map.resource_version
        encoded = {k: base64.b64encode(v).decode("ascii") for k, v in config_map.binary_data.items()}
        body: Any = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "binaryData": encoded}
        if config_map.resource_version is None:
            written = await self._call(
                f"creating the ConfigMap {self.namespace}/{name}",
                lambda: self._core.create_namespaced_config_map(
                    self.namespace, body, _request_timeout=deadline
                ),
                deadline,
            )
        else:
            written = await self._call(
                f"updating the ConfigMap {self.namespace}/{name}",
                lambda: self._core.replace_namespaced_config_map(
                    name, self.namespace, body, _request_timeout=deadline
                ),
                deadline,
            )
        return _config_map(written)

    # ----------------------------------------------------------------------- Events

    async def create_event(self, body: dict[str, Any], *, deadline: float) -> None:
        """Create an events.k8s.io/v1 Event (``body``: the whole object, its name included)."""
        name = body.get("metadata", {}).get("name")
        sent: Any = body
        await self._call(
            f"creating the Event {self.namespace}/{name}",
            lambda: self._events.create_namespaced_event(self.namespace, sent, _request_timeout=deadline),
            deadline,
        )

    # ----------------------------------------------------------------------- one call

    async def _call(
        self, what: str, call: Callable[[], Awaitable[T]], deadline: float, *, missing_ok: bool = False
    ) -> T | None:
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            async with asyncio.timeout(deadline):
                return await call()
        except ApiException as exc:
            if exc.status == 404 and missing_ok:
                return None
            message = f"{what}: {exc.status} {exc.reason}{_status_message(exc.body)}"
            if exc.status == 409:
                raise KubernetesConflict(message) from None
            if exc.status == 404:
                raise KubernetesNotFound(message) from None
            raise KubernetesError(message) from None
        except TimeoutError:
            raise KubernetesError(f"{what}: no answer within {deadline:.1f}s") from None
        except (aiohttp.ClientError, OSError) as exc:  # kubernetes_asyncio's transport is aiohttp
            raise KubernetesError(f"{what}: {type(exc).__name__}: {exc}") from None
        except ValueError as exc:  # an answer that does not decode into its model
            raise KubernetesError(f"{what}: an answer rotator cannot read: {exc}") from None


def _lease(found: Any) -> Lease:
    spec = found.spec
    return Lease(
        holder=spec.holder_identity or None,
        lease_duration_seconds=int(spec.lease_duration_seconds or 0),
        acquire_time=_aware(spec.acquire_time),
        renew_time=_aware(spec.renew_time),
        transitions=int(spec.lease_transitions or 0),
        resource_version=found.metadata.resource_version,
        uid=found.metadata.uid,
    )


def _config_map(found: Any) -> ConfigMap:
    try:
        binary = {k: base64.b64decode(v, validate=True) for k, v in (found.binary_data or {}).items()}
    except (ValueError, TypeError) as exc:
        raise KubernetesError(
            f"the ConfigMap {found.metadata.name}'s binaryData is not base64: {exc}"
        ) from None
    return ConfigMap(binary, found.metadata.resource_version)


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _micro_time(moment: datetime | None) -> str | None:
    # A MicroTime: RFC 3339 with exactly six fractional digits, in UTC.
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _status_message(body: Any) -> str:
    """The message of the API's Status answer, if it sent one (it names the object, never a token)."""
    import json

    try:
        message = json.loads(body).get("message") if body else None
    except (ValueError, AttributeError):
        return ""
    return f": {message}" if message else ""


def _kubeconfig() -> Path | None:
    """None inside a pod (its service account), else the kubeconfig kubectl would read."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return None
    path = Path(os.environ.get("KUBECONFIG") or Path.home() / ".kube" / "config")
    if not path.exists():
        raise KubernetesError(
            "leader_election is enabled, but no Kubernetes API is configured: not in a pod "
            f"($KUBERNETES_SERVICE_HOST unset) and no kubeconfig at {path}"
        )
    return path


def _service_account_namespace() -> str:
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise KubernetesError(
            f"leader_election.namespace is not set and the pod's namespace cannot be read from "
            f"{SERVICE_ACCOUNT_NAMESPACE}: {exc.strerror}"
        ) from None


def _context_namespace(kubeconfig: str) -> str:
    from kubernetes_asyncio import config

    _, current = config.list_kube_config_contexts(kubeconfig)
    namespace = ((current or {}).get("context") or {}).get("namespace")
    return str(namespace) if namespace else "default"
