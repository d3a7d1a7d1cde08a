"""Preset overrides (`--set key=value`), shared by smartprice and mu so that neither imports the other.

Torch-free on purpose: `smartprice`'s CPU path and `mu --help` parse `--set` without loading torch.
A preset is a frozen dataclass; an override is `dataclasses.replace` with the string converted to
the field's type, and an unknown key is an error that lists the valid ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from .errors import SettingError

__all__ = ["apply_overrides", "convert_value", "parse_sets"]


def parse_sets(pairs: Sequence[str]) -> dict[str, str]:
    """`["epochs=3", "lr=1e-4"]` -> {"epochs": "3", "lr": "1e-4"}; types are checked by the preset."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SettingError(f"--set {pair!r}: expected key=value")
        overrides[key.strip()] = value.strip()
    return overrides


def convert_value(value: Any, target: Any, key: str) -> Any:
    """Convert a `--set` string to the field's type (bools accept true/false/1/0/yes/no)."""
    if not isinstance(value, str) or target is str:
        return value
    try:
        if target is bool:
            lowered = value.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise SettingError(value)
            return lowered in ("true", "1", "yes")
        if target is int:
            return int(value)
        if target is float:
            return float(value)
        if target is tuple:  # "384,192" -> (384, 192); numbers keep their type, words stay strings
            return tuple(_number_or_word(x.strip()) for x in value.split(",") if x.strip())
    except ValueError:
        raise SettingError(f"--set {key}={value}: expected a {target.__name__}") from None
    return value


def apply_overrides(preset: Any, overrides: Mapping[str, Any] | None, label: str,
                    fixed: Collection[str] = ("kind",)) -> Any:
    """`dataclasses.replace` with type conversion of strings; unknown keys raise SettingError.

    `fixed` names fields that select a preset's family (smartprice's `kind`): changing one would
    mix one family's values with another's code, so it is refused with a pointer to the presets.
    """
    overrides = dict(overrides or {})
    fields = {f.name for f in dataclasses.fields(preset)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise SettingError(f"unknown preset field(s) {', '.join(unknown)} for {label}; valid fields: {', '.join(sorted(fields))}")
    for name in fixed:
        if name in overrides:
            raise SettingError(f"'{name}' is fixed by the preset; choose another preset instead")
    converted = {k: convert_value(v, type(getattr(preset, k)), k) for k, v in overrides.items()}
    return dataclasses.replace(preset, **converted)


def _number_or_word(text: str) -> int | float | str:
    """'384' -> 384, '0.1' -> 0.1, 'name' -> 'name' (a tuple field may hold numbers or names)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
