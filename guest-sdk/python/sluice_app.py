"""The app module of a Python guest: the exports of the `transformer` or `mangler` world
(guest-sdk/wit/guest.wit) around the guest's own module, with batches in the JSON form
(guest-sdk/ENCODING.md §4).

`sluice guest build` stages this file, `sluice.py`, the guest's file and a generated
`sluice_user_module.py` (`NAME = "<the guest's module name>"`) and hands them to
componentize-py. The guest's module defines

    def transform(flows, config):        # transformer: flows is a list of dicts
        return [{...}, ...]              # a list (or any iterable) of dicts, one per record
    def mangle(tag, records, config):    # mangler
        return [{...}, ...]

and may define `init(config)`, called with the parsed config in each fresh instance (one per
analyzer message) before its batches: raising refuses the config, and a value other than None is
what `transform`/`mangle` get as `config`.

componentize-py runs the top level of this module and of the guest's at build time and keeps
the initialised interpreter, so every import has to happen here, at the top: the component has
no files to import from when it runs.
"""

import importlib
import json
import sys
import traceback

import wit_world
from componentize_py_types import Err
from wit_world.imports import host

import sluice
import sluice_user_module

# The host keeps 512 bytes of a batch's error (README's security model); a longer text is cut
# here already, so that a huge message doesn't cross the boundary for nothing.
_MAX_ERR = 4096

_user = importlib.import_module(sluice_user_module.NAME)
_USER_FILE = getattr(_user, "__file__", None) or ""

# The world this component is built for: the generated bindings carry only its exports.
if hasattr(wit_world.WitWorld, "transform"):
    _KIND, _SIGNATURE = "transform", "transform(flows, config)"
elif hasattr(wit_world.WitWorld, "mangle"):
    _KIND, _SIGNATURE = "mangle", "mangle(tag, records, config)"
else:
    raise RuntimeError("sluice_app: the world exports neither transform nor mangle")

# Checked at build time: a guest without its world's function doesn't build.
_entry = getattr(_user, _KIND, None)
if not callable(_entry):
    raise TypeError(f"{sluice_user_module.NAME}: a {_KIND} guest must define `def {_SIGNATURE}`")
_user_init = getattr(_user, "init", None)
if _user_init is not None and not callable(_user_init):
    raise TypeError(f"{sluice_user_module.NAME}: `init` must be a function")

_UNSET = object()
_config = _UNSET


def _where(tb):
    """` (at file:line in function)` for the innermost frame of the guest's file."""
    frames = traceback.extract_tb(tb)
    for frame in reversed(frames):
        if _USER_FILE and frame.filename == _USER_FILE:
            break
    else:
        if not frames:
            return ""
        frame = frames[-1]
    name = frame.filename.rsplit("/", 1)[-1]
    return f" (at {name}:{frame.lineno} in {frame.name})"


def _fail(what, exc):
    """The `Err` for an exception of the guest's code; the whole traceback goes to stderr,
    that is to the guest log."""
    if isinstance(exc, sluice.GuestError):
        text = str(exc)
    else:
        text = f"{what}: {type(exc).__name__}: {exc}{_where(exc.__traceback__)}"
        traceback.print_exception(exc, file=sys.stderr)
    if len(text) > _MAX_ERR:
        text = text[: _MAX_ERR - 3] + "..."
    return Err(text)


def _flush():
    # The instance is dropped after the call: what print() left in a buffer would be lost.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def _parse(batch, what):
    try:
        return json.loads(batch)
    except Exception as exc:
        raise Err(f"{what} is not valid JSON: {exc}") from None


def _call(*args):
    """Calls the guest's transform/mangle. A generator's (or other iterable's) records are
    drained here, so that an exception raised while producing them is reported like the
    function's own."""
    try:
        out = _entry(*args)
        if out is None:
            raise Err(f"{_KIND} returned None: return a list of records (dicts)")
        if isinstance(out, (dict, str, bytes)):
            raise Err(f"{_KIND} returned a {type(out).__name__}: return a list of records (dicts)")
        if not isinstance(out, list):
            out = list(out)
        return out
    except Err:
        raise
    except BaseException as exc:  # sys.exit() too: it would otherwise end the instance
        raise _fail(_KIND, exc) from None
    finally:
        _flush()


def _encode(records):
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise Err(f"{_KIND} output: record {i} is not a dict (got {type(record).__name__})")
    try:
        # Key order is insertion order: a record's fields in the order the guest set them.
        # NaN and infinities are refused rather than written as invalid JSON.
        text = json.dumps(records, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except Exception as exc:
        raise _fail(f"{_KIND} output is not JSON", exc) from None
    return text.encode("utf-8")


class WitWorld(wit_world.WitWorld):
    def init(self, config: str) -> None:
        global _config
        _config = _UNSET
        try:
            # An empty config counts as null, as the Rust SDK's Config does.
            value = json.loads(config) if config.strip() else None
        except Exception as exc:
            raise Err(f"config is not valid JSON: {exc}") from None
        try:
            if _user_init is not None:
                replaced = _user_init(value)
                if replaced is not None:
                    value = replaced
        except BaseException as exc:
            raise _fail("init", exc) from None
        finally:
            _flush()
        _config = value

    def batch_encoding(self) -> host.BatchEncoding:
        return host.BatchEncoding.JSON

    def transform(self, batch: bytes) -> bytes:
        if _config is _UNSET:
            raise Err("transform called before a successful init")
        return _encode(_call(_parse(batch, "flow batch"), _config))

    def mangle(self, tag: str, batch: bytes) -> bytes:
        if _config is _UNSET:
            raise Err("mangle called before a successful init")
        return _encode(_call(tag, _parse(batch, "record batch"), _config))
