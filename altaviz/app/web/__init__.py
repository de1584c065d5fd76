"""The acknowledgement web server (FastAPI): see :func:`altaviz.app.web.app.create_app`."""

from altaviz.app.web.app import RedactTokens, app_for, create_app

__all__ = ["RedactTokens", "app_for", "create_app"]
