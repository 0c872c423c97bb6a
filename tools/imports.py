"""Check the import rules of fmnumpy's layers and print the import cycles:
python tools/imports.py fmnumpy

The layers (docs/architecture.md):

    core      errors, config, _cache, threads, metrics, nn/, train/, ode/, couplings/
    families  euclidean/ (with its cuda/), manifold/, discrete/
    edges     cli/, plots/, sweep/, sbi/, __main__, and the package's front door fmnumpy/__init__

Rules, over every import (absolute or relative, at module level or inside a function):
  1. the core imports no family and no edge;
  2. a family imports no other family and no edge;
  3. euclidean/cuda/ is imported only from euclidean/;
  4. matplotlib and imageio are imported only by plots/; numba.cuda only by
     euclidean/cuda/;
  5. no import cycles among the modules.
Prints "cycles: none" and "rules: ok", or each broken rule on its own line, and exits
with 1 when any rule is broken.
"""
import ast
import pathlib
import sys

CORE = ("errors", "config", "_cache", "threads", "metrics", "nn", "train", "ode", "couplings")
FAMILIES = ("euclidean", "manifold", "discrete")
EDGES = ("cli", "plots", "sweep", "sbi", "__main__")
PLOTTING = ("matplotlib", "imageio")


def modules(root):
    """{dotted name: path} of every module under the package folder ``root``."""
    out = {}
    for p in sorted(root.rglob("*.py")):
        name = ".".join(p.relative_to(root.parent).with_suffix("").parts)
        if name.endswith(".__init__"):
            name = name[:-len(".__init__")]
        out[name] = p
    return out


def imports_of(name, path, mods):
    """(package modules, outside modules) that module ``name`` imports."""
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    inside, outside = set(), set()
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.ImportFrom):
            if n.level:
                parts = pkg.split(".")
                base = ".".join(parts[:len(parts) - (n.level - 1)] + ([n.module] if n.module else []))
            else:
                base = n.module or ""
            subs = {base + "." + a.name for a in n.names} & set(mods)
            if subs:
                inside |= subs
            elif base in mods:
                inside.add(base)
            else:
                outside.add(base)
        elif isinstance(n, ast.Import):
            for a in n.names:
                (inside if a.name in mods else outside).add(a.name)
    return inside - {name}, outside


def layer(name):
    """("core" | "family" | "edge", the top-level part) of a module name."""
    parts = name.split(".")
    if len(parts) == 1:
        return "edge", "__init__"
    top = parts[1]
    if top in CORE:
        return "core", top
    if top in FAMILIES:
        return "family", top
    return "edge", top


def broken_rules(graph, outside):
    out = []
    for u in sorted(graph):
        lu, tu = layer(u)
        for v in sorted(graph[u]):
            lv, tv = layer(v)
            if lu == "core" and lv != "core":
                out.append(f"{u} (core) imports {v} ({lv})")
            if lu == "family" and lv == "family" and tu != tv:
                out.append(f"{u} ({tu}) imports {v}: no family imports another")
            if lu == "family" and lv == "edge":
                out.append(f"{u} (family) imports {v} (edge)")
            if ".euclidean.cuda" in v and tu != "euclidean":
                out.append(f"{u} imports {v}: the CUDA code is the Euclidean family's own")
        for m in sorted(outside[u]):
            if m.split(".")[0] in PLOTTING and layer(u)[1] != "plots":
                out.append(f"{u} imports {m}: pictures are drawn in plots/ only")
            if m.startswith("numba.cuda") and ".euclidean.cuda" not in u:
                out.append(f"{u} imports {m}: numba.cuda only in euclidean/cuda/")
    return out


def cycles(graph):
    seen, found = set(), set()

    def dfs(u, path):
        for v in graph[u]:
            if v in path:
                found.add(" -> ".join(path[path.index(v):] + [v]))
            elif v not in seen:
                dfs(v, path + [v])
        seen.add(u)
    for m in sorted(graph):
        dfs(m, [m])
    return sorted(found)


def main(argv):
    root = pathlib.Path(argv[1]).resolve()
    mods = modules(root)
    graph, outside = {}, {}
    for name, path in mods.items():
        graph[name], outside[name] = imports_of(name, path, mods)
    loops = cycles(graph)
    rules = broken_rules(graph, outside)
    print("cycles:", loops or "none")
    print("rules:", "ok" if not rules else f"{len(rules)} broken")
    for r in rules:
        print("  " + r)
    return 1 if loops or rules else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
