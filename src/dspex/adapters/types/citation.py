"""``Citations`` (an output type) and ``Document`` (an input type): cited sources, as DSPy's.

With Anthropic models the citations come from the provider's native citations feature
(the field is removed from the prompt and read from the response); with other models the
LM writes them as JSON.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import pydantic

from dspex.adapters.types.base_type import Type
from dspex.errors import CustomTypeError

__all__ = ["Citations", "Document"]

# The JSON-schema description DSPy 3.4.1 renders for ``Citations`` into prompts where the LM
# must write citations itself (its class docstring, as pydantic cleans it). Kept as prompt
# text so those prompts stay byte-identical.
_CITATIONS_SCHEMA_DESCRIPTION = 'Experimental: This class may change or be removed in a future release without warning (introduced in v3.0.4).\n\nCitations extracted from an LM response with source references.\n\n    This type represents citations returned by language models that support\n    citation extraction, particularly Anthropic\'s Citations API through LiteLLM.\n    Citations include the quoted text and source information.\n\n    Examples:\n        ```python\n        import os\n        import dspy\n        from dspy.signatures import Signature\n        from dspy.experimental import Citations, Document\n        os.environ["ANTHROPIC_API_KEY"] = "YOUR_ANTHROPIC_API_KEY"\n\n        class AnswerWithSources(Signature):\n            \'\'\'Answer questions using provided documents with citations.\'\'\'\n            documents: list[Document] = dspy.InputField()\n            question: str = dspy.InputField()\n            answer: str = dspy.OutputField()\n            citations: Citations = dspy.OutputField()\n\n        # Create documents to provide as sources\n        docs = [\n            Document(\n                data="The Earth orbits the Sun in an elliptical path.",\n                title="Basic Astronomy Facts"\n            ),\n            Document(\n                data="Water boils at 100°C at standard atmospheric pressure.",\n                title="Physics Fundamentals",\n                metadata={"author": "Dr. Smith", "year": 2023}\n            )\n        ]\n\n        # Use with a model that supports citations like Claude\n        lm = dspy.LM("anthropic/claude-opus-4-1-20250805")\n        predictor = dspy.Predict(AnswerWithSources)\n        result = predictor(documents=docs, question="What temperature does water boil?", lm=lm)\n\n        for citation in result.citations.citations:\n            print(citation.format())\n        ```\n    '


class Citations(Type):
    model_config = pydantic.ConfigDict(
        json_schema_extra={"description": _CITATIONS_SCHEMA_DESCRIPTION}
    )

    class Citation(Type):
        model_config = pydantic.ConfigDict(
            json_schema_extra={
                "description": "Individual citation with character location information."
            }
        )

        type: str = "char_location"
        cited_text: str
        document_index: int
        document_title: str | None = None
        start_char_index: int
        end_char_index: int
        supported_text: str | None = None

        def format(self) -> dict[str, Any]:  # type: ignore[override]
            part: dict[str, Any] = {
                "type": self.type,
                "cited_text": self.cited_text,
                "document_index": self.document_index,
                "start_char_index": self.start_char_index,
                "end_char_index": self.end_char_index,
            }
            if self.document_title:
                part["document_title"] = self.document_title
            if self.supported_text:
                part["supported_text"] = self.supported_text
            return part

    citations: list[Citation]

    @classmethod
    def from_dict_list(cls, citations_dicts: list[dict[str, Any]]) -> Citations:
        return cls(citations=[cls.Citation(**item) for item in citations_dicts])

    @classmethod
    def description(cls) -> str:
        return (
            "Citations with quoted text and source references. "
            "Include the exact text being cited and information about its source."
        )

    def format(self) -> list[dict[str, Any]]:
        return [citation.format() for citation in self.citations]

    @pydantic.model_validator(mode="before")
    @classmethod
    def validate_input(cls, data: Any) -> Any:
        if isinstance(data, cls):
            return data
        if isinstance(data, list) and all(
            isinstance(item, dict) and "cited_text" in item for item in data
        ):
            return {"citations": [cls.Citation(**item) for item in data]}
        if isinstance(data, dict):
            if "citations" in data:
                items = data["citations"]
                if isinstance(items, list):
                    return {
                        "citations": [
                            cls.Citation(**item) if isinstance(item, dict) else item
                            for item in items
                        ]
                    }
            elif "cited_text" in data:
                return {"citations": [cls.Citation(**data)]}
        raise CustomTypeError(f"Received invalid value for `Citations`: {data}")

    def __iter__(self) -> Iterator[Citation]:  # type: ignore[override]
        return iter(self.citations)

    def __len__(self) -> int:
        return len(self.citations)

    def __getitem__(self, index: int) -> Citation:
        return self.citations[index]

    @classmethod
    def adapt_to_native_lm_feature(
        cls, signature: Any, field_name: str, lm: Any, lm_kwargs: dict[str, Any]
    ) -> Any:
        if str(getattr(lm, "model", "")).startswith("anthropic/"):
            return signature.delete(field_name)
        return signature

    @classmethod
    def is_streamable(cls) -> bool:
        return True

    @classmethod
    def parse_stream_chunk(cls, chunk: Any) -> Citations | None:
        try:
            choices = getattr(chunk, "choices", None)
            if choices:
                fields = getattr(choices[0].delta, "provider_specific_fields", None)
                if fields and fields.get("citation"):
                    return cls.from_dict_list([fields["citation"]])
        except Exception:
            pass
        return None

    @classmethod
    def parse_lm_response(cls, response: str | dict[str, Any]) -> Citations | None:
        if isinstance(response, dict) and isinstance(response.get("citations"), list):
            return cls.from_dict_list(response["citations"])
        return None


class Document(Type):
    # (no docstring: pydantic would render it into the JSON schema)
    data: str
    title: str | None = None
    media_type: Literal["text/plain", "application/pdf"] = "text/plain"
    context: str | None = None

    def format(self) -> list[dict[str, Any]]:
        source_type = "base64" if self.media_type == "application/pdf" else "text"
        block: dict[str, Any] = {
            "type": "document",
            "source": {"type": source_type, "media_type": self.media_type, "data": self.data},
            "citations": {"enabled": True},
        }
        if self.title:
            block["title"] = self.title
        if self.context:
            block["context"] = self.context
        return [block]

    @classmethod
    def description(cls) -> str:
        return (
            "A document containing text content that can be referenced and cited. "
            "Include the full text content and optionally a title for proper referencing."
        )

    @pydantic.model_validator(mode="before")
    @classmethod
    def validate_input(cls, data: Any) -> Any:
        if isinstance(data, cls):
            return data
        if isinstance(data, str):
            return {"data": data}
        if isinstance(data, dict):
            return data
        raise CustomTypeError(f"Received invalid value for `Document`: {data}")

    def __str__(self) -> str:
        title = f"'{self.title}': " if self.title else ""
        return f"Document({title}{len(self.data)} chars)"
