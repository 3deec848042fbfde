#!/usr/bin/env python3
"""Runs one QMP command on a QEMU monitor socket and prints its return value.

  qmp.py SOCKET COMMAND [ARGS_JSON] [--field NAME] [--until V1,V2,...]
         [--interval SECS] [--timeout SECS]

Prints the return value as JSON, or with --field NAME only that member of it
(empty if absent). --until repeats the command every --interval seconds
(default 0.5) until the field is one of the values. Every wait is bounded by
--timeout (default 30 s): exit 124 then. A QMP error exits 1 with QEMU's
description on stderr; no socket or no answer exits 2.
"""
import argparse
import json
import socket
import sys
import time


def command(sock_path, name, args, deadline):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(max(0.1, deadline - time.monotonic()))
        s.connect(sock_path)
        f = s.makefile("rw")

        def call(cmd, arguments=None):
            msg = {"execute": cmd}
            if arguments:
                msg["arguments"] = arguments
            f.write(json.dumps(msg) + "\n")
            f.flush()
            while True:  # events come in between: skip them
                line = f.readline()
                if not line:
                    raise ConnectionError(f"QMP socket closed during {cmd}")
                reply = json.loads(line)
                if "error" in reply:
                    print(f"qmp: {cmd}: {reply['error'].get('desc')}", file=sys.stderr)
                    sys.exit(1)
                if "return" in reply:
                    return reply["return"]

        f.readline()  # greeting
        call("qmp_capabilities")
        return call(name, args)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("socket")
    p.add_argument("command")
    p.add_argument("args", nargs="?", default="{}")
    p.add_argument("--field")
    p.add_argument("--until")
    p.add_argument("--interval", type=float, default=0.5)
    p.add_argument("--timeout", type=float, default=30)
    o = p.parse_args()
    deadline = time.monotonic() + o.timeout
    wanted = o.until.split(",") if o.until else None
    while True:
        try:
            ret = command(o.socket, o.command, json.loads(o.args), deadline)
        except (OSError, ConnectionError, ValueError) as e:
            print(f"qmp: {o.command} on {o.socket}: {e}", file=sys.stderr)
            sys.exit(124 if time.monotonic() >= deadline else 2)
        out = ret.get(o.field, "") if o.field else ret
        if not wanted or out in wanted:
            break
        if time.monotonic() + o.interval >= deadline:
            print(f"qmp: {o.command}: {o.field} still '{out}' after {o.timeout:g} s", file=sys.stderr)
            sys.exit(124)
        time.sleep(o.interval)
    print(out if isinstance(out, str) else json.dumps(out))


if __name__ == "__main__":
    main()
