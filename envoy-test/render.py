#!/usr/bin/env python3
"""Fills the ${NAME} placeholders of envoy.yaml from NAME=value arguments.

FILTER_CONFIG is read from a file (FILTER_CONFIG=@path) and written as one line of JSON, so it
sits inside the YAML block scalar whatever its original formatting.
"""
import json
import string
import sys


def main() -> int:
    if len(sys.argv) < 2:
        print("usage: render.py TEMPLATE NAME=value ... [FILTER_CONFIG=@file]", file=sys.stderr)
        return 2
    values = {}
    for arg in sys.argv[2:]:
        name, _, value = arg.partition("=")
        if value.startswith("@"):
            with open(value[1:], encoding="utf-8") as f:
                value = json.dumps(json.load(f), separators=(",", ":"))
        values[name] = value
    with open(sys.argv[1], encoding="utf-8") as f:
        template = string.Template(f.read())
    try:
        sys.stdout.write(template.substitute(values))
    except KeyError as missing:
        print(f"render.py: no value for {missing}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
