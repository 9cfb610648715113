#!/usr/bin/env python3
"""Lists import circles between the modules of src/ (ARCHITECTURE.md:
"No import circles between modules"). A module is a file (`x/mod.rs` is
`x`); an edge is a `crate::`, `super::` or `self::` path naming another
module, in code outside `#[cfg(test)] mod tests`. A child using its
parent's types (`super::Foo` from `x/y.rs` to `x/mod.rs`) is the usual
Rust layout and is not counted. Prints each circle; exits 1 if any.

    python3 scripts/import-circles.py [repo]
"""
import os
import re
import sys

root = os.path.join(sys.argv[1] if len(sys.argv) > 1 else ".", "src")
mods = {}
for dirpath, _, files in os.walk(root):
    for f in files:
        if f.endswith(".rs"):
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, root)[:-3].split("/")
            if rel[-1] == "mod":
                rel = rel[:-1]
            if rel in (["lib"], ["main"]):
                rel = []
            mods[tuple(rel)] = path


def resolve(parts):
    for n in range(len(parts), -1, -1):
        if tuple(parts[:n]) in mods:
            return tuple(parts[:n])
    return None


edges = {}
for m, path in mods.items():
    text = open(path, encoding="utf-8").read()
    text = re.sub(r"#\[cfg\(test\)\]\s*mod tests\s*\{.*", "", text, flags=re.S)
    text = re.sub(r"//.*", "", text)
    out = set()
    for mt in re.finditer(r"\b(crate|super|self)((?:::\w+)+)(::\{([^}]*)\})?", text):
        base, path_parts = mt.group(1), [p for p in mt.group(2).split("::") if p]
        start = [] if base == "crate" else list(m[:-1]) if base == "super" else list(m)
        while path_parts and path_parts[0] == "super":
            start, path_parts = start[:-1], path_parts[1:]
        targets = [start + path_parts]
        for g in (mt.group(4) or "").split(","):
            g = g.strip().split(" as ")[0].split("::")
            if g[0] and g[0] != "self":
                targets.append(start + path_parts + g)
        for t in targets:
            r = resolve(t)
            # Not itself, not the crate root, not one of its ancestors.
            if r is not None and r != m and r != m[: len(r)]:
                out.add(r)
    edges[m] = out

index, low, stack, on, circles, counter = {}, {}, [], set(), [], [0]
sys.setrecursionlimit(10000)


def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in edges.get(v, ()):
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop()
            on.discard(w)
            comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            circles.append(comp)


for v in list(edges):
    if v not in index:
        visit(v)
name = lambda m: "::".join(m) or "crate"
for comp in circles:
    print("circle:", ", ".join(sorted(name(x) for x in comp)))
    members = set(comp)
    for a in sorted(comp):
        for b in sorted(edges[a] & members):
            print(f"  {name(a)} -> {name(b)}")
if not circles:
    print(f"no import circles among {len(mods)} modules")
sys.exit(1 if circles else 0)
