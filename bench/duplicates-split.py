#!/usr/bin/env python3
"""Split a checkout's .rs files into a test tree and a production tree, for `duplicates`
(issue 20's before/after counts): `python3 bench/duplicates-split.py CHECKOUT OUT`, then
`cd OUT/test && duplicates --most 200 --seconds 300` and the same in OUT/prod.
Test code: files under */tests/, */examples/, */benches/, the former walrus-tests crate (tests/),
lab/, walrus-testkit/, src files named tests.rs or *_tests.rs, and the tail of a src file
from its `#[cfg(test)]` + `mod tests` on. Everything else is production."""
import os, re, subprocess, sys
src, out = sys.argv[1], sys.argv[2]
files = subprocess.run(["git", "-C", src, "ls-files", "*.rs"], capture_output=True, text=True).stdout.split()
def is_test(p):
    parts = p.split("/")
    return (parts[0] in ("tests", "lab", "walrus-testkit") or "tests" in parts[1:-1] or "examples" in parts
            or "benches" in parts or parts[-1] == "tests.rs" or parts[-1].endswith("_tests.rs")
            or any(x.endswith("_tests") for x in parts[:-1])
            or p == "walrus-actors/src/fixtures.rs")
def put(tree, p, text):
    if not text.strip(): return
    d = os.path.join(out, tree, os.path.dirname(p)); os.makedirs(d, exist_ok=True)
    open(os.path.join(out, tree, p), "w").write(text)
for p in files:
    text = open(os.path.join(src, p)).read()
    if is_test(p): put("test", p, text); continue
    lines = text.splitlines(keepends=True); cut = None
    for i, l in enumerate(lines):
        if l.strip() == "#[cfg(test)]" and i + 1 < len(lines) and re.match(r"\s*mod \w*tests?\b.*\{\s*$", lines[i+1]):
            cut = i; break
    if cut is None: put("prod", p, text)
    else: put("prod", p, "".join(lines[:cut])); put("test", p, "".join(lines[cut:]))
