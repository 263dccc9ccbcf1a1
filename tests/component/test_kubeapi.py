"""The Kubernetes API stand-in (tests/support/kubeapi.py) must answer as a real API server does.

Two kinds of evidence. Its answers are compared with answers recorded from real servers
(tests/conffiles/kubeapi/*.json, each naming where it comes from): same status codes, kinds,
reasons, keys in the same order, and the same messages once the object's name is put in. And it is
driven with kubernetes_asyncio, the client rotator uses, exactly as rotator will: config from a
kubeconfig file, CoordinationV1Api for the Lease, CoreV1Api for the ConfigMap.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.rest import ApiException

from tests.support.kubeapi import MAX_CONFIGMAP_BYTES, KubeAPIServer

RECORDED = Path(__file__).parents[1] / "conffiles" / "kubeapi"
NS = "rotator"
LEASES = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases"
CONFIGMAPS = f"/api/v1/namespaces/{NS}/configmaps"
MICRO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")


def recorded(name: str, **renames: str) -> dict[str, Any]:
    """A recorded answer, with names in it replaced (``renames``: recorded text -> ours)."""
    text = json.dumps(json.loads((RECORDED / name).read_text(encoding="utf-8")))
    for old, new in renames.items():
        text = text.replace(old, new)
    answer: dict[str, Any] = json.loads(text)
    return answer


def shape(value: Any) -> Any:
    """The keys of every object, in order, and the type of every leaf: what a decoder depends on."""
    if isinstance(value, dict):
        return [(key, shape(item)) for key, item in value.items()]
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value).__name__


@pytest.fixture
def kube() -> Iterator[KubeAPIServer]:
    with KubeAPIServer() as server:
        yield server


@pytest.fixture
def http(kube: KubeAPIServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=kube.url, headers={"Authorization": f"Bearer {kube.token}"}) as c:
        yield c


def lease_body(name: str = "rotator", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name}, "spec": spec}


def configmap_body(name: str = "ledger", **fields: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, **fields}


# --------------------------------------------------------------------------- recorded answers


def test_a_lease_has_the_shape_kubectl_shows(http: httpx.Client) -> None:
    real = recorded("lease.json")["body"]
    labels = real["metadata"]["labels"]
    spec = {"holderIdentity": "pod-a", "leaseDurationSeconds": 15, "renewTime": "2030-01-01T00:00:00.000001Z"}
    http.post(
        LEASES, json={"metadata": {"name": "rotator", "labels": labels}, "spec": spec}
    ).raise_for_status()

    ours = http.get(f"{LEASES}/rotator").json()

    assert shape(ours) == shape(real)
    assert (ours["kind"], ours["apiVersion"]) == (real["kind"], real["apiVersion"])
    assert re.fullmatch(r"\d+", ours["metadata"]["resourceVersion"])
    assert uuid.UUID(ours["metadata"]["uid"])
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", ours["metadata"]["creationTimestamp"])


def test_a_leases_spec_has_the_apis_fields_order_and_micro_time_format(http: httpx.Client) -> None:
    real = recorded("lease-spec.json")["body"]["spec"]
    # Sent in another order, with a UTC offset: the answer is in the API's order, in UTC, with a Z.
    sent = {
        "leaseTransitions": 5,
        "renewTime": "2004-01-01T03:01:01.000004+02:00",
        "acquireTime": "2003-01-01T01:01:01.000003Z",
        "leaseDurationSeconds": 2,
        "holderIdentity": "holderIdentityValue",
    }

    ours = http.post(LEASES, json=lease_body(**sent)).json()["spec"]

    assert ours == real
    assert list(ours) == list(real)
    assert all(MICRO_TIME.fullmatch(ours[key]) for key in ("acquireTime", "renewTime"))


def test_a_configmap_has_the_shape_kubectl_shows(http: httpx.Client) -> None:
    real = recorded("configmap.json")["body"]
    http.post(CONFIGMAPS, json=configmap_body(data=real["data"])).raise_for_status()

    ours = http.get(f"{CONFIGMAPS}/ledger").json()

    assert shape(ours) == shape(real)
    assert ours["data"] == real["data"]


def test_not_found_is_the_apis_status(http: httpx.Client) -> None:
    real = recorded("status-404-not-found.json", pods="configmaps")

    answer = http.get(f"{CONFIGMAPS}/grafana")

    assert answer.status_code == real["status"]
    assert answer.json() == real["body"]


def test_a_stale_replace_is_the_apis_conflict(kube: KubeAPIServer) -> None:
    real = recorded("status-409-conflict.json")
    path = "/apis/coordination.k8s.io/v1/namespaces/xyz/leases"
    with httpx.Client(base_url=kube.url, headers={"Authorization": f"Bearer {kube.token}"}) as http:
        stale = http.post(path, json=lease_body("abc", holderIdentity="a")).json()
        http.put(f"{path}/abc", json={**stale, "spec": {"holderIdentity": "b"}}).raise_for_status()

        answer = http.put(f"{path}/abc", json={**stale, "spec": {"holderIdentity": "c"}})

    assert answer.status_code == real["status"]
    assert answer.json() == real["body"]
    assert kube.lease("xyz", "abc")["spec"] == {"holderIdentity": "b"}  # type: ignore[index]


def test_creating_an_existing_name_is_the_apis_already_exists(http: httpx.Client) -> None:
    real = recorded(
        "status-409-already-exists.json",
        **{
            "templates.template.openshift.io": "leases.coordination.k8s.io",
            "template.openshift.io": "coordination.k8s.io",
        },
        templates="leases",
    )
    http.post(LEASES, json=lease_body("hono-tenant")).raise_for_status()

    answer = http.post(LEASES, json=lease_body("hono-tenant"))

    assert answer.status_code == real["status"]
    assert answer.json() == real["body"]


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", "Basic cm90YXRvcg=="])
def test_a_missing_or_wrong_token_is_the_apis_unauthorized(
    kube: KubeAPIServer, authorization: str | None
) -> None:
    real = recorded("status-401-unauthorized.json")
    headers = {"Authorization": authorization} if authorization else {}

    answer = httpx.get(f"{kube.url}{LEASES}/rotator", headers=headers)

    assert answer.status_code == real["status"]
    assert answer.json() == real["body"]


def test_a_lease_replaced_without_resource_version_is_the_apis_invalid(http: httpx.Client) -> None:
    real = recorded("status-422-invalid-lease.json")
    http.post(LEASES, json=lease_body("test", holderIdentity="a")).raise_for_status()

    answer = http.put(f"{LEASES}/test", json=lease_body("test", holderIdentity="b"))

    assert answer.status_code == real["status"]
    assert answer.json() == real["body"]


def test_an_invalid_name_is_the_apis_invalid(http: httpx.Client) -> None:
    real = recorded("status-422-invalid-lease-name.json")

    answer = http.post(LEASES, json=lease_body("test_"))

    assert answer.status_code == real["status"]
    assert answer.json() == real["body"]


def test_a_configmap_over_one_mib_is_the_apis_invalid(http: httpx.Client) -> None:
    real = recorded("status-422-configmap-too-long.json")

    answer = http.post(
        CONFIGMAPS, json=configmap_body("skills", data={"a": "x" * MAX_CONFIGMAP_BYTES, "b": "y"})
    )

    assert answer.status_code == real["status"]
    assert answer.json() == real["body"]
    assert http.get(f"{CONFIGMAPS}/skills").status_code == 404


def test_a_micro_time_without_six_digits_is_the_apis_bad_request(http: httpx.Client) -> None:
    real = recorded("status-400-bad-request.json")
    created = http.post(LEASES, json=lease_body("example", holderIdentity="a")).json()
    sent = {**created, "spec": {"renewTime": "2024-05-01T05:04:05.491Z"}}

    answer = http.put(f"{LEASES}/example", json=sent)

    assert answer.status_code == real["status"]
    body = answer.json()
    assert shape(body) == shape(real["body"])
    # Go's own wording of the parse error's tail ('cannot parse "Z" as ".000000"') is not reproduced.
    assert real["body"]["message"].startswith(body["message"])
    assert {k: v for k, v in body.items() if k != "message"} == {
        k: v for k, v in real["body"].items() if k != "message"
    }


def test_a_delete_answers_the_apis_success_status(http: httpx.Client) -> None:
    real = recorded("status-200-deleted.json")["body"]
    uid = http.post(LEASES, json=lease_body()).json()["metadata"]["uid"]

    answer = http.delete(f"{LEASES}/rotator")

    assert answer.status_code == 200
    assert shape(answer.json()) == shape(real)
    assert answer.json()["details"] == {
        "name": "rotator",
        "group": "coordination.k8s.io",
        "kind": "leases",
        "uid": uid,
    }
    assert http.get(f"{LEASES}/rotator").status_code == 404


# --------------------------------------------------------------------------- the API's rules


def test_resource_versions_come_from_one_counter_bumped_by_every_write(http: httpx.Client) -> None:
    lease = http.post(LEASES, json=lease_body("one")).json()
    configmap = http.post(CONFIGMAPS, json=configmap_body()).json()
    http.delete(f"{CONFIGMAPS}/ledger").raise_for_status()  # a write too: it takes version 3
    second = http.post(LEASES, json=lease_body("two")).json()

    versions = [obj["metadata"]["resourceVersion"] for obj in (lease, configmap, second)]
    assert versions == ["1", "2", "4"]


def test_a_body_over_the_servers_request_limit_is_refused(http: httpx.Client) -> None:
    answer = http.post(CONFIGMAPS, content=b" " * (3 * 1024 * 1024 + 1))

    assert (answer.status_code, answer.json()["reason"]) == (413, "RequestEntityTooLarge")
    assert answer.json()["message"] == "Request entity too large: limit is 3145728"


def test_a_configmap_replaced_without_resource_version_is_updated_unconditionally(http: httpx.Client) -> None:
    created = http.post(CONFIGMAPS, json=configmap_body(data={"a": "1"})).json()

    answer = http.put(f"{CONFIGMAPS}/ledger", json=configmap_body(data={"a": "2"}))

    assert answer.status_code == 200
    assert answer.json()["data"] == {"a": "2"}
    assert answer.json()["metadata"]["uid"] == created["metadata"]["uid"]
    assert int(answer.json()["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])


def test_a_replace_of_a_missing_lease_creates_it_but_of_a_missing_configmap_is_not_found(
    http: httpx.Client,
) -> None:
    lease = http.put(f"{LEASES}/rotator", json=lease_body(holderIdentity="a"))
    configmap = http.put(f"{CONFIGMAPS}/ledger", json=configmap_body(data={"a": "1"}))

    assert lease.status_code == 201
    assert lease.json()["spec"] == {"holderIdentity": "a"}
    assert configmap.status_code == 404
    assert configmap.json()["reason"] == "NotFound"


@pytest.mark.parametrize("path", [f"{LEASES}/rotator", f"{CONFIGMAPS}/rotator"])
def test_replacing_an_object_deleted_since_it_was_read_is_a_conflict(http: httpx.Client, path: str) -> None:
    """The uid read with the object is a precondition: the write does not re-create it."""
    collection = path.rpartition("/")[0]
    read = http.post(collection, json={"metadata": {"name": "rotator"}}).json()
    http.delete(path).raise_for_status()

    answer = http.put(path, json=read)

    assert (answer.status_code, answer.json()["reason"]) == (409, "Conflict")
    assert f"Precondition failed: UID in precondition: {read['metadata']['uid']}" in answer.json()["message"]
    assert http.get(path).status_code == 404


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (lease_body("other"), "the name of the object (other) does not match the name on the URL (rotator)"),
        (
            {"metadata": {"name": "rotator", "namespace": "elsewhere"}},
            "the namespace of the object (elsewhere) does not match the namespace on the request (rotator)",
        ),
    ],
)
def test_a_body_naming_another_object_than_the_url_is_a_bad_request(
    http: httpx.Client, body: dict[str, Any], message: str
) -> None:
    http.post(LEASES, json=lease_body(holderIdentity="a")).raise_for_status()

    answer = http.put(f"{LEASES}/rotator", json=body)

    assert (answer.status_code, answer.json()["reason"], answer.json()["message"]) == (
        400,
        "BadRequest",
        message,
    )
    assert http.get(f"{LEASES}/rotator").json()["spec"] == {"holderIdentity": "a"}


@pytest.mark.parametrize(
    ("spec", "status", "reason"),
    [
        ({"leaseDurationSeconds": "15"}, 400, "BadRequest"),  # a string: not decodable into int32
        ({"leaseDurationSeconds": 15.5}, 400, "BadRequest"),
        ({"leaseDurationSeconds": 2**31}, 400, "BadRequest"),  # out of int32
        ({"holderIdentity": 7}, 400, "BadRequest"),
        ({"renewTime": "2030-01-01T00:00:00Z"}, 400, "BadRequest"),  # no fractional digits
        ({"renewTime": "2030-01-01T00:00:00.123456789Z"}, 400, "BadRequest"),  # nanoseconds
        ({"renewTime": "2030-01-01T00:00:00.123456"}, 400, "BadRequest"),  # no offset
        ({"leaseDurationSeconds": 0}, 422, "Invalid"),  # decodable, refused by validation
        ({"leaseTransitions": -1}, 422, "Invalid"),
    ],
)
def test_lease_fields_are_checked_as_the_api_checks_them(
    http: httpx.Client, spec: dict[str, Any], status: int, reason: str
) -> None:
    answer = http.post(LEASES, json=lease_body(**spec))

    assert (answer.status_code, answer.json()["reason"]) == (status, reason)
    if status == 400:
        assert answer.json()["message"].startswith('Lease in version "v1" cannot be handled as a Lease: ')
    else:
        assert answer.json()["details"]["causes"][0]["field"] == f"spec.{next(iter(spec))}"
    assert http.get(f"{LEASES}/rotator").status_code == 404


def test_configmap_data_must_be_strings(http: httpx.Client) -> None:
    answer = http.post(CONFIGMAPS, json=configmap_body(data={"port": 8080}))

    assert (answer.status_code, answer.json()["message"]) == (
        400,
        'ConfigMap in version "v1" cannot be handled as a ConfigMap: '
        "json: cannot unmarshal number into Go struct field ConfigMap.data of type string",
    )


def test_binary_data_is_base64_and_counts_decoded_bytes_against_one_mib(http: httpx.Client) -> None:
    # 1 MiB of bytes is ~1.33 MiB of base64 on the wire: the limit counts what it decodes to.
    exactly_one_mib = base64.b64encode(b"\x00" * MAX_CONFIGMAP_BYTES).decode()
    accepted = http.post(CONFIGMAPS, json=configmap_body("full", binaryData={"blob": exactly_one_mib}))
    over = http.post(
        CONFIGMAPS, json=configmap_body("over", data={"a": "x"}, binaryData={"blob": exactly_one_mib})
    )
    not_base64 = http.post(CONFIGMAPS, json=configmap_body("bad", binaryData={"blob": "not base64!"}))

    assert accepted.status_code == 201
    assert accepted.json()["binaryData"]["blob"] == exactly_one_mib
    assert (over.status_code, over.json()["reason"]) == (422, "Invalid")
    assert (not_base64.status_code, not_base64.json()["reason"]) == (400, "BadRequest")
    assert "illegal base64 data at input byte 3" in not_base64.json()["message"]


def test_a_resource_version_on_create_is_refused_by_the_storage_layer(http: httpx.Client) -> None:
    body = lease_body()
    body["metadata"]["resourceVersion"] = "7"

    answer = http.post(LEASES, json=body)

    assert answer.status_code == 500
    assert answer.json()["message"] == "resourceVersion should not be set on objects to be created"


@pytest.mark.parametrize(
    ("method", "path", "status", "reason"),
    [
        ("GET", "/api/v1/namespaces/rotator/pods/x", 404, "NotFound"),
        ("GET", "/version", 404, "NotFound"),
        ("GET", LEASES, 405, "MethodNotAllowed"),  # LIST is not served
        ("PATCH", f"{LEASES}/rotator", 405, "MethodNotAllowed"),
        ("POST", f"{CONFIGMAPS}/ledger", 405, "MethodNotAllowed"),
    ],
)
def test_what_is_not_served_answers_a_status(
    http: httpx.Client, method: str, path: str, status: int, reason: str
) -> None:
    answer = http.request(method, path, json={})

    assert (answer.status_code, answer.json()["kind"], answer.json()["reason"]) == (status, "Status", reason)


def test_concurrent_replaces_from_one_version_let_exactly_one_win(
    kube: KubeAPIServer, http: httpx.Client
) -> None:
    """Leader election rests on this: of three candidates writing over the same version, one wins."""
    seen = http.post(LEASES, json=lease_body(holderIdentity="")).json()

    async def candidates() -> list[int]:
        headers = {"Authorization": f"Bearer {kube.token}"}
        async with httpx.AsyncClient(base_url=kube.url, headers=headers) as c:
            puts = [
                c.put(f"{LEASES}/rotator", json={**seen, "spec": {"holderIdentity": f"pod-{i}"}})
                for i in range(3)
            ]
            return sorted(answer.status_code for answer in await asyncio.gather(*puts))

    assert asyncio.run(candidates()) == [200, 409, 409]
    assert kube.lease(NS, "rotator")["spec"]["holderIdentity"] in {"pod-0", "pod-1", "pod-2"}  # type: ignore[index]


# --------------------------------------------------------------------------- through kubernetes_asyncio


@asynccontextmanager
async def api_client(kube: KubeAPIServer, tmp_path: Path) -> AsyncIterator[client.ApiClient]:
    """A client configured the way rotator configures it: from a kubeconfig file."""
    configuration = client.Configuration()
    kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig")
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    async with client.ApiClient(configuration) as api:
        yield api


def v1_lease(holder: str, renew: datetime) -> client.V1Lease:
    spec = client.V1LeaseSpec(
        holder_identity=holder,
        lease_duration_seconds=15,
        acquire_time=renew,
        renew_time=renew,
        lease_transitions=0,
    )
    return client.V1Lease(metadata=client.V1ObjectMeta(name="rotator"), spec=spec)


NOW = datetime(2030, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)


async def test_kubernetes_asyncio_creates_reads_and_replaces_a_lease(
    kube: KubeAPIServer, tmp_path: Path
) -> None:
    async with api_client(kube, tmp_path) as api:
        leases = client.CoordinationV1Api(api)
        created = await leases.create_namespaced_lease(NS, v1_lease("pod-a", NOW))
        read = await leases.read_namespaced_lease("rotator", NS)
        read.spec.holder_identity = "pod-b"
        read.spec.renew_time = NOW + timedelta(seconds=2)
        replaced = await leases.replace_namespaced_lease("rotator", NS, read)

        with pytest.raises(ApiException) as stale:
            await leases.replace_namespaced_lease("rotator", NS, read)  # still carries the old version

    assert read.spec.renew_time == NOW + timedelta(seconds=2)
    assert created.metadata.uid == replaced.metadata.uid
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)
    assert stale.value.status == 409
    assert json.loads(stale.value.body)["reason"] == "Conflict"
    assert kube.lease(NS, "rotator")["spec"] == {  # type: ignore[index]
        "holderIdentity": "pod-b",
        "leaseDurationSeconds": 15,
        "acquireTime": "2030-01-01T12:00:00.123456Z",
        "renewTime": "2030-01-01T12:00:02.123456Z",
        "leaseTransitions": 0,
    }


async def test_kubernetes_asyncio_reads_a_missing_lease_as_404(kube: KubeAPIServer, tmp_path: Path) -> None:
    async with api_client(kube, tmp_path) as api:
        with pytest.raises(ApiException) as missing:
            await client.CoordinationV1Api(api).read_namespaced_lease("rotator", NS)

    assert missing.value.status == 404
    assert json.loads(missing.value.body)["reason"] == "NotFound"


async def test_kubernetes_asyncio_keeps_a_ledger_in_a_configmap(kube: KubeAPIServer, tmp_path: Path) -> None:
    async with api_client(kube, tmp_path) as api:
        core = client.CoreV1Api(api)
        ledger = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="ledger"), data={"account-0": "{}"})
        await core.create_namespaced_config_map(NS, ledger)
        read = await core.read_namespaced_config_map("ledger", NS)
        read.data["account-0"] = '{"rotated_at": "2030-01-01T00:00:00Z"}'
        await core.replace_namespaced_config_map("ledger", NS, read)
        with pytest.raises(ApiException) as stale:
            await core.replace_namespaced_config_map("ledger", NS, read)
        deleted = await core.delete_namespaced_config_map("ledger", NS)
        with pytest.raises(ApiException) as gone:
            await core.read_namespaced_config_map("ledger", NS)

    assert stale.value.status == 409
    assert deleted.status == "Success"
    assert gone.value.status == 404


async def test_a_micro_time_with_no_microseconds_is_refused_as_by_a_real_server(
    kube: KubeAPIServer, tmp_path: Path
) -> None:
    """kubernetes_asyncio sends datetimes with isoformat(), which drops ".000000": a real API server
    refuses that (MicroTime needs six digits), so rotator must send MicroTimes as strings it formats."""
    async with api_client(kube, tmp_path) as api:
        leases = client.CoordinationV1Api(api)
        with pytest.raises(ApiException) as refused:
            await leases.create_namespaced_lease(NS, v1_lease("pod-a", NOW.replace(microsecond=0)))
        body = v1_lease("pod-a", NOW)
        body.spec.renew_time = body.spec.acquire_time = "2030-01-01T12:00:00.000000Z"
        created = await leases.create_namespaced_lease(NS, body)

    assert refused.value.status == 400
    assert "cannot be handled as a Lease" in json.loads(refused.value.body)["message"]
    assert created.spec.renew_time == NOW.replace(microsecond=0)


def test_a_micro_time_offset_is_answered_in_utc(http: httpx.Client) -> None:
    plus_two = datetime(2030, 1, 1, 14, 0, 0, 500000, tzinfo=timezone(timedelta(hours=2)))

    answer = http.post(LEASES, json=lease_body(renewTime=plus_two.isoformat()))

    assert answer.json()["spec"]["renewTime"] == "2030-01-01T12:00:00.500000Z"


# --------------------------------------------------------------------------- Events (issue 18)

EVENTS = f"/apis/events.k8s.io/v1/namespaces/{NS}/events"


def event_body(name: str = "rotator.1", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": name},
        "eventTime": "2030-01-01T12:00:00.123456Z",
        "type": "Normal",
        "reason": "KeyRotated",
        "action": "Rotate",
        "reportingController": "rotator",
        "reportingInstance": "rotator-7d9-abc",
        "regarding": {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "name": "rotator",
            "namespace": NS,
        },
        "note": "account production: rotated",
    }
    for key, value in fields.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def test_an_event_is_created_as_sent_with_the_servers_metadata(
    http: httpx.Client, kube: KubeAPIServer
) -> None:
    answer = http.post(EVENTS, json=event_body())

    assert answer.status_code == 201, answer.text
    created = answer.json()
    assert (created["kind"], created["apiVersion"]) == ("Event", "events.k8s.io/v1")
    assert created["metadata"]["namespace"] == NS and created["metadata"]["resourceVersion"]
    assert created["reason"] == "KeyRotated" and created["regarding"]["kind"] == "Lease"
    assert [e["metadata"]["name"] for e in kube.events(NS)] == ["rotator.1"]


def test_an_event_without_its_required_fields_is_the_apis_invalid(http: httpx.Client) -> None:
    """events.k8s.io/v1 requires what core/v1 did not (ValidateEventCreate): one 422 naming each."""
    answer = http.post(
        EVENTS,
        json=event_body(
            eventTime=None, reportingController=None, reportingInstance=None, action=None, reason=None
        ),
    )

    assert answer.status_code == 422
    status = answer.json()
    assert status["reason"] == "Invalid" and status["details"]["kind"] == "Event"
    fields = [cause["field"] for cause in status["details"]["causes"]]
    assert fields == ["eventTime", "reportingController", "reportingInstance", "action", "reason"]
    assert status["message"].startswith(
        'Event.events.k8s.io "rotator.1" is invalid: [eventTime: Required value, '
    )


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"type": "Info"}, "type", 'Invalid value: "": has invalid value: Info'),
        ({"reason": "R" * 129}, "reason", 'Invalid value: "": can have at most 128 characters'),
        ({"note": "n" * 1025}, "note", 'Invalid value: "": can have at most 1024 characters'),
        (
            {"regarding": {"kind": "Lease", "name": "rotator", "namespace": "elsewhere"}},
            "involvedObject.namespace",
            'Invalid value: "elsewhere": does not match event.namespace',
        ),
        ({"reportingController": "not a name"}, "reportingController", 'Invalid value: "not a name"'),
    ],
)
def test_event_fields_are_checked_as_the_api_checks_them(
    http: httpx.Client, fields: dict[str, Any], field: str, message: str
) -> None:
    answer = http.post(EVENTS, json=event_body(**fields))

    assert answer.status_code == 422, answer.text
    (cause,) = answer.json()["details"]["causes"]
    assert cause["field"] == field and cause["message"].startswith(message)


async def test_rotator_creates_an_event_about_the_lease_through_kubernetes_asyncio(
    kube: KubeAPIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rotator.after.events import Event
    from rotator.after.kube_events import KubeEvents
    from rotator.ha.kube import KubeAPI, Lease

    monkeypatch.setenv("KUBECONFIG", str(kube.write_kubeconfig(tmp_path / "kubeconfig")))
    api = await KubeAPI.connect(NS)
    try:
        lease = await api.create_lease("rotator", Lease("rotator-1", 15, NOW, NOW, 0), deadline=5)
        sink = KubeEvents(api, "rotator", "rotator-1-abc")
        sink.start()
        sink.emit(
            Event(
                "key_publication_late",
                "production",
                "0" * 32,
                NOW,
                {"deadline_seconds": 300.0, "reason": "no new key is served"},
            )
        )
        sink.emit(Event("account_checked", "production", "0" * 32, NOW, {}))  # not an Event's business
        await sink.aclose()
    finally:
        await api.close()

    (event,) = kube.events(NS)
    assert (event["type"], event["reason"], event["action"]) == (
        "Warning",
        "KeyPublicationLate",
        "VerifyPublication",
    )
    assert event["regarding"] == {
        "kind": "Lease",
        "namespace": NS,
        "name": "rotator",
        "uid": lease.uid,
        "apiVersion": "coordination.k8s.io/v1",
    }
    assert event["reportingController"] == "rotator" and event["reportingInstance"] == "rotator-1-abc"
    assert event["note"] == (
        f"account production ({'0' * 32}): new key not served at the team's certs endpoint within 300.0 s: "
        "no new key is served"
    )
    assert event["eventTime"] == "2030-01-01T12:00:00.123456Z"
