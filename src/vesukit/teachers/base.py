"""The torch-free ground floor of ``vesukit.teachers``: the one teacher error and the frozen
JSON helpers that the spec, the registry and the nnU-Net teachers share.

It imports nothing from the rest of the package, so spec -> registry -> nets need no
function-level imports to reach it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from vesukit.errors import VesukitError

# Teacher names name files and report rows.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class TeacherError(VesukitError):
    """A teacher description, manifest, checkpoint or model output is wrong; the message says
    which teacher and why."""


def check_entry_fields(entry: Mapping, known: set[str], required: tuple[str, ...], where: str,
                       kind: str = "") -> str:
    """A manifest entry's field names: no unknown field, every required one present. Returns
    how messages name the teacher ("teacher 'x'"); ``kind`` qualifies an entry's type."""
    name = entry.get("name")
    who = f"teacher '{name}'" if isinstance(name, str) else "teacher"
    of_kind = f" for a {kind} teacher" if kind else ""
    unknown = sorted(set(entry) - known)
    if unknown:
        raise TeacherError(f"{where}: {who}: field '{unknown[0]}': unknown field{of_kind} "
                           f"(known: {', '.join(sorted(known))})")
    missing = [k for k in required if k not in entry]
    if missing:
        raise TeacherError(f"{where}: {who}: field '{missing[0]}': missing{of_kind} (required: "
                           f"{', '.join(required)})")
    return who


def check_object(data: Any, allowed: tuple[str, ...], *, not_object: str,
                 unknown_field: Callable[[str], str]) -> None:
    """``data`` is a JSON object whose fields are all in ``allowed``; else TeacherError with
    ``not_object``, or with ``unknown_field(name)`` of the first unknown field."""
    if not isinstance(data, Mapping):
        raise TeacherError(not_object)
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise TeacherError(unknown_field(unknown[0]))


class FrozenMap(Mapping):
    """A read-only, hashable mapping of JSON values (nested dicts become FrozenMaps,
    lists become tuples) so that a frozen teacher spec stays hashable."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any] | None = None):
        self._data = {str(k): freeze(v) for k, v in (data or {}).items()}

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(json.dumps(thaw(self), sort_keys=True))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and thaw(self) == thaw(other)

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"


def freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return FrozenMap(value)
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Plain dicts and lists again (for JSON and for model constructors)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(v) for v in value]
    return value


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def is_json_value(value: Any) -> bool:
    if value is None or isinstance(value, (str, bool, int)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and is_json_value(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(is_json_value(v) for v in value)
    return False
