"""The application layer: the CLI, the acknowledgement web server, the demo and the runtime
that runs a worker and the web server in one process, plus the embedded services they start.

It sits on top of everything else and nothing imports it (``pyproject.toml``'s import
contracts).
"""
