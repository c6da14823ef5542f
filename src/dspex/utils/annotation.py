"""``@experimental``: marks an API as experimental in its docstring (DSPy's decorator)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

__all__ = ["experimental"]

T = TypeVar("T")


@overload
def experimental(api: T, version: str | None = None) -> T: ...
@overload
def experimental(api: None = None, version: str | None = None) -> Callable[[T], T]: ...
def experimental(api: Any = None, version: str | None = None) -> Any:
    """Use as ``@experimental`` or ``@experimental(version="3.0")``; the object is unchanged
    except for a note at the top of its docstring."""

    def mark(obj: Any) -> Any:
        since = f" (introduced in v{version})" if version else ""
        note = (
            f"Experimental: This {'class' if isinstance(obj, type) else 'function'} may change "
            f"or be removed in a future release without warning{since}."
        )
        obj.__doc__ = f"{note}\n\n{obj.__doc__}" if obj.__doc__ else note
        return obj

    return mark if api is None else mark(api)
