"""The text of `smartprice presets` and `mu presets`, read from the preset tables' own data.

A table module defines `PRESETS = {name: preset}` (frozen dataclasses whose fields carry their
reasons, `sharedcore.settings.setting`) and beside it `PRESET_NOTES = {name: PresetNotes(...)}`:
each preset's purpose, rough cost, and why it sets the values it sets. `presets NAME` prints every
field with its value and reason; settings nested in a field (`loop`) are rows of their own
(`loop.epochs`). Shared by both CLIs; torch-free, so the smartprice table is described on a base install.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from .errors import SettingError
from .overrides import nested_settings
from .settings import field_reasons

__all__ = ["NEEDS_BASE", "NEEDS_NN", "PresetNotes", "describe_fields", "format_value", "render_preset",
           "render_presets", "render_table", "summary_rows"]

NEEDS_BASE = "base install"
NEEDS_NN = "nn extra"


@dataclass(frozen=True)
class PresetNotes:
    """What `presets` says of one named preset beyond its values."""

    purpose: str                                           # one line: what the preset is for
    cost: str = "not measured"                             # rough cost, naming the bench that measures it
    why: Mapping[str, str] = field(default_factory=dict)   # field (`loop.epochs` for nested) -> why this preset's value


def format_value(value: Any) -> str:
    """A value as `--set` spells it: true/false, 384,192 for tuples, strings unquoted."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        if all(isinstance(v, tuple) and len(v) == 2 for v in value) and value:
            return " ".join(f"{k}={format_value(v)}" for k, v in value)  # inner presets' overrides
        return ",".join(format_value(v) for v in value) if value else "(none)"
    if value == "":
        return '""'
    return str(value)


def _notes(module: ModuleType, name: str) -> PresetNotes:
    """The preset's notes; a preset without any is described by its class' docstring."""
    notes: Mapping[str, PresetNotes] = getattr(module, "PRESET_NOTES", {})
    if name in notes:
        return notes[name]
    return PresetNotes((inspect.getdoc(type(module.PRESETS[name])) or "").split("\n")[0].strip())


def summary_rows(module: ModuleType, needs: Callable[[Any], str], default: str | None = None) -> list[list[str]]:
    """One row per preset of `module.PRESETS`: name, kind, purpose, needs, rough cost."""
    rows = []
    for name, preset in module.PRESETS.items():
        notes = _notes(module, name)
        label = f"{name} (default)" if name == default else name
        rows.append([label, str(getattr(preset, "kind", "-")), notes.purpose, needs(preset), notes.cost])
    return rows


def describe_fields(module: ModuleType, name: str) -> list[list[str]]:
    """[field, value, reason] for every field of preset `name` of `module.PRESETS`.

    A value equal to the class default gets the field's reason; a value the preset sets gets the
    preset's own reason for it, else the default and the field's reason for context.
    """
    preset = module.PRESETS[name]
    return _field_rows(preset, type(preset)(), field_reasons(type(preset)), _notes(module, name).why, "")


def _field_rows(preset: Any, defaults: Any, reasons: Mapping[str, str], set_here: Mapping[str, str],
                prefix: str) -> list[list[str]]:
    """[field, value, reason] rows of `preset` against the class defaults; nested settings as `loop.FIELD` rows."""
    rows = []
    nested = nested_settings(preset)
    for f in dataclasses.fields(preset):
        key, value, default = prefix + f.name, getattr(preset, f.name), getattr(defaults, f.name)
        if f.name in nested:
            own = {f"{key}.{k}": v for k, v in field_reasons(type(value)).items()}
            rows += _field_rows(value, default, {**own, **{k: v for k, v in reasons.items() if v}}, set_here, f"{key}.")
            continue
        reason = reasons.get(key, "")
        if key in set_here:  # the preset says why, even where it repeats the default
            reason = set_here[key]
        elif value != default:
            reason = f"set by this preset; default {format_value(default)}" + (f": {reason}" if reason else "")
        rows.append([key, format_value(value), reason or "-"])
    return rows


def render_table(headers: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns separated by two spaces; the last column is not padded."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers) - 1)]
    lines = []
    for row in [headers, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(row, widths)] + [str(row[-1])]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def render_presets(module: ModuleType, needs: Callable[[Any], str], command: str, default: str | None = None,
                   with_kind: bool = True) -> str:
    """The text of `<command> presets`: the table of presets and how to see one of them."""
    headers = ["preset", "kind", "purpose", "needs", "rough cost"]
    rows = summary_rows(module, needs, default)
    if not with_kind:
        headers, rows = headers[:1] + headers[2:], [r[:1] + r[2:] for r in rows]
    # purpose last: it is the long column
    order = [0, *(i for i in range(1, len(headers)) if headers[i] != "purpose"), headers.index("purpose")]
    table = render_table([headers[i] for i in order], [[r[i] for i in order] for r in rows])
    return f"{table}\n\n`{command} presets NAME` shows every field of a preset, its value and why; " \
           f"`--set FIELD=VALUE` overrides one."


def render_preset(module: ModuleType, name: str, needs: Callable[[Any], str], command: str) -> str:
    """The text of `<command> presets NAME`: header lines, then field / value / reason."""
    presets: Mapping[str, Any] = module.PRESETS
    if name not in presets:
        raise SettingError(f"unknown preset {name!r}; choose one of {', '.join(presets)}")
    preset = presets[name]
    notes = _notes(module, name)
    lines = [f"{name}: {notes.purpose}"]
    if hasattr(preset, "kind"):
        lines.append(f"kind: {preset.kind}")
    lines += [f"needs: {needs(preset)}", f"rough cost: {notes.cost}"]
    lines += ["", render_table(["field", "value", "reason"], describe_fields(module, name)), ""]
    lines.append(f"override with `{command} train ... --preset {name} --set FIELD=VALUE` (unknown fields are an error)")
    for nested in nested_settings(preset):
        lines.append(f"its {nested} settings: `--set {nested}.FIELD=VALUE`, e.g. "
                     f"--set {nested}.{dataclasses.fields(getattr(preset, nested))[0].name}=VALUE")
    inner = [f.name[: -len("_preset")] for f in dataclasses.fields(preset) if f.name.endswith("_preset")]
    for prefix in inner:
        target = getattr(preset, f"{prefix}_preset")
        lines.append(f"its {prefix} preset ({target}): `--set {prefix}.FIELD=VALUE`; "
                     f"see `{command} presets {target}`")
    return "\n".join(lines)
