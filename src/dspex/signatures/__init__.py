"""Signatures: typed inputs/outputs and instructions for an LM task (DSPy-compatible)."""

from dspex.signatures.field import UNDEFINED, FieldInfo, InputField, OutputField, is_undefined
from dspex.signatures.signature import (
    Signature,
    SignatureMeta,
    ensure_signature,
    infer_prefix,
    make_signature,
)

__all__ = [
    "UNDEFINED",
    "FieldInfo",
    "InputField",
    "OutputField",
    "Signature",
    "SignatureMeta",
    "ensure_signature",
    "infer_prefix",
    "is_undefined",
    "make_signature",
]
