"""Mail HTML made safe to keep and to show: no scripts, no event handlers, no remote images
(they report to the sender who opened the mail, and when). nh3 (ammonia) does the parsing;
a hand-written filter would miss the tricks spam uses."""

from __future__ import annotations

import nh3

# Inline images (cid:) and embedded ones (data:) are part of the mail; anything else is fetched.
LOCAL_IMAGE_PREFIXES = ("cid:", "data:image/")


def _drop_remote_images(tag: str, attribute: str, value: str) -> str | None:
    """Images only from the mail itself; data: URLs only as images (a data:text/html link
    carries a whole page, script included)."""
    url = value.strip().lower()
    if tag == "img" and attribute in ("src", "srcset"):
        return value if url.startswith(LOCAL_IMAGE_PREFIXES) else None
    if url.startswith("data:"):
        return None
    return value


def sanitize_html(markup: str) -> str:
    return nh3.clean(markup, attribute_filter=_drop_remote_images,
                     url_schemes={"http", "https", "mailto", "cid", "data"}, link_rel="noopener noreferrer")
