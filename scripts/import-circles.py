#!/usr/bin/env python3
"""Lists import circles between the modules of src/ (ARCHITECTURE.md:
"No import circles between modules"). A module is a file (`x/mod.rs` is
`x`); an edge is a `crate::`, `super::` or `self::` path naming another
module, in code outside `#[cfg(test)] mod tests`. A child using its
parent's types (`super::Foo` from `x/y.rs` to `x/mod.rs`) is the usual
Rust layout and is not counted. Prints each circle; exits 1 if any.

With `--upward`, also lists every import that goes up the layer order of
ARCHITECTURE.md ("## Layers": a table, top layer first, each row's first
column naming its top-level modules in backticks): an edge from a module
to a module of a higher layer, or to the crate root (a re-export of
lib.rs instead of the module that defines it). Exits 1 if there are more
than `--max N` (default 2) or a module of src/ is in no layer.

    python3 scripts/import-circles.py [--upward [--max N]] [repo]
"""
import os
import re
import sys

args = sys.argv[1:]
upward = "--upward" in args
max_upward = 2
if "--max" in args:
    max_upward = int(args[args.index("--max") + 1])
    del args[args.index("--max") : args.index("--max") + 2]
args = [a for a in args if a != "--upward"]
repo = args[0] if args else "."
root = os.path.join(repo, "src")
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
to_root = {}
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
            # A path into the crate root from below it (`crate::Sha1Digest`).
            if r == () and m != () and (base == "crate" or not start):
                to_root.setdefault(m, set()).add("::".join(t))
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
failed = bool(circles)


def layers_of(path):
    """Top-level module -> layer number (0 the top) from ARCHITECTURE.md."""
    text = open(path, encoding="utf-8").read()
    section = re.search(r"^## Layers\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    if not section:
        sys.exit(f"{path}: no '## Layers' section")
    rows = [r for r in section.group(1).splitlines() if r.startswith("|")]
    layer = {}
    for i, row in enumerate(rows[2:]):  # after the header and its separator
        for module in re.findall(r"`([a-z_]+)`", row.split("|")[1]):
            layer[module] = i
    return layer


if upward:
    layer = layers_of(os.path.join(repo, "ARCHITECTURE.md"))
    tops = sorted({m[0] for m in mods if m})
    unplaced = [t for t in tops if t not in layer]
    for t in unplaced:
        print(f"module {t} is in no layer of ARCHITECTURE.md")
    up = []
    for m in sorted(edges):
        if not m or m[0] not in layer:
            continue
        for t in sorted(edges[m]):
            if t[0] in layer and layer[t[0]] < layer[m[0]]:
                up.append(f"{name(m)} -> {name(t)}")
        for t in sorted(to_root.get(m, ())):
            up.append(f"{name(m)} -> crate::{t} (the crate root)")
    for u in up:
        print("upward:", u)
    print(f"{len(up)} upward imports (at most {max_upward}) over {len(layer)} layered modules")
    failed = failed or bool(unplaced) or len(up) > max_upward
sys.exit(1 if failed else 0)
