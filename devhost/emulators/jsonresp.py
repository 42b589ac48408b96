"""JSON responses of the emulators' admin routes, escaped to ASCII as the services' APIs are.

Starlette's own writes raw UTF-8, which fails on a lone UTF-16 surrogate; the services
serve one as a `\\ud800` escape, and a test must be able to plant and read back such a value.
"""

from __future__ import annotations

import json
from typing import Any

from starlette import responses


class JSONResponse(responses.JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")
