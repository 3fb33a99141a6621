#!/usr/bin/env python3
"""Circles between a crate's top-level modules: `crate::X` named in module Y's files (code, not
comments) is an edge Y -> X, and so is `crate::Item` where the crate root re-exports `Item` from
X (`pub use X::Item`); a module and everything under it is one node, the crate root none.
Prints every strongly connected component of more than one module and exits 1 if there is one.

    python3 scripts/module-cycles.py crates/*/
"""
import pathlib
import re
import sys


def top_module(src, path):
    rel = path.relative_to(src)
    if rel.parts == ("lib.rs",) or rel.parts == ("main.rs",):
        return None
    return rel.parts[0].removesuffix(".rs")


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//")[0] for line in text.splitlines())


def reexports(src):
    """Item -> module for the root's `pub use module::{...}` lines."""
    root = next((src / n for n in ("lib.rs", "main.rs") if (src / n).exists()), None)
    if root is None:
        return {}
    found = {}
    code = strip_comments(root.read_text())
    for module, items in re.findall(r"pub use (\w+)::\{([^}]*)\}", code):
        for item in items.split(","):
            name = item.strip().split("::")[-1].split(" as ")[-1].strip()
            if name:
                found[name] = module
    for module, item in re.findall(r"pub use (\w+)::(\w+);", code):
        found[item] = module
    return found


def edges(src):
    graph = {}
    modules = {top_module(src, p) for p in src.rglob("*.rs")} - {None}
    items = reexports(src)
    for path in src.rglob("*.rs"):
        this = top_module(src, path)
        if this is None:
            continue
        code = strip_comments(path.read_text())
        targets = set(re.findall(r"\bcrate::(\w+)", code))
        # `use crate::{a::B, c::D}`
        for group in re.findall(r"\bcrate::\{([^}]*)\}", code):
            targets |= {t.strip().split("::")[0] for t in group.split(",") if t.strip()}
        targets = {items.get(t, t) for t in targets}
        graph.setdefault(this, set()).update(t for t in targets if t in modules and t != this)
    return graph


def cycles(graph):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


found = False
for crate in sys.argv[1:]:
    src = pathlib.Path(crate) / "src"
    if not src.is_dir():
        continue
    for component in cycles(edges(src)):
        found = True
        print(f"{crate}: circle between {', '.join(component)}")
sys.exit(1 if found else 0)
