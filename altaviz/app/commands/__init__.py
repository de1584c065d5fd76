"""CLI command modules, discovered automatically.

Each module here defines ``register(subparsers)``, which adds its sub-command(s) with
``parser.set_defaults(handler=...)``. A handler has the signature
``handler(args: argparse.Namespace, app: altaviz.app.context.App) -> int`` and returns the
exit code.
Raising an :class:`altaviz.core.errors.AltavizError` prints one clear line and exits non-zero.
"""
