"""The page's forms: read a body within a byte limit, and turn the fields into one listing or a list of errors.

A problem a user can fix is a `FieldError`: a message shown next to the control it names. Bodies are
counted as they stream in (Content-Length first), so an oversized upload is refused before it is
parsed; what is left of it is read and dropped, so the browser gets the page, not a reset connection.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import dataclass

import python_multipart  # noqa: F401  (Starlette parses forms with it, and says nothing at import when it is missing)
from fastapi import Request
from starlette.datastructures import FormData
from starlette.formparsers import FormParser, MultiPartException, MultiPartParser

DRAIN_LIMIT = 512 * 1024 * 1024  # an oversized body is read and dropped up to here, then the connection is left to close
MAX_FORM_FIELDS = 16             # the forms have 7 controls at most


class FieldError(Exception):
    """A user mistake on the page: `field` names the control the message belongs to."""

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.field, self.message, self.status = field, message, status


class _TooLarge(Exception):
    pass


async def _drain(request: Request, already: int) -> None:
    """Read and drop the rest of a refused body, so the client reads our answer instead of a reset."""
    seen = already
    while seen < DRAIN_LIMIT:
        message = await request.receive()
        if message["type"] != "http.request":
            return
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def read_form(request: Request, max_bytes: int, field: str, too_large: str, *, files: int = 0) -> FormData:
    """The form of a page request, refused with FieldError(field, too_large, 413) past `max_bytes`."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        await _drain(request, 0)
        raise FieldError(field, too_large, 413)
    seen = 0

    async def counted() -> AsyncIterator[bytes]:
        nonlocal seen
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > max_bytes:
                raise _TooLarge
            yield chunk

    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media == "multipart/form-data":
        parser: FormParser | MultiPartParser = MultiPartParser(request.headers, counted(), max_files=files,
                                                               max_fields=MAX_FORM_FIELDS, max_part_size=max_bytes)
    elif media == "application/x-www-form-urlencoded" and not files:
        parser = FormParser(request.headers, counted(), max_fields=MAX_FORM_FIELDS, max_part_size=max_bytes)
    else:
        raise FieldError(field, f"send this form from the page (got Content-Type {media or 'none'!r})", 415)
    try:
        return await parser.parse()
    except _TooLarge:
        await _drain(request, seen)
        raise FieldError(field, too_large, 413) from None
    except MultiPartException as exc:
        raise FieldError(field, f"the form could not be read ({exc})", 400) from None


@dataclass(frozen=True)
class ListingForm:
    """What the paste form holds: a pasted listing, or its parts typed one by one."""

    listing: str = ""
    item_name: str = ""
    bullets: str = ""
    value: str = ""
    unit: str = ""

    @classmethod
    def from_form(cls, form: FormData) -> ListingForm:
        def text(name: str) -> str:
            value = form.get(name)
            return value if isinstance(value, str) else ""

        return cls(text("listing"), text("item_name"), text("bullets"), text("value").strip(), text("unit").strip())

    @property
    def typed(self) -> bool:
        return any(part.strip() for part in (self.item_name, self.bullets, self.value, self.unit))

    def catalog_content(self, max_chars: int) -> str:
        """The listing text to price: the pasted one, else one composed from the typed parts; FieldError if neither."""
        if self.listing.strip():
            if len(self.listing) > max_chars:
                raise FieldError("listing", f"the listing is {len(self.listing):,} characters long; "
                                            f"the limit is {max_chars:,}")
            return self.listing
        if not self.typed:
            raise FieldError("listing", "paste a listing, or type at least its item name below")
        if not self.item_name.strip():
            raise FieldError("item_name", "type the item name (or paste the whole listing above)")
        lines = [f"Item Name: {' '.join(self.item_name.split())}"]
        bullets = [b.strip() for b in self.bullets.splitlines() if b.strip()]
        lines += [f"Bullet Point {i}: {b}" for i, b in enumerate(bullets, 1)]
        if self.value:
            try:
                number = float(self.value.replace(",", ""))
            except ValueError:
                number = math.nan
            if not (math.isfinite(number) and number > 0):
                raise FieldError("value", f"the value must be a number above 0, like 12 or 16.9; got {self.value!r}")
            lines.append(f"Value: {number:g}")
        if self.unit:
            lines.append(f"Unit: {' '.join(self.unit.split())}")
        text = "\n".join(lines) + "\n"
        if len(text) > max_chars:
            raise FieldError("item_name" if len(self.item_name) > len(self.bullets) else "bullets",
                             f"the typed listing is {len(text):,} characters long; the limit is {max_chars:,}")
        return text
