"""Browser tests reuse the web tests' rig: the real alert workflow on the time-skipping
server, real PostgreSQL and the app served by uvicorn."""

from tests.web.conftest import rig, web_env

__all__ = ["rig", "web_env"]
