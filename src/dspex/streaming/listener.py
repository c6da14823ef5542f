"""``StreamListener``: which output field of which predictor ``streamify`` streams."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from dspex.errors import CallError

__all__ = ["StreamListener", "find_predictor_for_stream_listeners"]

# How each adapter's text may end a field: the suffixes a partial end marker can have so far,
# and the fragment that, once seen, means a marker may be forming.
_END_MARKERS: dict[str, tuple[tuple[str, ...], str]] = {
    "ChatAdapter": (("[", "[[", "[[ ", "[[ #", "[[ ##"), "[[ ##"),
    "JSONAdapter": (('"', '",', '" ', '"}'), "}"),
    "XMLAdapter": (("<", "</"), "</"),
}


class StreamListener:
    """Stream ``signature_field_name`` of ``predict`` (found by field name when not given)."""

    def __init__(
        self,
        signature_field_name: str,
        predict: Any = None,
        predict_name: str | None = None,
        allow_reuse: bool = False,
    ) -> None:
        self.signature_field_name = signature_field_name
        self.predict = predict
        self.predict_name = predict_name
        self.allow_reuse = allow_reuse
        self.stream_start = False
        self.stream_end = False
        self.cache_hit = False

    def reset(self) -> None:
        self.stream_start = self.stream_end = self.cache_hit = False

    def accepts(self) -> bool:
        """Whether another chunk may be streamed (a finished field streams again only with
        ``allow_reuse``, e.g. a predictor called in a loop)."""
        if self.stream_end and self.allow_reuse:
            self.stream_start = self.stream_end = False
        return not self.stream_end

    def _could_form_end_identifier(self, concat_message: str, adapter_name: str) -> bool:
        """Whether buffered text may still become the end marker of a field in
        ``adapter_name``'s format (text that cannot is safe to send at once)."""
        try:
            suffixes, fragment = _END_MARKERS[adapter_name]
        except KeyError:
            raise CallError(
                f"Unsupported adapter for streaming: {adapter_name}, please use one of the "
                f"following adapters: {', '.join(_END_MARKERS)}"
            ) from None
        return concat_message.endswith(suffixes) or fragment in concat_message

    def __repr__(self) -> str:
        return (
            f"StreamListener(signature_field_name={self.signature_field_name!r}, "
            f"predict_name={self.predict_name!r})"
        )


def find_predictor_for_stream_listeners(
    program: Any, stream_listeners: list[StreamListener]
) -> dict[int, list[StreamListener]]:
    """Bind each listener to its predictor: ``id(predictor) -> listeners``.

    A listener without ``predict`` is bound to the one predictor whose signature has its field;
    a field found in several predictors, or in none, is a :class:`~dspex.errors.CallError`.
    """
    wanted = {x.signature_field_name for x in stream_listeners if x.predict is None}
    found: dict[str, tuple[str, Any]] = {}
    for name, predictor in program.named_predictors():
        for field in predictor.signature.output_fields:
            if field not in wanted:
                continue
            if field in found:
                raise CallError(
                    f"Signature field {field} is not unique in the program, cannot automatically "
                    "determine which predictor to use for streaming. Please specify the predictor "
                    "to listen to."
                )
            found[field] = (name, predictor)
    by_predict: defaultdict[int, list[StreamListener]] = defaultdict(list)
    for listener in stream_listeners:
        if listener.predict is None:
            if listener.signature_field_name not in found:
                raise CallError(
                    f"Signature field {listener.signature_field_name} is not a field of any "
                    "predictor in the program, cannot automatically determine which predictor to "
                    "use for streaming. Please verify your field name or specify the predictor to "
                    "listen to."
                )
            listener.predict_name, listener.predict = found[listener.signature_field_name]
        by_predict[id(listener.predict)].append(listener)
    return dict(by_predict)
