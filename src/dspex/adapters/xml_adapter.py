"""``XMLAdapter``: fields wrapped in ``<name>...</name>`` tags (DSPy 3.4.1's format, byte for byte).

Structured outputs (lists, dicts, TypedDicts, pydantic models) are written and read as nested
XML: list items as ``<item>``, dict keys as child tags (or ``<entry key="...">`` when a key is
not a valid tag). Text outputs escape ``&`` and ``<``. Parsing walks the elements with the
field's JSON schema as a guide, then validates the value like the other adapters.
"""

from __future__ import annotations

import types
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Union, get_args, get_origin
from xml.sax.saxutils import quoteattr

import pydantic
from typing_extensions import is_typeddict

from dspex.adapters.chat import ChatAdapter
from dspex.adapters.values import (
    _type_adapter,
    apply_output_field_defaults,
    format_field_value,
    parse_error,
    parse_value,
    serialize_for_json,
    sign_parse_error,
    translate_field_type,
)
from dspex.errors import AdapterParseError
from dspex.signatures.field import FieldInfo

__all__ = ["XMLAdapter"]

_Schema = dict[str, Any]


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;")


def _is_output(info: FieldInfo) -> bool:
    return (info.json_schema_extra or {}).get("__dspy_field_type") == "output"


@lru_cache(maxsize=512)
def _cached_schema(annotation: Any) -> _Schema:
    schema: _Schema = _type_adapter(annotation).json_schema(by_alias=False)
    return schema


def _schema(annotation: Any) -> _Schema:
    """The field type's JSON schema (cached; never mutated by the readers below)."""
    try:
        return _cached_schema(annotation)
    except TypeError:  # an unhashable annotation
        schema: _Schema = _type_adapter(annotation).json_schema(by_alias=False)
        return schema


class XMLAdapter(ChatAdapter):
    """Inputs and outputs as XML elements named after the fields; falls back to JSONAdapter."""

    # ------------------------------------------------------------------ rendering
    def format_field_with_value(self, fields_with_values: Mapping[Any, Any]) -> str:
        """Each ``(name, info) -> value`` as an element (``FieldInfoWithName`` keys)."""
        return self._render(
            (key.name, key.info, value) for key, value in fields_with_values.items()
        )

    def _render(self, items: Any) -> str:
        out = []
        for name, info, value in items:
            if _is_output(info) and self._uses_nested_xml(info.annotation):
                serialized = serialize_for_json(value)
                if isinstance(serialized, dict | list):
                    out.append(self._value_to_xml(serialized, name))
                    continue
            text = format_field_value(info, value)
            if _is_output(info) and info.annotation is str:
                text = _escape(text)
            out.append(f"<{name}>\n{text}\n</{name}>")
        return "\n\n".join(out).strip()

    def format_field_structure(self, signature: Any) -> str:
        def one(name: str, info: FieldInfo) -> str:
            if _is_output(info) and self._uses_nested_xml(info.annotation):
                return self._xml_schema(name, info.annotation)
            return self._render([(name, info, translate_field_type(name, info))])

        groups = (
            "\n\n".join(one(n, f) for n, f in group.items())
            for group in (signature._input_fields, signature._output_fields)
        )
        return "\n\n".join(
            (
                "All interactions will be structured in the following way, with the appropriate values filled in.",
                *groups,
            )
        )

    def format_user_message_content(
        self,
        signature: Any,
        inputs: Mapping[str, Any],
        prefix: str = "",
        suffix: str = "",
        main_request: bool = False,
    ) -> str:
        body = self._render(
            (n, f, inputs[n]) for n, f in signature._input_fields.items() if n in inputs
        )
        parts = [prefix, body]
        if main_request:
            parts.append(self.user_message_output_requirements(signature))
        return "\n\n".join((*parts, suffix)).strip()

    def format_assistant_message_content(
        self, signature: Any, outputs: Mapping[str, Any], missing_field_message: str | None = None
    ) -> str:
        return self._render(
            (n, f, outputs.get(n, missing_field_message))
            for n, f in signature._output_fields.items()
        )

    def user_message_output_requirements(self, signature: Any) -> str:
        key = "xml.requirements"
        cached: str | None = signature._cache.get(key)
        if cached is None:
            tags = ", then ".join(f"`<{name}>`" for name in signature._output_fields)
            schemas = [
                self._xml_schema(name, f.annotation)
                for name, f in signature._output_fields.items()
                if self._uses_nested_xml(f.annotation)
            ]
            cached = f"Respond with the corresponding output fields wrapped in XML tags {tags}."
            if schemas:
                cached += f" Use this nested XML structure: {' '.join(schemas)}"
            signature._cache[key] = cached
        return cached

    # ------------------------------------------------------------------ parsing
    def parse(self, signature: Any, completion: str) -> dict[str, Any]:
        try:
            return self._parse(signature, completion)
        except AdapterParseError as exc:
            sign_parse_error(exc, signature)
            raise

    def _parse(self, signature: Any, completion: str) -> dict[str, Any]:
        outputs: Mapping[str, FieldInfo] = signature._output_fields
        try:
            root = ET.fromstring(f"<dspy_root>{completion}</dspy_root>")
        except ET.ParseError as exc:
            raise parse_error(
                "XMLAdapter", completion, outputs, message=f"Failed to parse XML: {exc}"
            ) from exc
        elements = self._group_children(root)
        fields: dict[str, Any] = {}
        for name, info in outputs.items():
            if name in elements:
                fields[name] = self._field_value(info, elements[name], completion, outputs)
        fields = apply_output_field_defaults(outputs, fields)
        if fields.keys() != outputs.keys():
            raise parse_error("XMLAdapter", completion, outputs, fields)
        return fields

    def _field_value(
        self,
        info: FieldInfo,
        found: list[ET.Element],
        completion: str,
        outputs: Mapping[str, FieldInfo],
    ) -> Any:
        annotation = info.annotation
        schema = _schema(annotation)
        definitions = schema.get("$defs", {})
        value: Any = None
        error: Exception | None = None
        for candidate in [schema, *schema.get("anyOf", [])]:
            try:
                value = self._elements_to_value(found, candidate, definitions)
                try:
                    return parse_value(value, annotation)
                except pydantic.ValidationError:
                    return _type_adapter(annotation).validate_python(value, by_name=True)
            except ValueError as exc:
                error = exc
        raise parse_error(
            "XMLAdapter",
            completion,
            outputs,
            message=f"Failed to parse field {info} with value {value}: {error}",
        ) from error

    # ------------------------------------------------------------------ XML <-> values
    @classmethod
    def _value_to_xml(cls, value: Any, tag: str, key: str | None = None) -> str:
        attrs = f" key={quoteattr(key)}" if key is not None else ""
        if isinstance(value, list):
            children = "".join(cls._value_to_xml(item, "item") for item in value)
            return f"<{tag}{attrs}>{children}</{tag}>" if children else f"<{tag}{attrs} />"
        if isinstance(value, dict):
            parts = []
            for child_name, child in value.items():
                child_name = str(child_name)
                tail = child_name[1:].replace("-", "_").replace(".", "_")
                if (child_name[:1] + tail).isidentifier():
                    parts.append(cls._value_to_xml(child, child_name))
                else:
                    parts.append(cls._value_to_xml(child, "entry", child_name))
            return f"<{tag}{attrs}>{''.join(parts)}</{tag}>"
        if value is None:
            return f"<{tag}{attrs} />"
        return f"<{tag}{attrs}>{_escape(str(value))}</{tag}>"

    @classmethod
    def _xml_schema(cls, tag: str, annotation: Any) -> str:
        schema = _schema(annotation)
        return cls._schema_to_xml(tag, schema, schema.get("$defs", {}), frozenset())

    @classmethod
    def _schema_to_xml(
        cls, tag: str, schema: _Schema, definitions: _Schema, seen: frozenset[str]
    ) -> str:
        ref = schema.get("$ref")
        if ref:
            name = ref.rsplit("/", 1)[-1]
            if name in seen:  # recursive model: stop here
                return f"<{tag}>...</{tag}>"
            return cls._schema_to_xml(tag, definitions[name], definitions, seen | {name})
        choices = schema.get("anyOf")
        if choices:
            first = next((s for s in choices if s.get("type") != "null"), choices[0])
            return cls._schema_to_xml(tag, first, definitions, seen)
        if schema.get("type") == "array":
            item = cls._schema_to_xml("item", schema.get("items", {}), definitions, seen)
            return f"<{tag}>{item}</{tag}>"
        children = "".join(
            cls._schema_to_xml(name, child, definitions, seen)
            for name, child in schema.get("properties", {}).items()
        )
        return f"<{tag}>{children}</{tag}>" if children else f"<{tag}>...</{tag}>"

    @classmethod
    def _elements_to_value(
        cls, elements: list[ET.Element], schema: _Schema, definitions: _Schema
    ) -> Any:
        schema = definitions.get(schema.get("$ref", "").rsplit("/", 1)[-1], schema)
        choices = schema.get("anyOf")
        if choices:
            first = elements[0]
            if {"type": "null"} in choices and not list(first) and not (first.text or "").strip():
                return None
            choices = [c for c in choices if c.get("type") != "null"]
            schema = choices[0]
            if list(first):
                schema = next((c for c in choices if c.get("type") != "string"), schema)
        if schema.get("type") == "array":
            if len(elements) == 1 and not list(elements[0]):
                text = (elements[0].text or "").strip()
                if not text:
                    return []
                if text.startswith("["):
                    return text  # a JSON list written as text: parse_value reads it
            if len(elements) == 1:
                items = cls._group_children(elements[0]).get("item")
                if items:
                    elements = items
            item_schema = schema.get("items", {})
            return [cls._elements_to_value([e], item_schema, definitions) for e in elements]
        element = elements[0]
        if schema.get("type") == "string" and list(element):
            inner = "".join(ET.tostring(child, encoding="unicode") for child in element)
            return (element.text or "") + inner
        children = cls._group_children(element)
        if not children:
            if schema.get("type") == "object" and not (element.text or "").strip():
                return {}
            texts = [(e.text or "").strip() for e in elements]
            return texts[0] if len(texts) == 1 else texts
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", {})
        if not isinstance(extra, dict):
            extra = {}
        return {
            name: cls._elements_to_value(items, properties.get(name, extra), definitions)
            for name, items in children.items()
        }

    @staticmethod
    def _group_children(element: ET.Element) -> dict[str, list[ET.Element]]:
        children: dict[str, list[ET.Element]] = defaultdict(list)
        for child in element:
            key = child.attrib.get("key", child.tag) if child.tag == "entry" else child.tag
            children[key].append(child)
        return children

    @staticmethod
    def _uses_nested_xml(annotation: Any) -> bool:
        """Whether an output of this type is written as nested XML (not as JSON text)."""
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1 and get_origin(annotation) in (Union, types.UnionType):
            annotation = args[0]
        origin = get_origin(annotation)
        item = get_args(annotation)[0] if origin is list and get_args(annotation) else annotation
        # the library's own types (Image, ToolCalls, ...) keep their own text format
        library_model = (
            isinstance(item, type)
            and issubclass(item, pydantic.BaseModel)
            and item.__module__.startswith(("dspy.", "dspex."))
        )
        return not library_model and (
            origin in (list, dict)
            or is_typeddict(annotation)
            or (isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel))
        )
