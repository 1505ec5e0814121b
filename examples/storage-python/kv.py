"""`kv-python`: a storage backend in Python, as a WASM component built by componentize-py against
the `storage-backend` world of SPEAR's WIT files.

The store is a sorted key-value map held in the component's memory (like SPEAR's built-in `memory`
backend: it lasts as long as the host process). Keys and values are bytes; keys sort bytewise.
A batch applies all of its operations or none, its checks read against the state before any of
its writes. A host that opens it (SMS with `database.db_type = "kv-python"`) calls it from one
thread at a time; the module keeps its state between calls.

componentize-py generates the `wit_world` package from the WIT files at build time; the export is
the class below, named like the exported interface (`Storage`).
"""

import bisect
import json
from typing import Dict, List, Optional

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.storage import (
    BatchLimits,
    BatchOp,
    BatchOp_Check,
    BatchOp_Delete,
    BatchOp_Put,
    KeyValue,
)
from wit_world.imports.types import PluginInfo, PluginKind

NAME = "kv-python"
VERSION = "0.1.0"

# The JSON Schema of the configuration, as `info` reports it.
CONFIG_SCHEMA = (
    '{"type":"object","properties":{"max_keys":{"type":"integer","minimum":1}},'
    '"additionalProperties":false}'
)

# The largest batch taken in one call, as `limits` reports it.
MAX_OPS = 1024
MAX_BYTES = 16 * 1024 * 1024

# componentize-py makes a new `Storage` for each call, so the store lives at module level.
values: Dict[bytes, bytes] = {}
keys: List[bytes] = []  # the keys of `values`, sorted
max_keys: Optional[int] = None
opened = False


def parse_config(text: str) -> Optional[int]:
    """Read `{"max_keys": N}` into N (None: no limit). Raises ValueError naming the problem."""
    text = text.strip()
    if text in ("", "null"):
        return None
    try:
        value = json.loads(text)
    except ValueError as e:
        raise ValueError(f"config is not JSON: {e}") from None
    if not isinstance(value, dict):
        raise ValueError("config must be a JSON object")
    limit = None
    for key in sorted(value):
        if key == "max_keys":
            n = value[key]
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError("max_keys: must be a positive integer")
            limit = n
        else:
            raise ValueError(f"unknown key `{key}`")
    return limit


def _set(key: bytes, value: bytes) -> None:
    if key not in values:
        bisect.insort(keys, key)
    values[key] = value


def _remove(key: bytes) -> bool:
    if key not in values:
        return False
    del values[key]
    del keys[bisect.bisect_left(keys, key)]
    return True


def _room_for(new_keys: int) -> None:
    """Raise `Err` when `new_keys` more keys would pass `max_keys`."""
    if max_keys is not None and len(values) + new_keys > max_keys:
        raise Err(f"the store holds at most {max_keys} keys (max_keys)")


def _must_be_open() -> None:
    if not opened:
        raise Err("the store is not open: call open first")


class Storage(exports.Storage):
    """The exported `storage` interface (the class name must match the interface name)."""

    def info(self) -> PluginInfo:
        # `kind` is not read for this world (the world says what the plugin is).
        return PluginInfo(
            name=NAME,
            version=VERSION,
            kind=PluginKind.SCHEDULING_STRATEGY,
            description="A sorted key-value store in memory, written in Python",
            config_schema=CONFIG_SCHEMA,
        )

    def open(self, config: str) -> None:
        global max_keys, opened
        try:
            max_keys = parse_config(config)
        except ValueError as e:
            raise Err(str(e))
        opened = True

    def get(self, key: bytes) -> Optional[bytes]:
        _must_be_open()
        return values.get(bytes(key))

    def put(self, key: bytes, value: bytes) -> None:
        _must_be_open()
        key = bytes(key)
        if key not in values:
            _room_for(1)
        _set(key, bytes(value))

    def delete(self, key: bytes) -> bool:
        _must_be_open()
        return _remove(bytes(key))

    def scan(self, prefix: bytes, start_after: Optional[bytes], limit: int) -> List[KeyValue]:
        _must_be_open()
        prefix = bytes(prefix)
        if start_after is not None and bytes(start_after) >= prefix:
            i = bisect.bisect_right(keys, bytes(start_after))
        else:
            i = bisect.bisect_left(keys, prefix)
        out: List[KeyValue] = []
        while i < len(keys) and len(out) < limit and keys[i].startswith(prefix):
            out.append(KeyValue(key=keys[i], value=values[keys[i]]))
            i += 1
        return out

    def batch(self, ops: List[BatchOp]) -> bool:
        _must_be_open()
        if len(ops) > MAX_OPS:
            raise Err(f"a batch takes at most {MAX_OPS} operations, not {len(ops)}")
        # Every check against the state before any write.
        for op in ops:
            if isinstance(op, BatchOp_Check):
                want = None if op.value.value is None else bytes(op.value.value)
                if values.get(bytes(op.value.key)) != want:
                    return False
        # Its size, and the keys it adds (for max_keys): refused before anything is written.
        size = 0
        touched: Dict[bytes, bool] = {}  # the keys it writes: there after it or not
        for op in ops:
            if isinstance(op, BatchOp_Put):
                size += len(op.value.key) + len(op.value.value)
                touched[bytes(op.value.key)] = True
            elif isinstance(op, BatchOp_Delete):
                size += len(op.value)
                touched[bytes(op.value)] = False
        if size > MAX_BYTES:
            raise Err(f"a batch takes at most {MAX_BYTES} bytes of keys and values, not {size}")
        added = sum((1 if there else 0) - (1 if k in values else 0) for k, there in touched.items())
        _room_for(max(added, 0))
        for op in ops:
            if isinstance(op, BatchOp_Put):
                _set(bytes(op.value.key), bytes(op.value.value))
            elif isinstance(op, BatchOp_Delete):
                _remove(bytes(op.value))
        return True

    def compare_and_swap(
        self, key: bytes, expected: Optional[bytes], new: Optional[bytes]
    ) -> bool:
        _must_be_open()
        key = bytes(key)
        want = None if expected is None else bytes(expected)
        if values.get(key) != want:
            return False
        if new is None:
            _remove(key)
        else:
            if key not in values:
                _room_for(1)
            _set(key, bytes(new))
        return True

    def limits(self) -> BatchLimits:
        return BatchLimits(max_ops=MAX_OPS, max_bytes=MAX_BYTES)
