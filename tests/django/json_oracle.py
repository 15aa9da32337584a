#!/usr/bin/env python
"""Python's json as an oracle for the property tests of tests/integration/params.rs:
what django-background-tasks stores for a call is
json.dumps((args, kwargs), sort_keys=True) (models.py, TaskManager.new_task).

Reads one JSON array per line on stdin (a batch of cases) and answers one JSON
array per line on stdout, case by case, until stdin closes. Run it with the
Django venv's interpreter (target/django-venv/bin/python), so the Python
version is the one the interop tests use; it needs only the standard library.

A case is {"name": task_name, "args": A, "kwargs": K, "form": F}:
  F = "value": A and K are values in the transport form below;
  F = "text":  A and K are JSON texts, read with json.loads (as Django code
               reading command-line JSON would).
The answer is {"text": task_params, "hash": task_hash, "loaded": L}, where L is
json.loads(task_params) in the transport form, or {"error": "Type: message"}
when Python refuses (json.loads or json.dumps raises).

Transport form: exact and independent of any JSON number or string handling:
  ["n"] None, ["b", bool], ["i", "decimal digits"], ["f", "IEEE-754 bits as a
  decimal u64"], ["s", [code points]] (lone surrogates included), ["l", [items]],
  ["d", [[key, value], ...]] with keys in the same form.
"""
import hashlib
import json
import struct
import sys


def to_float(bits):
    return struct.unpack("<d", struct.pack("<Q", int(bits)))[0]


def float_bits(value):
    return str(struct.unpack("<Q", struct.pack("<d", value))[0])


def decode(t):
    tag = t[0]
    if tag == "n":
        return None
    if tag == "b":
        return bool(t[1])
    if tag == "i":
        return int(t[1])
    if tag == "f":
        return to_float(t[1])
    if tag == "s":
        return "".join(chr(c) for c in t[1])
    if tag == "l":
        return [decode(item) for item in t[1]]
    if tag == "d":
        return {decode(k): decode(v) for k, v in t[1]}
    raise ValueError(f"unknown transport tag {tag!r}")


def encode(value):
    # bool before int: bool is a subclass of int.
    if value is None:
        return ["n"]
    if isinstance(value, bool):
        return ["b", value]
    if isinstance(value, int):
        return ["i", str(value)]
    if isinstance(value, float):
        return ["f", float_bits(value)]
    if isinstance(value, str):
        return ["s", [ord(c) for c in value]]
    if isinstance(value, (list, tuple)):
        return ["l", [encode(item) for item in value]]
    if isinstance(value, dict):
        return ["d", [[encode(k), encode(v)] for k, v in value.items()]]
    raise TypeError(f"cannot transport {type(value).__name__}")


def answer(case):
    try:
        if case["form"] == "text":
            args, kwargs = json.loads(case["args"]), json.loads(case["kwargs"])
        else:
            args, kwargs = decode(case["args"]), decode(case["kwargs"])
        text = json.dumps((args, kwargs), sort_keys=True)
        loaded = json.loads(text)
    except (TypeError, ValueError) as e:
        return {"error": f"{type(e).__name__}: {e}"}
    digest = hashlib.sha1((case["name"] + text).encode("utf-8")).hexdigest()
    return {"text": text, "hash": digest, "loaded": encode(loaded)}


def main():
    for line in sys.stdin:
        if line.strip():
            sys.stdout.write(json.dumps([answer(case) for case in json.loads(line)]) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
