"""The HTTP service: a JSON API (OpenAPI at /docs) and a web page, built by ``create_app``.

    vitrina serve maps --port 8000

Read-only by default; write endpoints need the token given with --token (or VITRINA_TOKEN).
Image URLs in queries can only reach public addresses; uploads have byte and pixel limits; the
model sits behind a bounded queue that answers 503 when full.
"""

from .app import create_app
from .core import ServiceConfig

__all__ = ["ServiceConfig", "create_app"]
