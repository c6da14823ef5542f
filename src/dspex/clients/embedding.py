"""``dspex.Embedder``: text embeddings from a hosted model or any callable, as numpy arrays.

DSPy 3.4.1's ``dspy.Embedder`` has the same arguments: ``model`` is a model string
(``"openai/text-embedding-3-small"``; a bare name means ``openai/``) or a callable
``list[str] -> vectors``; inputs go out in batches of ``batch_size``; results are cached
(``caching=True``) in the LM response cache (memory, then disk under ``settings.cache_dir``),
keyed by the model, the batch and the options, never by credentials. A hosted model is called
natively over DSPEx's HTTP transport (the OpenAI ``/embeddings`` API, which every
OpenAI-compatible server speaks) with the LM's retry, deadline and circuit-breaker rules; DSPy
goes through litellm instead, so a test that patches ``litellm.embedding`` sees no call here.

The sync and async calls share every decision (:func:`_plan`); they differ only in how a
batch's HTTP request is sent. numpy is needed for the results (``pip install numpy``).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Generator, Sequence
from typing import Any

import orjson

from dspex.errors import CallError, ConfigurationError, LMConfigurationError
from dspex.lm.cache import active, request_blob
from dspex.lm.flow import Attempts, ErrorMap, Outcome, adrive, attempt_flow, drive
from dspex.lm.providers import Endpoint, resolve
from dspex.lm.resilience import RetryPolicy, breaker_for
from dspex.lm.transport import DEFAULT_MAX_BODY, Response, Target
from dspex.lm.wire import HTTPTransport

__all__ = ["Embedder"]

#: options that choose the endpoint or the call's rules, never sent in the body or cached on
_CLIENT_OPTIONS = ("api_base", "base_url", "api_key", "timeout", "num_retries")
_SECRET_OPTIONS = ("api_key", "api_base", "base_url")  # never part of a cache key (as DSPy)

Rows = list[list[float]]


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:
        raise ConfigurationError(
            "dspex.Embedder returns numpy arrays: install numpy (pip install numpy)"
        ) from None
    return numpy


def _callable_key(model: Callable[..., Any]) -> str:
    """A stable cache identity for an embedding callable: where it is defined and its source
    (an instance of a class: the class), so two different embedders do not share results."""
    owner: Any = model
    if not (inspect.isfunction(model) or inspect.ismethod(model)) and not hasattr(
        model, "__qualname__"
    ):
        owner = type(model)
    name = f"{getattr(owner, '__module__', '?')}.{getattr(owner, '__qualname__', '?')}"
    try:
        source = inspect.getsource(owner)
    except (OSError, TypeError):
        source = ""
    return f"callable:{name}:{source}"


class _Hosted:
    """One hosted embedding model: its endpoint, the call rules and the transport."""

    def __init__(self, model: str, options: dict[str, Any]) -> None:
        full = model if "/" in model else f"openai/{model}"
        self.endpoint: Endpoint = resolve(
            full, options.get("api_base") or options.get("base_url"), options.get("api_key")
        )
        if self.endpoint.problem is not None:
            raise LMConfigurationError(
                f"cannot embed with {model!r}: {self.endpoint.problem}", model=model
            )
        if self.endpoint.wire != "openai":
            raise ConfigurationError(
                f"{self.endpoint.provider}/ has no embeddings API; use an OpenAI-compatible "
                "model (openai/..., hosted_vllm/..., ollama/...) or a callable"
            )
        self.timeout = float(options.get("timeout") or 60.0)
        retries = options.get("num_retries")
        self.retries = 3 if retries is None else int(retries)
        url = self.endpoint.api_base.rstrip("/") + "/embeddings"
        try:
            self.target = Target(url, self.endpoint.headers())
        except ValueError:
            raise ConfigurationError(
                f"api_base must be an http(s) URL, got {self.endpoint.display_base!r}"
            ) from None
        self.rules = Attempts(
            self.retries,
            RetryPolicy(),
            breaker_for(url, 5, 30.0),
            ErrorMap(self.endpoint, self.endpoint.model, self.timeout),
        )
        self.transport = HTTPTransport(max_response_bytes=DEFAULT_MAX_BODY)

    def request(
        self, batch: list[str], body_options: dict[str, Any]
    ) -> tuple[bytes, float, Generator[float | None, Outcome, tuple[Rows, Response, int]]]:
        body = {"model": self.endpoint.model, "input": batch, **body_options}
        message = self.target.post(orjson.dumps(body))
        deadline = time.monotonic() + self.timeout
        return message, deadline, attempt_flow(self.rules, deadline, self._accept(len(batch)))

    def _accept(self, count: int) -> Callable[[Response], Rows]:
        def accept(response: Response) -> Rows:
            try:
                data = orjson.loads(response.body)["data"]
                ordered = sorted(data, key=lambda item: int(item.get("index", 0)))
                rows = [[float(x) for x in item["embedding"]] for item in ordered]
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
                raise self.rules.errors.malformed(e) from None
            if len(rows) != count:
                raise self.rules.errors.malformed(
                    ValueError(f"{len(rows)} embeddings for {count} inputs")
                )
            return rows

        return accept


class _Fetch:
    """A request for one batch's embeddings over HTTP (what :func:`_plan` asks its driver)."""

    __slots__ = ("batch", "options")

    def __init__(self, batch: list[str], options: dict[str, Any]) -> None:
        self.batch = batch
        self.options = options


class Embedder:
    """``Embedder(model, batch_size=200, caching=True, **kwargs)(inputs)`` -> numpy array.

    ``inputs`` is a string (a 1-D vector back) or a list of strings (one row each). ``kwargs``
    given here are defaults for every call; a call may override them and ``batch_size`` /
    ``caching``. For a hosted model, ``api_base``, ``api_key``, ``timeout`` and
    ``num_retries`` configure the client and other options (``dimensions``...) go in the
    request; for a callable they are passed to it.
    """

    def __init__(
        self,
        model: str | Callable[..., Any],
        batch_size: int = 200,
        caching: bool = True,
        **kwargs: Any,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigurationError(f"batch_size must be a positive int, got {batch_size!r}")
        self.model = model
        self.batch_size = batch_size
        self.caching = caching
        self.default_kwargs = kwargs
        self._hosted: _Hosted | None = None

    def __repr__(self) -> str:
        model = self.model if isinstance(self.model, str) else _name(self.model)
        return f"Embedder({model!r}, batch_size={self.batch_size})"

    # ------------------------------------------------------------------ calls
    def __call__(
        self,
        inputs: str | Sequence[str],
        batch_size: int | None = None,
        caching: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        plan = _plan(self, inputs, batch_size, caching, kwargs)
        try:
            fetch = next(plan)
            while True:
                fetch = plan.send(self._fetch_sync(fetch))
        except StopIteration as done:
            return done.value

    async def acall(
        self,
        inputs: str | Sequence[str],
        batch_size: int | None = None,
        caching: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        plan = _plan(self, inputs, batch_size, caching, kwargs)
        try:
            fetch = next(plan)
            while True:
                fetch = plan.send(await self._fetch_async(fetch))
        except StopIteration as done:
            return done.value

    def _client(self) -> _Hosted:
        if self._hosted is None:
            assert isinstance(self.model, str)
            self._hosted = _Hosted(self.model, self.default_kwargs)
        return self._hosted

    def _fetch_sync(self, fetch: _Fetch) -> Rows:
        client = self._client()
        message, deadline, flow = client.request(fetch.batch, fetch.options)
        rows, _, _ = drive(flow, lambda: client.transport.request(client.target, message, deadline))
        return rows

    async def _fetch_async(self, fetch: _Fetch) -> Rows:
        client = self._client()
        message, deadline, flow = client.request(fetch.batch, fetch.options)
        rows, _, _ = await adrive(
            flow, lambda: client.transport.arequest(client.target, message, deadline)
        )
        return rows

    def close(self) -> None:
        """Close the idle connections of a hosted model's sync calls."""
        if self._hosted is not None:
            self._hosted.transport.close()


def _name(model: Any) -> str:
    return str(getattr(model, "__qualname__", type(model).__qualname__))


def _plan(
    embedder: Embedder,
    inputs: str | Sequence[str],
    batch_size: int | None,
    caching: bool | None,
    kwargs: dict[str, Any],
) -> Generator[_Fetch, Rows, Any]:
    """Everything a call decides, with no I/O: batches, cache lookups and writes, the callable
    calls, the result array. Yields a :class:`_Fetch` when a batch needs the hosted model."""
    np = _numpy()
    model = embedder.model
    if not isinstance(model, str) and not callable(model):
        raise ConfigurationError(
            f"Embedder model must be a model string or a callable, got {type(model).__name__}"
        )
    single = isinstance(inputs, str)
    texts = [inputs] if isinstance(inputs, str) else list(inputs)
    if not all(isinstance(t, str) for t in texts):
        raise CallError("Embedder inputs must be a string or a list of strings")
    size = batch_size or embedder.batch_size
    use_cache = embedder.caching if caching is None else caching
    options = {**embedder.default_kwargs, **kwargs}
    hosted = isinstance(model, str)
    body_options = (
        {k: v for k, v in options.items() if k not in _CLIENT_OPTIONS} if hosted else options
    )
    identity = model if isinstance(model, str) else _callable_key(model)
    cache = active() if use_cache else None
    rows: list[Any] = []
    for start in range(0, len(texts), size):
        batch = texts[start : start + size]
        blob = b""
        if cache is not None:
            keyed = {k: v for k, v in options.items() if k not in _SECRET_OPTIONS}
            blob = request_blob({"embedder": identity, "input": batch, "options": keyed})
            hit = cache.lookup(blob)
            if hit is not None:
                rows.extend(orjson.loads(hit[0][0]))
                continue
        if hosted:
            got: Any = yield _Fetch(batch, body_options)
        else:
            assert callable(model)
            got = model(batch, **options)
        found = np.asarray(got, dtype=np.float32)
        if found.ndim != 2 or found.shape[0] != len(batch):
            raise CallError(
                f"the embedder returned shape {found.shape} for a batch of {len(batch)} inputs"
            )
        if cache is not None:
            cache.save(blob, [orjson.dumps(found.tolist()).decode()], {})
        rows.extend(found.tolist())
    embeddings = np.array(rows, dtype=np.float32)
    return embeddings[0] if single else embeddings
