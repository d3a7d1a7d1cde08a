"""What this installation is: its version, and how to add the `nn` extra (shared by smartprice and mu).

Imports nothing heavy (no pandas, no torch), so `smartprice --version`, `mu --version` and
`mu --help` answer without loading a model stack. The version has one source: the `version` of
pyproject.toml, read back from the installed distribution's metadata (the `smartprice`
distribution ships the smartprice, mu, trainloop and sharedcore packages alike).
"""

from __future__ import annotations

import re
from importlib import metadata

from .errors import UserError

DISTRIBUTION = "smartprice"  # the distribution that ships both the smartprice and mu packages
UNKNOWN_VERSION = "0+unknown"  # running from a source tree that was never installed
NN_INSTALL = "pip install torch==2.13.0 && pip install 'smartprice[nn]'"  # torch first: pip then keeps its CPU build
NN_MODULES = ("torch", "transformers", "accelerate", "safetensors", "tokenizers", "tqdm")  # imported by the nn extra
_RELEASE = re.compile(r"\d+(?:\.\d+)*")  # "1.2.3rc1+local" -> "1.2.3", for the fallback comparison


def installed_version() -> str:
    """The installed distribution's version (pyproject's `version`), or "0+unknown" if not installed."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return UNKNOWN_VERSION


__version__ = installed_version()


def is_newer(written: str, running: str = __version__) -> bool:
    """True when version `written` is later than `running`; False when either cannot be compared.

    Uses `packaging` when it is installed (PEP 440 order, pre-releases included), else compares
    the numeric release parts ("0.10.0" > "0.9.1").
    """
    if not written or not running or running == UNKNOWN_VERSION:
        return False
    try:
        from packaging.version import InvalidVersion, Version
    except ImportError:
        return _release(written) > _release(running)
    try:
        return Version(written) > Version(running)
    except InvalidVersion:
        return _release(written) > _release(running)


def _release(version: str) -> tuple[int, ...]:
    """Numeric release parts: "0.10.0" -> (0, 10, 0); () when there are none."""
    match = _RELEASE.match(version.strip().lstrip("v"))
    return tuple(int(part) for part in match.group().split(".")) if match else ()


def newer_version_note(written: object, what: str) -> str | None:
    """A one-line warning when `what` was written by a newer version than this one, else None.

    `written` is the `smartprice_version` a config recorded (None where it recorded none); anything
    but a string there is a damaged config: a UserError naming `what` and the field.
    """
    if written is not None and not isinstance(written, str):
        raise UserError(f"{what}: damaged config, 'smartprice_version' is {written!r}, expected a version string "
                        f"such as {__version__!r}; restore the directory or retrain the model")
    if written and is_newer(written):
        return (f"{what} was written by smartprice {written}, newer than this smartprice {__version__}: "
                "if it fails to load or predicts oddly, install that version of smartprice")
    return None
