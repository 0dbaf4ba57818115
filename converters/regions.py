"""The one Label Studio region dict every converter returns (image and video alike).

A region is `{"id", "from_name", "to_name", "type", "value", "score"}` in that order; image regions add
their size after it (`converters.image_regions`). Built here only, so every tag's regions agree.
"""

from __future__ import annotations

import uuid
from typing import Any

__all__ = ["Region", "make_region", "new_region_id"]

Region = dict[str, Any]


def new_region_id() -> str:
    """A short random region id, like the 10-character ids the Label Studio editor makes."""
    return uuid.uuid4().hex[:10]


def make_region(
    *,
    from_name: str,
    to_name: str,
    type_: str,
    value: dict[str, Any],
    score: float,
    region_id: str | None = None,
) -> Region:
    """One region; `region_id` links regions that belong together (a pose box and its keypoints).

    Example:
        >>> r = make_region(from_name="t", to_name="video", type_="timelinelabels", value={"ranges": []}, score=1)
        >>> [key for key in r], r["score"], len(r["id"])
        (['id', 'from_name', 'to_name', 'type', 'value', 'score'], 1.0, 10)
    """
    return {
        "id": region_id or new_region_id(),
        "from_name": from_name,
        "to_name": to_name,
        "type": type_,
        "value": value,
        # float() turns numpy/torch scalars into something json.dumps accepts.
        "score": float(score),
    }
