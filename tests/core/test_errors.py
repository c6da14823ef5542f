from __future__ import annotations

import pickle

import pytest

from dspex import errors


@pytest.mark.parametrize("name", errors.__all__)
def test_every_error_pickles_with_its_fields(name: str) -> None:
    cls = getattr(errors, name)
    if not isinstance(cls, type):
        return
    err = (
        cls("boom", pid=12, signal=9)
        if cls is not errors.SignatureError
        else cls("bad", source="a ->", position=3, reason="x")
    )
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is cls
    assert str(again) == str(err)
    assert again.fields == err.fields


def test_error_tree_and_builtin_bases() -> None:
    assert issubclass(errors.SignatureError, errors.UserError)
    assert issubclass(errors.SignatureError, ValueError)
    assert issubclass(errors.LMTimeoutError, TimeoutError)
    assert issubclass(errors.ContextWindowExceeded, errors.LMBadRequestError)
    assert issubclass(errors.WorkerCrashed, errors.PoolError)
    err = errors.WorkerCrashed("died", pid=1, signal=9, exitcode=None)
    assert err.pid == 1 and err.signal == 9


def test_retry_predicate() -> None:
    assert errors.is_retryable(errors.LMRateLimitError("slow down", retry_after=1.0))
    assert errors.is_retryable(errors.LMServerError("500"))
    assert not errors.is_retryable(errors.LMAuthError("401"))
    assert not errors.is_retryable(errors.LMBadRequestError("400"))
    assert not errors.is_retryable(ValueError("x"))
