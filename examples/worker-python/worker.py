#!/usr/bin/env python3
"""A worker for SPEAR's `process` executor, in Python with nothing but the standard library.

It speaks the worker protocol of docs/workers.md on its standard input and output: every
message is a JSON header frame and a payload frame, each preceded by its length as 4 bytes,
big-endian. It says hello once, then answers requests one after another, keeping its state
(`count`) between them for as long as the Spearlet keeps the instance.

Functions: `count` (invocations of `count` so far on this worker), `echo` (the payload),
`upper` (the payload upper-cased), `cwd` (its working directory), `env` (the value of the
environment variable the payload names, empty when unset), `fail` (a function error),
`sleep` (the payload's number of milliseconds), `exit` (dies mid-invocation: the Spearlet
replaces the worker), `lines` (asked for pieces of output, `"stream": true`: sends the piece
`first`, waits up to ten seconds for the file its payload names to exist, sends `second`, and
answers `end`, or `no gate` if the file never came; asked for none: answers all three at once),
`pieces` (the payload `N,SIZE`: N pieces of SIZE bytes, sent as pieces when asked for them).
"""

import json
import os
import struct
import sys
import time

MAX_FRAME = 64 << 20


def read_frame(stream):
    head = stream.read(4)
    if len(head) < 4:
        return None
    (length,) = struct.unpack(">I", head)
    if length > MAX_FRAME:
        sys.exit(f"a frame of {length} bytes is over {MAX_FRAME}")
    data = stream.read(length)
    if len(data) < length:
        return None
    return data


def write_message(stream, header, payload=b""):
    body = json.dumps(header).encode()
    stream.write(struct.pack(">I", len(body)) + body)
    stream.write(struct.pack(">I", len(payload)) + payload)
    stream.flush()


def main():
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    write_message(out, {"ready": True, "protocol": 1})
    count = 0
    while True:
        header = read_frame(inp)
        if header is None:
            return
        payload = read_frame(inp)
        if payload is None:
            return
        request = json.loads(header)
        rid, function = request["id"], request["function"]
        if function == "count":
            count += 1
            write_message(out, {"id": rid, "ok": True}, str(count).encode())
        elif function == "echo":
            write_message(out, {"id": rid, "ok": True}, payload)
        elif function == "upper":
            write_message(out, {"id": rid, "ok": True}, payload.upper())
        elif function == "env":
            value = os.environ.get(payload.decode("utf-8", "replace"), "")
            write_message(out, {"id": rid, "ok": True}, value.encode())
        elif function == "cwd":
            write_message(out, {"id": rid, "ok": True}, os.getcwd().encode())
        elif function == "sleep":
            time.sleep(int(payload or b"1000") / 1000)
            write_message(out, {"id": rid, "ok": True}, b"slept")
        elif function == "lines":
            if request.get("stream"):
                write_message(out, {"id": rid, "chunk": True}, b"first")
                deadline = time.monotonic() + 10
                while not os.path.exists(payload.decode()) and time.monotonic() < deadline:
                    time.sleep(0.005)
                write_message(out, {"id": rid, "chunk": True}, b"second")
                end = b"end" if os.path.exists(payload.decode()) else b"no gate"
                write_message(out, {"id": rid, "ok": True}, end)
            else:
                write_message(out, {"id": rid, "ok": True}, b"firstsecondend")
        elif function == "pieces":
            n, size = (int(x) for x in payload.decode().split(","))
            if request.get("stream"):
                for _ in range(n):
                    write_message(out, {"id": rid, "chunk": True}, b"p" * size)
                write_message(out, {"id": rid, "ok": True}, b"")
            else:
                write_message(out, {"id": rid, "ok": True}, b"p" * (n * size))
        elif function == "exit":
            sys.exit(3)
        elif function == "fail":
            write_message(out, {"id": rid, "ok": False, "error": f"failed on {len(payload)} bytes"})
        else:
            write_message(out, {"id": rid, "ok": False, "error": f"no function `{function}`"})


if __name__ == "__main__":
    main()
