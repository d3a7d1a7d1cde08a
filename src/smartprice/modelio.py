"""Model directories: a JSON config with a format version, artefacts beside it, atomic writes.

The config also records the smartprice version that wrote it; loading a model written by a newer
version warns (it usually still loads) rather than failing.

A model is written into a fresh temporary directory next to the target and renamed into
place only when complete, so a crash mid-save never destroys the previous model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sharedcore.about import __version__, newer_version_note

from .errors import ModelDirError, UserError  # ModelDirError re-exported: smartprice.modelio.ModelDirError
from .kinds import preset_from_dict

log = logging.getLogger(__name__)
FORMAT_VERSION = 2  # 2: CPU models carry a layout of their own (cpu/model.py); 1 still reads, old CPU models: retrain
READABLE_VERSIONS = (1, 2)
CONFIG_NAME = "config.json"
# What config.json holds, each field's JSON type and how a message names it; missing or of another type = damaged.
FIELDS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "format_version": (int, "a whole number"), "preset": (str, "a preset name"), "config": (dict, "an object"),
    "price_range": (list, "a list of two prices"), "model_state": (dict, "an object"), "files": (dict, "an object")}
OPTIONAL_FIELDS: dict[str, tuple[type | tuple[type, ...], str]] = {  # absent in models written before they existed
    "smartprice_version": (str, "a version string"), "fit_info": (dict, "an object")}


@contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces `target` (old contents removed last)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it private; a model directory should not be
    try:
        yield staging
        backup = None
        if target.exists():
            backup = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, backup)
        os.replace(staging, target)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def file_digest(path: Path) -> str:
    """SHA-256 of a file, read 1 MiB at a time (~1 GB/s: tens of ms for a train.csv model)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_config(directory: Path, config: dict[str, Any]) -> None:
    """Write config.json last, recording every artefact's size and SHA-256 so damage is detected on load."""
    files = {p.relative_to(directory).as_posix(): {"bytes": p.stat().st_size, "sha256": file_digest(p)}
             for p in sorted(directory.rglob("*")) if p.is_file() and p.name != CONFIG_NAME}
    payload = {"format_version": FORMAT_VERSION, "smartprice_version": __version__, **config, "files": files}
    (directory / CONFIG_NAME).write_text(json.dumps(payload, indent=2, sort_keys=True))


def read_config(directory: str | Path) -> dict[str, Any]:
    """Read and check config.json and the artefacts it lists; raise ModelDirError with the reason."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelDirError(f"{directory}: model directory not found")
    path = directory / CONFIG_NAME
    if not path.exists():
        raise ModelDirError(f"{directory}: not a smartprice model (no {CONFIG_NAME}); train one with 'smartprice train'")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelDirError(f"{path}: damaged config ({exc})") from None
    check_fields(config, path)
    newer = newer_version_note(config.get("smartprice_version"), f"model {directory}")  # None in older models
    version = config.get("format_version")
    if version not in READABLE_VERSIONS:
        if newer:
            raise ModelDirError(f"{newer}; its format version {version!r} is not one this smartprice reads")
        raise ModelDirError(
            f"{directory}: model format version {version!r}, this smartprice reads version {FORMAT_VERSION}; "
            "retrain the model with this version"
        )
    for name, recorded in config["files"].items():
        artefact = directory / name
        size, digest = (recorded, None) if isinstance(recorded, int) else (recorded["bytes"], recorded["sha256"])
        if not artefact.exists():
            raise ModelDirError(f"{directory}: incomplete model, {name} is missing")
        if artefact.stat().st_size != size:
            raise ModelDirError(
                f"{directory}: incomplete model, {name} has {artefact.stat().st_size} bytes, expected {size}"
            )
        if digest is not None and file_digest(artefact) != digest:  # format 1 recorded sizes only
            raise ModelDirError(f"{directory}: damaged model, {name} does not match its checksum; "
                                "restore the directory or retrain the model")
    if newer:
        log.warning("%s", newer)
    return config


def check_fields(config: Any, path: Path) -> None:
    """Refuse a config.json whose fields are missing or of the wrong type, in one line naming the file and field.

    The saved preset is rebuilt here too, so a damaged preset field (`config.trees`) is named the same way.
    """
    def damaged(field: str, problem: str) -> ModelDirError:
        return ModelDirError(f"{path}: damaged config, field '{field}' {problem}; restore the directory or retrain the model")

    if not isinstance(config, dict):
        raise damaged("(top level)", f"is {_shown(config)}, expected an object")
    for name, (kind, wanted) in {**FIELDS, **OPTIONAL_FIELDS}.items():
        if name not in config:
            if name in FIELDS:
                raise damaged(name, "is missing")
            continue
        value = config[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise damaged(name, f"is {_shown(value)}, expected {wanted}")
    range_ = config["price_range"]
    if len(range_) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in range_):
        raise damaged("price_range", f"is {_shown(range_)}, expected a list of two prices")
    for name, recorded in config["files"].items():
        if isinstance(recorded, bool) or not (isinstance(recorded, int) or (
                isinstance(recorded, dict) and isinstance(recorded.get("bytes"), int)
                and isinstance(recorded.get("sha256"), str))):
            raise damaged(f"files.{name}", f"is {_shown(recorded)}, expected its size and checksum")
    if "kind" not in config["config"]:
        raise damaged("config.kind", "is missing")
    try:
        preset_from_dict(config["config"])
    except UserError as exc:  # an unknown kind, a field of the wrong type, a value the preset refuses
        raise ModelDirError(f"{path}: damaged config, {exc}; restore the directory or retrain the model") from None


def _shown(value: Any) -> str:
    """A value for a one-line message, cut short when long."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."
