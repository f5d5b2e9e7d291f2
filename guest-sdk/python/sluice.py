"""`import sluice` in a Python guest: the host's log, and an exception whose text is the batch's
error as it is. guest-sdk/README.md is the guide.

    import sluice

    sluice.log("info", "starting")        # or sluice.info("starting")
    raise sluice.GuestError("bad input")   # init/transform/mangle fail with exactly this text

`print()` writes to stdout, which the host keeps in the pipeline's guest log too.

The same file works outside a component, so that a guest's native unit tests
(`python3 -m unittest`) can import it: there `log` writes to stderr. `sluice guest build`
always packs this file, whatever `sluice.py` lies next to the guest.
"""

import sys

try:
    # The bindings componentize-py generates for the world (guest-sdk/wit/guest.wit).
    from wit_world.imports import host as _host
except ImportError:
    _host = None

__all__ = ["log", "error", "warn", "info", "debug", "GuestError"]

# The host's levels, by the names a guest may give them.
_NAMES = {"error": "error", "warn": "warn", "warning": "warn", "info": "info", "debug": "debug"}

if _host is not None:
    _LEVELS = {
        "error": _host.Level.ERROR,
        "warn": _host.Level.WARN,
        "info": _host.Level.INFO,
        "debug": _host.Level.DEBUG,
    }


class GuestError(Exception):
    """Raise it to fail `init`, `transform` or `mangle` with exactly its message.

    Any other exception fails them too, with its type, its message and the line of the guest's
    file that raised it.
    """


def log(level, message):
    """Writes a line to the pipeline's guest log (`GET /v1/pipelines/{id}/logs`).

    `level` is "error", "warn", "info" or "debug". The host cuts a line at 1 KiB and counts the
    lines past the batch's budget instead of keeping them.
    """
    name = _NAMES.get(level.lower()) if isinstance(level, str) else None
    if name is None:
        raise ValueError(f"unknown log level {level!r}: use error, warn, info or debug")
    if _host is None:
        print(f"[{name}] {message}", file=sys.stderr)
    else:
        _host.log(_LEVELS[name], str(message))


def error(message):
    log("error", message)


def warn(message):
    log("warn", message)


def info(message):
    log("info", message)


def debug(message):
    log("debug", message)
