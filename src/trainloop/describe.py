"""Describe presets for `smartprice presets` and `mu presets`, from the preset table's own source.

The table stays the single source: values are read from the preset objects,
and the reason for each value is the trailing comment on its line, read with `tokenize` from the
module that defines the table:

- a field's reason is the comment on its line in the dataclass (`max_length: int = 256  # why`);
  settings nested in a field (`loop: LoopConfig = LoopConfig(epochs=10,  # why`) are rows of their
  own (`loop.epochs`), their reasons from that line, else from the nested class;
- where a named preset changes a field (`"minilm": FusionPreset(..., loss="l1",  # why`), the
  comment on that line is the reason for that preset's value;
- a comment on a one-line entry, or comment lines just above an entry, are notes on the preset.

A table module may define `PRESET_SUMMARIES = {name: (purpose, rough cost)}` beside its table;
a preset missing there falls back to its notes, then to its dataclass' docstring.
Shared by `smartprice presets` and `mu presets`; torch-free, so the smartprice table is described
on a base install.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import textwrap
import tokenize
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from .errors import SettingError
from .overrides import nested_settings

NEEDS_BASE = "base install"
NEEDS_NN = "nn extra"


@dataclass(frozen=True)
class TableNotes:
    """What the source of a preset table says about one named preset."""

    notes: tuple[str, ...] = ()                           # comments on the preset as a whole
    fields: dict[str, str] = field(default_factory=dict)  # field -> comment on the line that sets it


def _comments(source: str) -> dict[int, tuple[str, bool]]:
    """Line number -> (comment text without '#', whether code precedes it on that line).

    A trailing comment continued on the comment-only lines below it, starting in the same column,
    is returned whole on its first line; the continuation lines are left out.
    """
    found: dict[int, tuple[str, bool]] = {}
    head = last = column_of_head = None  # the trailing comment being continued: its line, last line, column
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type != tokenize.COMMENT:
            continue
        (line, column), text = token.start, token.string.lstrip("#").strip()
        trailing = bool(token.line[:column].strip())
        if not trailing and head is not None and last == line - 1 and column == column_of_head:
            found[head] = (f"{found[head][0]} {text}", True)
            last = line
            continue
        found[line] = (text, trailing)
        head, last, column_of_head = (line, line, column) if trailing else (None, None, None)
    return found


def field_reasons(cls: type) -> dict[str, str]:
    """Field -> trailing comment of its line in the dataclass `cls` (and its dataclass bases).

    A field whose default is a call spread over lines (`loop: LoopConfig = LoopConfig(epochs=10,  # why`)
    also gives `loop.epochs` the comment on the line of that keyword.
    """
    reasons: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass is object:
            continue
        source = textwrap.dedent(inspect.getsource(klass))
        comments = _comments(source)
        class_node = ast.parse(source).body[0]
        for node in getattr(class_node, "body", []):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                name = node.target.id
                line = node.lineno if isinstance(node.value, ast.Call) else node.end_lineno or node.lineno
                text, trailing = comments.get(line, ("", False))
                reasons[name] = text if trailing else ""
                for keyword in node.value.keywords if isinstance(node.value, ast.Call) else []:
                    text, trailing = comments.get(keyword.value.end_lineno or keyword.value.lineno, ("", False))
                    if trailing and keyword.arg:
                        reasons[f"{name}.{keyword.arg}"] = text
    return reasons


def table_notes(module: ModuleType, table: str = "PRESETS") -> dict[str, TableNotes]:
    """Preset name -> the comments of its entry in the dict literal `table` of `module`'s source."""
    source = inspect.getsource(module)
    comments = _comments(source)
    entries = None
    for node in ast.parse(source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == table for t in targets) and isinstance(node.value, ast.Dict):
            entries = node.value
    if entries is None:
        return {}
    notes: dict[str, TableNotes] = {}
    previous_end = entries.lineno
    for key, value in zip(entries.keys, entries.values):
        if not isinstance(key, ast.Constant) or not isinstance(key.value, str):
            continue
        above = []  # comment-only lines directly above the entry, up to the previous entry
        line = key.lineno - 1
        while line > previous_end and line in comments and not comments[line][1]:
            above.insert(0, comments[line][0])
            line -= 1
        whole, fields = list(above), {}
        keywords = [(k.arg, k) for k in value.keywords if k.arg] if isinstance(value, ast.Call) else []
        keywords += [(f"{name}.{k.arg}", k) for name, outer in list(keywords) if isinstance(outer.value, ast.Call)
                     for k in outer.value.keywords if k.arg]  # nested settings: `loop=LoopConfig(epochs=20,  # why`
        for line in range(key.lineno, (value.end_lineno or value.lineno) + 1):
            text, trailing = comments.get(line, ("", False))
            if not trailing:
                continue
            ending_here = [name for name, k in keywords if (k.value.end_lineno or k.value.lineno) == line]
            if value.lineno == value.end_lineno or not ending_here:
                whole.append(text)  # a one-line entry's comment speaks for the whole preset
            else:
                fields[ending_here[-1]] = text
        notes[key.value] = TableNotes(tuple(whole), fields)
        previous_end = value.end_lineno or value.lineno
    return notes


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


def _docline(cls: type) -> str:
    return (inspect.getdoc(cls) or "").split("\n")[0].strip()


def summary_rows(module: ModuleType, needs: Callable[[Any], str], default: str | None = None) -> list[list[str]]:
    """One row per preset of `module.PRESETS`: name, kind, purpose, needs, rough cost."""
    presets: Mapping[str, Any] = module.PRESETS
    summaries: Mapping[str, tuple[str, str]] = getattr(module, "PRESET_SUMMARIES", {})
    notes = table_notes(module)
    rows = []
    for name, preset in presets.items():
        purpose, cost = summaries.get(name, ("", ""))
        purpose = purpose or " ".join(notes.get(name, TableNotes()).notes) or _docline(type(preset))
        label = f"{name} (default)" if name == default else name
        rows.append([label, str(getattr(preset, "kind", "-")), purpose, needs(preset), cost or "not measured"])
    return rows


def describe_fields(module: ModuleType, name: str) -> list[list[str]]:
    """[field, value, reason] for every field of preset `name` of `module.PRESETS`.

    A value equal to the dataclass default gets the class comment; a value the preset sets gets
    the comment on its line in the table, else the default and the class comment for context.
    """
    preset = module.PRESETS[name]
    return _field_rows(preset, type(preset)(), field_reasons(type(preset)),
                       table_notes(module).get(name, TableNotes()).fields, "")


def _field_rows(preset: Any, defaults: Any, reasons: Mapping[str, str], set_here: Mapping[str, str],
                prefix: str) -> list[list[str]]:
    """[field, value, reason] rows of `preset` against the class defaults; nested settings as `loop.FIELD` rows."""
    rows = []
    nested = nested_settings(preset)
    for f in dataclasses.fields(preset):
        key, value, default = prefix + f.name, getattr(preset, f.name), getattr(defaults, f.name)
        if f.name in nested:
            own = {f"{key}.{k}": v for k, v in field_reasons(type(value)).items()}
            rows += _field_rows(value, default, {**own, **reasons}, set_here, f"{key}.")
            continue
        reason = reasons.get(key, "")
        if key in set_here:  # the preset's own line says why, even where it repeats the default
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
    label, kind, purpose, needed, cost = summary_rows(module, needs)[list(presets).index(name)]
    lines = [f"{name}: {purpose}"]
    if hasattr(preset, "kind"):
        lines.append(f"kind: {kind}")
    lines += [f"needs: {needed}", f"rough cost: {cost}"]
    lines += [f"note: {note}" for note in table_notes(module).get(name, TableNotes()).notes if note not in purpose]
    lines += ["", render_table(["field", "value", "reason"], describe_fields(module, name)), ""]
    lines.append(f"override with `{command} train ... --preset {name} --set FIELD=VALUE` (unknown fields are an error)")
    for name in nested_settings(preset):
        lines.append(f"its {name} settings: `--set {name}.FIELD=VALUE`, e.g. "
                     f"--set {name}.{dataclasses.fields(getattr(preset, name))[0].name}=VALUE")
    inner = [f.name[: -len("_preset")] for f in dataclasses.fields(preset) if f.name.endswith("_preset")]
    for prefix in inner:
        target = getattr(preset, f"{prefix}_preset")
        lines.append(f"its {prefix} preset ({target}): `--set {prefix}.FIELD=VALUE`; "
                     f"see `{command} presets {target}`")
    return "\n".join(lines)

