"""The acknowledgement web server (FastAPI): see :func:`altaviz.web.app.create_app`."""

from altaviz.web.app import RedactTokens, create_app

__all__ = ["RedactTokens", "create_app"]
