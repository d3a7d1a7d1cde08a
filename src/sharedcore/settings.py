"""A settings field and its reason, declared together as dataclass field metadata.

As Hugging Face's argument dataclasses keep each field's help in `field(metadata=...)`, a preset
field keeps why its value was chosen: `max_length: int = setting(256, "why")` is
`field(default=256, metadata={"why": "why"})`. `presets NAME` prints these reasons; nothing parses source.
A field that holds settings of its own (a preset's `loop`) may give reasons for the values its
default sets: `setting(LoopConfig(epochs=10), "why loop", epochs="why 10 epochs")`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["WHY", "WHY_FIELDS", "field_reasons", "setting"]

WHY = "why"                # metadata key: why the field's default is what it is
WHY_FIELDS = "why_fields"  # metadata key of a nested-settings field: {its field: why this default sets that value}


def setting(default: Any, why: str, **why_fields: str) -> Any:
    """A dataclass field with `default` and its reason; `why_fields` explain the values a nested default sets."""
    metadata: dict[str, Any] = {WHY: why}
    if why_fields:
        metadata[WHY_FIELDS] = dict(why_fields)
    return dataclasses.field(default=default, metadata=metadata)


def field_reasons(cls: type) -> dict[str, str]:
    """Field -> reason of the dataclass `cls`; a nested default's reasons as dotted keys (`loop.epochs`)."""
    reasons: dict[str, str] = {}
    for f in dataclasses.fields(cls):
        reasons[f.name] = f.metadata.get(WHY, "")
        reasons.update({f"{f.name}.{key}": why for key, why in f.metadata.get(WHY_FIELDS, {}).items()})
    return reasons
