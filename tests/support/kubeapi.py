"""A Kubernetes API server stand-in for rotator's tests: Leases, ConfigMaps and Events over real HTTP.

Why it exists: rotator's leader election (a coordination.k8s.io/v1 Lease) and its rotation ledger
(a ConfigMap) talk to a kube-apiserver through kubernetes_asyncio, and none can be installed on the
machines that run these tests. A mock of the client would skip the HTTP, the client's decoding of
the answers, and the server's rules that decide correctness: optimistic concurrency on
``resourceVersion``, and MicroTime's exact wire format. So this plays the API server for exactly
the calls rotator makes, with the real JSON shapes, status codes, reasons and messages;
tests/component/test_kubeapi.py checks them against answers recorded from real servers
(tests/conffiles/kubeapi/).

Served, and nothing else (another path: 404 with a Status; another method on these paths: 405)::

    GET|PUT|DELETE /apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}
    POST           /apis/coordination.k8s.io/v1/namespaces/{ns}/leases
    GET|PUT|DELETE /api/v1/namespaces/{ns}/configmaps/{name}
    POST           /api/v1/namespaces/{ns}/configmaps
    GET|PUT|DELETE /apis/events.k8s.io/v1/namespaces/{ns}/events/{name}
    POST           /apis/events.k8s.io/v1/namespaces/{ns}/events

The real server's rules it keeps (the generic registry's ``Store.Update``/``Create`` and each
kind's strategy in kubernetes/kubernetes):

- ``resourceVersion`` comes from one global counter, bumped by every write (deletes too).
- PUT whose ``resourceVersion`` is not the stored one: 409 Conflict.
- PUT without ``resourceVersion``: a ConfigMap is updated unconditionally; a Lease is refused,
  422 "must be specified for an update" (Leases do not ``AllowUnconditionalUpdate``).
- PUT of a missing object: a ConfigMap answers 404; a Lease is created, 201 (Leases
  ``AllowCreateOnUpdate``). But a ``metadata.uid`` in a PUT's body is a precondition: another or no
  stored uid is 409 Conflict, so replacing an object deleted since it was read is refused.
- POST of a name that exists: 409 AlreadyExists; POST carrying a ``resourceVersion``: 500, the
  storage layer's refusal.
- A body the server cannot decode into its Go type (a wrong JSON type, a MicroTime without exactly
  six fractional digits, bad base64) is 400 BadRequest "... cannot be handled as a Lease"; a
  decoded value it refuses (``leaseDurationSeconds`` <= 0, an invalid name, ConfigMap data over
  1 MiB) is 422 Invalid with ``details.causes``.
- name or namespace in the body other than the URL's: 400 BadRequest.
- A missing or wrong bearer token: 401 Unauthorized.
- MicroTimes are answered in UTC with a ``Z``, whatever offset they were sent with.
- An Event created through events.k8s.io/v1 meets the strict rules of ``ValidateEventCreate``
  (pkg/apis/core/validation/events.go), else 422 Invalid naming each field: ``eventTime``,
  ``reportingController`` (a qualified name), ``reportingInstance``, ``action`` and ``reason``
  required (the last three at most 128 characters), ``type`` Normal or Warning, ``note`` at most
  1 kB, and ``regarding.namespace`` the Event's own (reported as ``involvedObject.namespace``, the
  internal type's name for it).

Not modelled: PATCH, LIST and WATCH; namespaces (all exist); RBAC; managedFields; the syntax of
labels, annotations and ConfigMap keys; immutable ConfigMaps; delete preconditions; fields other
than those rotator uses (they are dropped, as the server drops unknown fields).

Layout: ``_Store`` decides every answer in plain synchronous code under one lock, so tests can read
state from their own thread; ``KubeAPIServer`` runs the aiohttp front end on a private event loop in
a background thread and adds the fault controls (``stall``, ``fail_next``, ``delay``) and the
request log.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import functools
import json
import os
import re
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml
from aiohttp import web

__all__ = ["CONFIGMAP", "EVENT", "LEASE", "KubeAPIServer", "RequestRecord"]

JSON = dict[str, Any]
RequestRecord = tuple[float, str, str, int]  # (time.monotonic() at arrival, method, path, status)

# ConfigMap data and binaryData together (core.MaxSecretSize, pkg/apis/core/validation).
MAX_CONFIGMAP_BYTES = 1024 * 1024
# The largest request body the API server reads (its --max-request-bytes default, 3 MiB).
MAX_REQUEST_BYTES = 3 * 1024 * 1024
# The optimistic-lock message every kubectl user has seen (apiserver registry Store).
OPTIMISTIC_LOCK_MESSAGE = (
    "the object has been modified; please apply your changes to the latest version and try again"
)
# metav1.MicroTime's only accepted layout (Go's RFC3339Micro): exactly six fractional digits.
MICRO_TIME_LAYOUT = "2006-01-02T15:04:05.000000Z07:00"
_MICRO_TIME = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6})(Z|[+-]\d{2}:\d{2})")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS1123_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.',"
    " and must start and end with an alphanumeric character (e.g. 'example.com', regex used for"
    " validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_INT32 = range(-(2**31), 2**31)
_B64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
# The reason the API gives with each status code (apimachinery's NewGenericServerResponse).
_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


@dataclass(frozen=True)
class Kind:
    """What differs between the two served kinds: names, and the two strategy switches."""

    kind: str
    api_version: str
    group: str  # "" for the core group
    resource: str
    create_on_update: bool
    unconditional_update: bool

    @property
    def qualified_resource(self) -> str:
        """``leases.coordination.k8s.io``, ``configmaps``: how NotFound and Conflict name it."""
        return f"{self.resource}.{self.group}" if self.group else self.resource

    @property
    def qualified_kind(self) -> str:
        """``Lease.coordination.k8s.io``, ``ConfigMap``: how validation failures name it."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    def details(self, name: str, kind: str | None = None) -> JSON:
        """A Status's ``details``, in the order the API writes them (name, group, kind)."""
        out: JSON = {"name": name}
        if self.group:
            out["group"] = self.group
        out["kind"] = kind or self.resource
        return out


LEASE = Kind("Lease", "coordination.k8s.io/v1", "coordination.k8s.io", "leases", True, False)
CONFIGMAP = Kind("ConfigMap", "v1", "", "configmaps", False, True)
EVENT = Kind("Event", "events.k8s.io/v1", "events.k8s.io", "events", False, True)
_ROUTES = (
    (re.compile(r"/apis/events\.k8s\.io/v1/namespaces/([^/]+)/events(?:/([^/]+))?"), EVENT),
    (re.compile(r"/apis/coordination\.k8s\.io/v1/namespaces/([^/]+)/leases(?:/([^/]+))?"), LEASE),
    (re.compile(r"/api/v1/namespaces/([^/]+)/configmaps(?:/([^/]+))?"), CONFIGMAP),
)


@dataclass(frozen=True)
class Reply:
    status: int
    body: JSON
    headers: dict[str, str] = field(default_factory=dict)


def status_body(code: int, message: str, details: JSON | None = None, reason: str | None = None) -> JSON:
    """A failure Status, keys in the API's order."""
    body: JSON = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure"}
    body["message"] = message
    body["reason"] = reason if reason is not None else _REASONS.get(code, "")
    if not body["reason"]:
        del body["reason"]  # an unknown reason is omitted, as Go's omitempty does
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


def failure(code: int, message: str, details: JSON | None = None, reason: str | None = None) -> Reply:
    return Reply(code, status_body(code, message, details, reason))


class _Undecodable(Exception):
    """The body cannot be decoded into the kind's Go type: the API answers 400."""


@dataclass(frozen=True)
class _FieldError:
    reason: str  # FieldValueInvalid, FieldValueRequired, FieldValueTooLong
    field: str
    message: str  # the cause's message: "Invalid value: 0: must be greater than 0"


def _invalid(kind: Kind, name: str, errors: list[_FieldError], details_kind: str | None = None) -> Reply:
    """422 Invalid, worded as apimachinery's NewInvalid: one error bare, several in brackets."""
    parts = [f"{error.field}: {error.message}" for error in errors]
    joined = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    if details_kind is None:
        qualified = kind.qualified_kind
    else:  # the registry names the kind by its resource here (GroupKind{group, resource})
        qualified = f"{details_kind}.{kind.group}" if kind.group else details_kind
    details = kind.details(name, details_kind or kind.kind)
    details["causes"] = [{"reason": e.reason, "message": e.message, "field": e.field} for e in errors]
    return failure(422, f'{qualified} "{name}" is invalid: {joined}', details)


# --------------------------------------------------------------------------- decoding


def _json_type(value: Any) -> str:
    """How Go's encoding/json names a JSON value in an UnmarshalTypeError."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _wrong_type(value: Any, go_field: str, go_type: str) -> _Undecodable:
    # A number that does not fit the integer type is named with its literal ("number 1.5").
    what = f"number {value}" if go_type == "int32" and _json_type(value) == "number" else _json_type(value)
    return _Undecodable(f"json: cannot unmarshal {what} into Go struct field {go_field} of type {go_type}")


def _string(value: Any, go_field: str) -> str:
    if not isinstance(value, str):
        raise _wrong_type(value, go_field, "string")
    return value


def _int32(value: Any, go_field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value not in _INT32:
        raise _wrong_type(value, go_field, "int32")
    return value


def _string_map(value: Any, go_field: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _wrong_type(value, go_field, "map[string]string")
    return {key: _string(item, go_field) for key, item in value.items()}


def _micro_time(value: Any) -> str:
    """A MicroTime as the API stores it (UTC, ``Z``), or the refusal MicroTime.UnmarshalJSON gives."""
    if not isinstance(value, str):
        raise _Undecodable(f"json: cannot unmarshal {_json_type(value)} into Go value of type string")
    match = _MICRO_TIME.fullmatch(value)
    try:
        if match is None:
            raise ValueError(value)
        moment = datetime.fromisoformat(match[1] + match[2].replace("Z", "+00:00"))
    except ValueError:
        raise _Undecodable(f'parsing time "{value}" as "{MICRO_TIME_LAYOUT}"') from None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _base64(value: Any, go_field: str) -> bytes:
    """binaryData's []byte: standard base64 with padding; Go skips CR and LF."""
    text = _string(value, go_field).replace("\r", "").replace("\n", "")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        bad = next((i for i, char in enumerate(text) if char not in _B64_ALPHABET), len(text))
        raise _Undecodable(f"illegal base64 data at input byte {bad}") from None


def _decode(kind: Kind, raw: bytes) -> JSON:
    """The body as the API decodes it into its Go type: known fields kept, unknown ones dropped."""
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _Undecodable(f"couldn't get version/kind; json parse error: {exc}") from None
    if not isinstance(doc, dict):
        raise _Undecodable(f"couldn't get version/kind; json parse error: expected an object, got {doc!r}")
    meta_in = doc.get("metadata") or {}
    if not isinstance(meta_in, dict):
        raise _wrong_type(meta_in, f"{kind.kind}.metadata", "v1.ObjectMeta")
    meta: JSON = {}
    for key in ("name", "namespace", "uid", "resourceVersion"):
        if meta_in.get(key) is not None:
            meta[key] = _string(meta_in[key], f"ObjectMeta.metadata.{key}")
    for key in ("labels", "annotations"):
        if meta_in.get(key) is not None:
            meta[key] = _string_map(meta_in[key], f"ObjectMeta.metadata.{key}")
    obj: JSON = {"metadata": meta}
    if kind is LEASE:
        spec_in = doc.get("spec") or {}
        if not isinstance(spec_in, dict):
            raise _wrong_type(spec_in, "Lease.spec", "v1.LeaseSpec")
        spec: JSON = {}
        decoders: dict[str, Callable[[Any], Any]] = {
            "holderIdentity": lambda v: _string(v, "LeaseSpec.spec.holderIdentity"),
            "leaseDurationSeconds": lambda v: _int32(v, "LeaseSpec.spec.leaseDurationSeconds"),
            "acquireTime": _micro_time,
            "renewTime": _micro_time,
            "leaseTransitions": lambda v: _int32(v, "LeaseSpec.spec.leaseTransitions"),
        }
        for key, decode in decoders.items():  # the Go struct's order, which is the answer's order
            if spec_in.get(key) is not None:
                spec[key] = decode(spec_in[key])
        obj["spec"] = spec
    elif kind is EVENT:
        for key in ("reportingController", "reportingInstance", "action", "reason", "note", "type"):
            if doc.get(key) is not None:
                obj[key] = _string(doc[key], f"Event.{key}")
        if doc.get("eventTime") is not None:
            obj["eventTime"] = _micro_time(doc["eventTime"])
        for key in ("regarding", "related"):
            if doc.get(key) is not None:
                ref = doc[key]
                if not isinstance(ref, dict):
                    raise _wrong_type(ref, f"Event.{key}", "v1.ObjectReference")
                fields = ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")
                obj[key] = {k: _string(ref[k], f"ObjectReference.{key}.{k}") for k in fields if ref.get(k)}
    else:
        if doc.get("data") is not None:
            obj["data"] = _string_map(doc["data"], "ConfigMap.data")
        if doc.get("binaryData") is not None:
            if not isinstance(doc["binaryData"], dict):
                raise _wrong_type(doc["binaryData"], "ConfigMap.binaryData", "map[string][]uint8")
            # Stored re-encoded, as the API answers: canonical base64 of the decoded bytes.
            obj["binaryData"] = {
                key: base64.b64encode(_base64(value, "ConfigMap.binaryData")).decode("ascii")
                for key, value in doc["binaryData"].items()
            }
    return obj


def _validate(kind: Kind, obj: JSON) -> list[_FieldError]:
    """The checks of ValidateLease / ValidateConfigMap that a rotator bug could trip."""
    errors: list[_FieldError] = []
    name = obj["metadata"].get("name", "")
    if not name:
        errors.append(
            _FieldError(
                "FieldValueRequired", "metadata.name", "Required value: name or generateName is required"
            )
        )
    elif len(name) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(name):
        message = f'Invalid value: "{name}": {_DNS1123_MESSAGE}'
        errors.append(_FieldError("FieldValueInvalid", "metadata.name", message))
    if kind is EVENT:
        errors += _event_errors(obj)
    elif kind is LEASE:
        spec = obj["spec"]
        duration = spec.get("leaseDurationSeconds")
        if duration is not None and duration <= 0:
            message = f"Invalid value: {duration}: must be greater than 0"
            errors.append(_FieldError("FieldValueInvalid", "spec.leaseDurationSeconds", message))
        transitions = spec.get("leaseTransitions")
        if transitions is not None and transitions < 0:
            message = f"Invalid value: {transitions}: must be greater than or equal to 0"
            errors.append(_FieldError("FieldValueInvalid", "spec.leaseTransitions", message))
    else:
        size = sum(len(value.encode("utf-8")) for value in obj.get("data", {}).values())
        size += sum(len(base64.b64decode(value)) for value in obj.get("binaryData", {}).values())
        if size > MAX_CONFIGMAP_BYTES:
            # The path "" prints as "[]" (field.NewPath("").String()), hence the odd field name.
            message = f"Too long: may not be more than {MAX_CONFIGMAP_BYTES} bytes"
            errors.append(_FieldError("FieldValueTooLong", "[]", message))
    return errors


# events.k8s.io/v1's limits (pkg/apis/core/validation/events.go).
_EVENT_FIELD_LIMIT = 128
_NOTE_LIMIT = 1024
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]{0,61}[A-Za-z0-9]|[A-Za-z0-9])")


def _event_errors(obj: JSON) -> list[_FieldError]:
    """ValidateEventCreate's strict rules for an Event created through events.k8s.io/v1."""
    errors: list[_FieldError] = []
    namespace = obj["metadata"].get("namespace", "")
    regarding = obj.get("regarding", {})
    if regarding.get("namespace", "") != namespace and namespace not in ("default", "kube-system"):
        message = f'Invalid value: "{regarding.get("namespace", "")}": does not match event.namespace'
        errors.append(_FieldError("FieldValueInvalid", "involvedObject.namespace", message))
    if "eventTime" not in obj:
        errors.append(_FieldError("FieldValueRequired", "eventTime", "Required value"))
    if obj.get("type") not in ("Normal", "Warning"):
        message = f'Invalid value: "": has invalid value: {obj.get("type", "")}'
        errors.append(_FieldError("FieldValueInvalid", "type", message))
    controller = obj.get("reportingController", "")
    if not controller:
        errors.append(_FieldError("FieldValueRequired", "reportingController", "Required value"))
    else:
        prefix, _, name = controller.rpartition("/")
        if not _QUALIFIED_NAME.fullmatch(name) or (prefix and not _DNS1123_SUBDOMAIN.fullmatch(prefix)):
            message = f'Invalid value: "{controller}": name part must consist of alphanumeric characters'
            errors.append(_FieldError("FieldValueInvalid", "reportingController", message))
    for key in ("reportingInstance", "action", "reason"):
        value = obj.get(key, "")
        if not value:
            errors.append(_FieldError("FieldValueRequired", key, "Required value"))
        elif len(value) > _EVENT_FIELD_LIMIT:
            message = f'Invalid value: "": can have at most {_EVENT_FIELD_LIMIT} characters'
            errors.append(_FieldError("FieldValueInvalid", key, message))
    if len(obj.get("note", "")) > _NOTE_LIMIT:
        message = f'Invalid value: "": can have at most {_NOTE_LIMIT} characters'
        errors.append(_FieldError("FieldValueInvalid", "note", message))
    return errors


# --------------------------------------------------------------------------- the store


class _Store:
    """Every object and the resourceVersion counter; decides each answer, synchronously."""

    def __init__(self, now: Callable[[], datetime]) -> None:
        self._now = now
        self._objects: dict[tuple[Kind, str, str], JSON] = {}
        self._version = 0

    def get(self, kind: Kind, namespace: str, name: str) -> JSON | None:
        obj = self._objects.get((kind, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def all(self, kind: Kind, namespace: str) -> list[JSON]:
        found = [obj for (k, ns, _), obj in self._objects.items() if k is kind and ns == namespace]
        return copy.deepcopy(sorted(found, key=lambda obj: int(obj["metadata"]["resourceVersion"])))

    def handle(self, method: str, kind: Kind, namespace: str, name: str | None, body: bytes) -> Reply:
        if name is None:  # the collection: POST only (the router made sure)
            return self._create(kind, namespace, body)
        key = (kind, namespace, name)
        if method == "GET":
            obj = self._objects.get(key)
            return Reply(200, copy.deepcopy(obj)) if obj is not None else self._not_found(kind, name)
        if method == "DELETE":
            return self._delete(kind, key)
        return self._replace(kind, key, body)

    def _create(self, kind: Kind, namespace: str, body: bytes) -> Reply:
        try:
            obj = _decode(kind, body)
        except _Undecodable as exc:
            return self._undecodable(kind, exc)
        meta = obj["metadata"]
        if meta.setdefault("namespace", namespace) != namespace:
            return failure(
                400, "the namespace of the provided object does not match the namespace sent on the request"
            )
        name = meta.get("name", "")
        if errors := _validate(kind, obj):
            return _invalid(kind, name, errors)
        if meta.get("resourceVersion"):
            return failure(500, "resourceVersion should not be set on objects to be created", reason="")
        key = (kind, namespace, name)
        if key in self._objects:
            return failure(
                409, f'{kind.qualified_resource} "{name}" already exists', kind.details(name), "AlreadyExists"
            )
        return Reply(201, self._store(kind, key, obj, uid=str(uuid.uuid4()), created=self._timestamp()))

    def _replace(self, kind: Kind, key: tuple[Kind, str, str], body: bytes) -> Reply:
        _, namespace, name = key
        try:
            obj = _decode(kind, body)
        except _Undecodable as exc:
            return self._undecodable(kind, exc)
        meta = obj["metadata"]
        if (sent_name := meta.get("name", "")) != name:
            return failure(
                400, f"the name of the object ({sent_name}) does not match the name on the URL ({name})"
            )
        if meta.setdefault("namespace", namespace) != namespace:
            sent = meta["namespace"]
            message = f"the namespace of the object ({sent}) does not match the namespace on the request"
            return failure(400, f"{message} ({namespace})")
        existing = self._objects.get(key)
        # A uid in the body is a precondition, checked before anything else touches storage: an
        # object deleted (and perhaps re-created) since it was read is a conflict, not a 404.
        stored_uid = existing["metadata"]["uid"] if existing is not None else ""
        if (sent_uid := meta.get("uid")) and sent_uid != stored_uid:
            return self._uid_conflict(kind, namespace, name, sent_uid, stored_uid)
        sent_version = meta.get("resourceVersion", "")
        if existing is None:
            if not kind.create_on_update:
                return self._not_found(kind, name)
            # Created as by POST; a resourceVersion sent with it is dropped, as the registry's
            # create-on-update path drops it.
            if errors := _validate(kind, obj):
                return _invalid(kind, name, errors)
            return Reply(201, self._store(kind, key, obj, uid=str(uuid.uuid4()), created=self._timestamp()))
        if not sent_version and not kind.unconditional_update:
            message = "Invalid value: 0: must be specified for an update"
            return _invalid(
                kind,
                name,
                [_FieldError("FieldValueInvalid", "metadata.resourceVersion", message)],
                kind.resource,
            )
        if sent_version and sent_version != existing["metadata"]["resourceVersion"]:
            resource = kind.qualified_resource
            message = f'Operation cannot be fulfilled on {resource} "{name}": {OPTIMISTIC_LOCK_MESSAGE}'
            return failure(409, message, kind.details(name))
        if errors := _validate(kind, obj):
            return _invalid(kind, name, errors)
        old = existing["metadata"]
        return Reply(200, self._store(kind, key, obj, uid=old["uid"], created=old["creationTimestamp"]))

    @staticmethod
    def _uid_conflict(kind: Kind, namespace: str, name: str, sent: str, stored: str) -> Reply:
        """The storage layer's failed precondition, worded as the apiserver passes it on."""
        failed = f"Precondition failed: UID in precondition: {sent}, UID in object meta: {stored}"
        storage = f"StorageError: invalid object, Code: 4, Key: /registry/{kind.resource}/{namespace}/{name}"
        message = f"{storage}, ResourceVersion: 0, AdditionalErrorMsg: {failed}"
        resource = kind.qualified_resource
        return failure(
            409, f'Operation cannot be fulfilled on {resource} "{name}": {message}', kind.details(name)
        )

    def _delete(self, kind: Kind, key: tuple[Kind, str, str]) -> Reply:
        obj = self._objects.pop(key, None)
        if obj is None:
            return self._not_found(kind, key[2])
        self._version += 1
        details = kind.details(key[2])
        details["uid"] = obj["metadata"]["uid"]
        return Reply(
            200,
            {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details},
        )

    def _store(
        self, kind: Kind, key: tuple[Kind, str, str], decoded: JSON, *, uid: str, created: str
    ) -> JSON:
        """Keep ``decoded`` under ``key`` with the server's metadata; return the answer's copy."""
        self._version += 1
        sent = decoded["metadata"]
        meta: JSON = {"name": key[2], "namespace": key[1], "uid": uid, "resourceVersion": str(self._version)}
        meta["creationTimestamp"] = created
        meta.update({k: sent[k] for k in ("labels", "annotations") if k in sent})
        obj: JSON = {"kind": kind.kind, "apiVersion": kind.api_version, "metadata": meta}
        obj.update({k: v for k, v in decoded.items() if k != "metadata"})
        self._objects[key] = obj
        return copy.deepcopy(obj)

    def _timestamp(self) -> str:
        return self._now().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    @staticmethod
    def _not_found(kind: Kind, name: str) -> Reply:
        return failure(404, f'{kind.qualified_resource} "{name}" not found', kind.details(name))

    @staticmethod
    def _undecodable(kind: Kind, exc: _Undecodable) -> Reply:
        version = kind.api_version.rpartition("/")[2]
        return failure(400, f'{kind.kind} in version "{version}" cannot be handled as a {kind.kind}: {exc}')


# --------------------------------------------------------------------------- the server


class KubeAPIServer:
    """The stand-in, served on loopback from a background thread; a context manager.

    ``with KubeAPIServer() as kube: kube.write_kubeconfig(tmp_path / "kubeconfig")``

    Every control is thread-safe and takes effect for the next request that arrives.
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        delay: float = 0.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._token = token or secrets.token_urlsafe(16)
        self._lock = threading.Lock()
        self._store = _Store(now)
        self._requests: list[RequestRecord] = []
        self._failures: deque[int] = deque()
        self._delay = delay
        self._stalled = False
        self._stopping = False
        self._held: list[asyncio.Future[None]] = []
        self._url: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # ----------------------------------------------------------------- what tests read

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("KubeAPIServer is not started")
        return self._url

    @property
    def token(self) -> str:
        return self._token

    def write_kubeconfig(self, path: Path | str, namespace: str = "rotator") -> Path:
        """A kubeconfig whose current context is this server, this token and ``namespace``.

        Written 0600: it holds the token, and kubectl warns about group-readable kubeconfigs.
        """
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kubeapi-stand-in", "cluster": {"server": self.url}}],
            "users": [{"name": "rotator", "user": {"token": self._token}}],
            "contexts": [
                {
                    "name": "kubeapi-stand-in",
                    "context": {"cluster": "kubeapi-stand-in", "user": "rotator", "namespace": namespace},
                }
            ],
            "current-context": "kubeapi-stand-in",
        }
        path = Path(path)
        with os.fdopen(
            os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8"
        ) as f:
            f.write(yaml.safe_dump(config, sort_keys=False))
        return path

    def lease(self, namespace: str, name: str) -> JSON | None:
        """The stored Lease as GET would answer it, or None."""
        with self._lock:
            return self._store.get(LEASE, namespace, name)

    def configmap(self, namespace: str, name: str) -> JSON | None:
        """The stored ConfigMap as GET would answer it, or None."""
        with self._lock:
            return self._store.get(CONFIGMAP, namespace, name)

    def events(self, namespace: str) -> list[JSON]:
        """Every stored Event of ``namespace``, in the order created."""
        with self._lock:
            return self._store.all(EVENT, namespace)

    @property
    def requests(self) -> list[RequestRecord]:
        """Every answered request: (monotonic time it arrived, method, path, status), in answer order.

        A request still held by ``stall`` is not in it yet.
        """
        with self._lock:
            return list(self._requests)

    # ----------------------------------------------------------------- fault controls

    def stall(self) -> None:
        """Accept requests but answer none until ``unstall``: an API server that stopped responding."""
        with self._lock:
            self._stalled = True

    def unstall(self) -> None:
        """Let the held requests proceed (each is then decided as if it had just arrived)."""
        with self._lock:
            self._stalled = False
            held, self._held = self._held, []
        if self._loop is not None:
            for waiter in held:
                self._loop.call_soon_threadsafe(_wake, waiter)

    def fail_next(self, n: int, status: int) -> None:
        """The next ``n`` requests, whatever they are, get ``status`` with a Status body and no effect.

        Calls queue up: ``fail_next(1, 503); fail_next(1, 500)`` fails one with each, in that order.
        """
        if n < 1:
            raise ValueError(f"fail_next: n must be at least 1, got {n}")
        if not 400 <= status <= 599:
            raise ValueError(f"fail_next: status must be an HTTP error (400-599), got {status}")
        with self._lock:
            self._failures.extend([status] * n)

    @property
    def delay(self) -> float:
        """Seconds every request waits before it is decided (network plus server latency)."""
        with self._lock:
            return self._delay

    @delay.setter
    def delay(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"delay must be non-negative seconds, got {seconds}")
        with self._lock:
            self._delay = seconds

    # ----------------------------------------------------------------- serving

    def _decide(self, method: str, path: str, authorization: str | None, body: bytes | None) -> Reply:
        """The answer, in the order a real server's filters give them; ``body`` None: too large."""
        with self._lock:
            if self._failures:
                code = self._failures.popleft()
                headers = {"Retry-After": "1"} if code == 429 else {}
                return Reply(
                    code, status_body(code, f"{_REASONS.get(code, 'error')} (injected by the test)"), headers
                )
            if not secrets.compare_digest(authorization or "", f"Bearer {self._token}"):
                return failure(401, "Unauthorized")
            if body is None:
                return failure(413, f"Request entity too large: limit is {MAX_REQUEST_BYTES}")
            for pattern, kind in _ROUTES:
                if match := pattern.fullmatch(path):
                    namespace, name = match[1], match[2]
                    allowed = {"GET", "PUT", "DELETE"} if name is not None else {"POST"}
                    if method not in allowed:
                        return failure(
                            405, "the server does not allow this method on the requested resource", {}
                        )
                    return self._store.handle(method, kind, namespace, name, body)
            return failure(404, "the server could not find the requested resource", {})

    async def _hold(self) -> bool:
        """Wait while stalled; False when the server stops meanwhile (the request is then dropped)."""
        assert self._loop is not None
        with self._lock:
            if not self._stalled:
                return not self._stopping
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._held.append(waiter)
        await waiter
        return not self._stopping

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            body = None  # refused by _decide, after the fault controls and the token check
        if not await self._hold():
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=204)  # never sent: the transport is closed
        if delay := self.delay:
            await asyncio.sleep(delay)
        reply = self._decide(request.method, request.path, request.headers.get("Authorization"), body)
        with self._lock:
            self._requests.append((arrived, request.method, request.path, reply.status))
        return web.json_response(reply.body, status=reply.status, headers=reply.headers, dumps=_compact)

    async def _release_held(self, _app: web.Application) -> None:
        with self._lock:
            self._stopping = True
            held, self._held = self._held, []
        for waiter in held:
            _wake(waiter)

    async def _start(self) -> None:
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.on_shutdown.append(self._release_held)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            # Loopback only: the stand-in accepts a token in clear text over plain http.
            await web.TCPSite(runner, "127.0.0.1", 0).start()
        except BaseException:
            await runner.cleanup()
            raise
        host, port = runner.addresses[0][:2]
        self._runner, self._url = runner, f"http://{host}:{port}"

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            try:
                loop.run_until_complete(self._start())
            except BaseException as exc:
                self._error = exc
                return
            finally:
                self._ready.set()
            loop.run_forever()
            assert self._runner is not None
            loop.run_until_complete(self._runner.cleanup())
            # Connection handlers the cleanup left (an idle keep-alive): end them before closing.
            if leftover := asyncio.all_tasks(loop):
                for task in leftover:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
        finally:
            loop.close()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="kubeapi-stand-in", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise RuntimeError("KubeAPIServer failed to start") from self._error

    def stop(self) -> None:
        """Stop serving; requests still held by ``stall`` are dropped without an answer."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


_compact = functools.partial(json.dumps, separators=(",", ":"))  # the API's own JSON has no spaces


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
