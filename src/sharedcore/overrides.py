"""Preset overrides (`--set key=value`), shared by smartprice and mu so that neither imports the other.

Torch-free on purpose: `smartprice`'s CPU path and `mu --help` parse `--set` without loading torch.
A preset is a frozen dataclass; an override is `dataclasses.replace` with the string converted to
the field's type, and an unknown key is an error that lists the valid ones. Settings nested in a
preset (the training loop's, `loop`) take dotted keys: `--set loop.epochs=3`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from .errors import SettingError

__all__ = ["apply_overrides", "convert_value", "get_field", "nested_settings", "parse_sets", "setting_names"]


def parse_sets(pairs: Sequence[str]) -> dict[str, str]:
    """`["epochs=3", "lr=1e-4"]` -> {"epochs": "3", "lr": "1e-4"}; types are checked by the preset."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SettingError(f"--set {pair!r}: expected key=value")
        overrides[key.strip()] = value.strip()
    return overrides


KINDS_OF_VALUE = {bool: "true or false", int: "a whole number", float: "a number",
                  tuple: "a comma-separated list (384,192)"}  # what a `--set` value must look like, for messages


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
        raise SettingError(f"--set {key}={value}: expected {KINDS_OF_VALUE[target]}") from None
    return value


def apply_overrides(preset: Any, overrides: Mapping[str, Any] | None, label: str,
                    fixed: Collection[str] = ("kind",), prefix: str = "") -> Any:
    """`dataclasses.replace` with type conversion of strings; unknown keys raise SettingError.

    A field that holds settings of its own (a preset's `loop`) is reached with dotted keys
    (`loop.epochs`), or given whole: a mapping of its fields, or an instance of its class.
    `fixed` names fields that select a preset's family (smartprice's `kind`): changing one would
    mix one family's values with another's code, so it is refused with a pointer to the presets.
    `prefix` is how the user reaches this preset's keys (a blend's `fusion.`), for the messages.
    """
    return _apply(preset, dict(overrides or {}), label, fixed, prefix)


def get_field(preset: Any, key: str) -> Any:
    """The value of `key` in a preset, dotted keys reaching into nested settings (`loop.epochs`)."""
    for part in key.split("."):
        preset = getattr(preset, part)
    return preset


def setting_names(preset: Any, prefix: str = "") -> list[str]:
    """Every key `--set` accepts for a preset, nested settings as dotted keys (`loop.epochs`)."""
    nested = nested_settings(preset)
    names = []
    for f in dataclasses.fields(preset):
        value = getattr(preset, f.name)
        names += setting_names(value, f"{prefix}{f.name}.") if f.name in nested else [f"{prefix}{f.name}"]
    return names


def nested_settings(preset: Any) -> list[str]:
    """The fields of `preset` that hold a settings dataclass of their own (a neural preset's `loop`)."""
    return [f.name for f in dataclasses.fields(preset)
            if dataclasses.is_dataclass(getattr(preset, f.name)) and not isinstance(getattr(preset, f.name), type)]


def _apply(preset: Any, overrides: dict[str, Any], label: str, fixed: Collection[str], prefix: str) -> Any:
    fields = {f.name for f in dataclasses.fields(preset)}
    nested = nested_settings(preset)
    flat: dict[str, Any] = {}
    inner: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        head, dot, rest = key.partition(".")
        if dot and head in nested:
            inner.setdefault(head, {})[rest] = value
        else:
            flat[key] = value
    unknown = sorted(set(flat) - fields)
    if unknown:
        shown = ", ".join(prefix + key for key in unknown)
        valid = ", ".join(sorted(setting_names(preset, prefix)))
        hint = "".join(f"; {key} is a {name} setting: --set {prefix}{name}.{key}=VALUE"
                       for key in unknown for name in sorted(nested)
                       if key in {f.name for f in dataclasses.fields(getattr(preset, name))})
        raise SettingError(f"unknown preset field(s) {shown} for {label}{hint}; valid fields: {valid}")
    for name in fixed:
        if name in flat:
            raise SettingError(f"'{name}' is fixed by the preset; choose another preset instead")
    converted = {}
    for key, value in flat.items():
        current = getattr(preset, key)
        if key not in nested:
            converted[key] = convert_value(value, type(current), prefix + key)
        elif isinstance(value, Mapping):
            converted[key] = _apply(current, dict(value), label, (), f"{prefix}{key}.")
        elif isinstance(value, type(current)):
            converted[key] = value
        else:
            raise SettingError(f"{prefix}{key}: set its fields one by one, e.g. --set {prefix}{key}."
                               f"{dataclasses.fields(current)[0].name}=VALUE")
    for key, values in inner.items():
        converted[key] = _apply(converted.get(key, getattr(preset, key)), values, label, (), f"{prefix}{key}.")
    return dataclasses.replace(preset, **converted)


def _number_or_word(text: str) -> int | float | str:
    """'384' -> 384, '0.1' -> 0.1, 'name' -> 'name' (a tuple field may hold numbers or names)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
