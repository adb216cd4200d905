"""Helpers of the EMULATED Kubernetes API server (an emulation for tests, not Kubernetes).

API errors shaped like the real server's ``Status`` objects, label and field selectors,
CPU quantities, JSON merge patches and timestamps.
"""

from __future__ import annotations

import copy
import datetime
import re
from collections.abc import Mapping
from typing import Any

Obj = dict[str, Any]

# resource plural -> (API group, kind); the group is "" for core/v1
RESOURCES: dict[str, tuple[str, str]] = {
    "jobs": ("batch", "Job"),
    "pods": ("", "Pod"),
    "secrets": ("", "Secret"),
}


class ApiError(Exception):
    """An error the emulated API server answers with a ``Status`` body (not Kubernetes)."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> Obj:
        """The ``Status`` object the real API server sends for this error."""
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def qualified(resource: str) -> str:
    """``jobs.batch`` or ``pods``: how the real server names a resource in messages."""
    group = RESOURCES[resource][0]
    return f"{resource}.{group}" if group else resource


def not_found(resource: str, name: str) -> ApiError:
    """404 NotFound with the real server's wording."""
    group = RESOURCES[resource][0]
    return ApiError(
        404,
        "NotFound",
        f'{qualified(resource)} "{name}" not found',
        {"name": name, "group": group, "kind": resource} if group else {"name": name, "kind": resource},
    )


def already_exists(resource: str, name: str) -> ApiError:
    """409 AlreadyExists with the real server's wording."""
    return ApiError(
        409,
        "AlreadyExists",
        f'{qualified(resource)} "{name}" already exists',
        {"name": name, "group": RESOURCES[resource][0], "kind": resource},
    )


def invalid(resource: str, name: str, field: str, problem: str) -> ApiError:
    """422 Invalid with the real server's wording."""
    group, kind = RESOURCES[resource]
    full_kind = f"{kind}.{group}" if group else kind
    return ApiError(
        422,
        "Invalid",
        f'{full_kind} "{name}" is invalid: {field}: {problem}',
        {"name": name, "group": group, "kind": kind, "causes": [{"field": field, "message": problem}]},
    )


def now() -> str:
    """The current time as the API server writes it (RFC 3339, UTC, whole seconds)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(stamp: str) -> float:
    """Seconds since the epoch of an RFC 3339 timestamp written by :func:`now`."""
    parsed = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")
    return parsed.replace(tzinfo=datetime.UTC).timestamp()


_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def check_name(resource: str, name: str) -> None:
    """Reject names the real server rejects (DNS-1123 subdomain; jobs: 63 characters)."""
    limit = 63 if resource == "jobs" else 253
    if not _NAME.match(name) or len(name) > limit:
        raise invalid(
            resource,
            name,
            "metadata.name",
            f'Invalid value: "{name}": a lowercase RFC 1123 subdomain of at most {limit} '
            "characters must consist of lower case alphanumeric characters, '-' or '.'",
        )


# --- selectors -------------------------------------------------------------------------------

_SET_TERM = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_terms(selector: str) -> list[str]:
    """Split a selector at the commas outside parentheses."""
    terms: list[str] = []
    depth, start = 0, 0
    for index, char in enumerate(selector):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            terms.append(selector[start:index])
            start = index + 1
    terms.append(selector[start:])
    return [term.strip() for term in terms if term.strip()]


def _term_matches(term: str, labels: Mapping[str, str]) -> bool:
    set_term = _SET_TERM.match(term)
    if set_term:
        key, operator, values = set_term.groups()
        wanted = {value.strip() for value in values.split(",") if value.strip()}
        inside = key in labels and labels[key] in wanted
        return inside if operator == "in" else not inside
    for operator in ("!=", "==", "="):
        if operator in term:
            key, value = (part.strip() for part in term.split(operator, 1))
            equal = labels.get(key) == value
            return not equal if operator == "!=" else equal
    if term.startswith("!"):
        return term[1:].strip() not in labels
    return term in labels


def label_selector_matches(selector: str | None, labels: Mapping[str, str] | None) -> bool:
    """True if ``labels`` satisfy a label selector (equality, set and existence terms)."""
    if not selector:
        return True
    return all(_term_matches(term, labels or {}) for term in _split_terms(selector))


def _field(obj: Obj, path: str) -> str | None:
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return None if value is None else str(value)


def field_selector_matches(selector: str | None, obj: Obj) -> bool:
    """True if ``obj`` satisfies a field selector such as ``metadata.name=x,status.phase!=Failed``."""
    if not selector:
        return True
    for term in _split_terms(selector):
        for operator in ("!=", "==", "="):
            if operator in term:
                path, wanted = (part.strip() for part in term.split(operator, 1))
                equal = (_field(obj, path) or "") == wanted
                if equal == (operator == "!="):
                    return False
                break
        else:
            raise ApiError(400, "BadRequest", f'invalid field selector: "{term}"')
    return True


# --- quantities and patches -------------------------------------------------------------------


def cpu_quantity(value: object) -> float:
    """CPUs of a quantity such as ``2``, ``"500m"`` or ``"1.5"``."""
    text = str(value).strip()
    try:
        return float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        raise ApiError(400, "BadRequest", f'quantities must match the regular expression: "{text}"') from None


def merge_patch(target: Obj, patch: Obj) -> Obj:
    """RFC 7386 JSON merge patch (also used, simplified, for strategic merge patches)."""
    result = copy.deepcopy(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge_patch(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def json_patch(target: Obj, operations: list[Any]) -> Obj:
    """RFC 6902 JSON patch: ``add``, ``replace``, ``remove`` and ``test`` operations."""
    result = copy.deepcopy(target)
    for operation in operations:
        op, path = operation.get("op"), str(operation.get("path", ""))
        keys = [part.replace("~1", "/").replace("~0", "~") for part in path.split("/")[1:]]
        if not keys:
            raise ApiError(422, "Invalid", f"the JSON patch path {path!r} is not supported")
        parent: Any = result
        try:
            for key in keys[:-1]:
                parent = parent[int(key)] if isinstance(parent, list) else parent[key]
            last: Any = keys[-1]
            if isinstance(parent, list):
                last = len(parent) if last == "-" else int(last)
            if op == "test":
                if parent[last] != operation.get("value"):
                    raise ApiError(422, "Invalid", f"the JSON patch test at {path!r} failed")
            elif op == "remove":
                del parent[last]
            elif op == "add" and isinstance(parent, list):
                parent.insert(last, copy.deepcopy(operation.get("value")))
            elif op in ("add", "replace"):
                if op == "replace":
                    parent[last]  # replace needs an existing member (KeyError otherwise)
                parent[last] = copy.deepcopy(operation.get("value"))
            else:
                raise ApiError(422, "Invalid", f"the JSON patch operation {op!r} is not supported")
        except (KeyError, IndexError, ValueError, TypeError):
            raise ApiError(422, "Invalid", f"the JSON patch cannot be applied at {path!r}") from None
    return result
