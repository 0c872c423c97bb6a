"""Print the import cycles among the modules of a package (every relative import,
at module level or inside functions): python tools/imports.py fmnumpy"""
import ast, pathlib, sys
root = pathlib.Path(sys.argv[1])
mods = {}
for p in root.rglob("*.py"):
    name = ".".join(p.relative_to(root.parent).with_suffix("").parts)
    if name.endswith(".__init__"): name = name[:-9]
    mods[name] = p
graph = {}
for name, p in mods.items():
    pkg = name if p.name == "__init__.py" else name.rsplit(".", 1)[0]
    deps = set()
    for n in ast.walk(ast.parse(p.read_text())):
        if isinstance(n, ast.ImportFrom) and n.level:
            base = pkg.split(".")[:len(pkg.split("."))-(n.level-1)]
            tgt = ".".join(base + ([n.module] if n.module else []))
            subs = {tgt + "." + a.name for a in n.names} & set(mods)
            deps |= (subs or ({tgt} & set(mods))) - {name}
    graph[name] = deps
# find cycles (any import, top-level or in functions)
seen, stack, cycles = set(), [], []
def dfs(u, path):
    for v in graph[u]:
        if v in path: cycles.append(path[path.index(v):] + [v])
        elif v not in seen: dfs(v, path + [v])
    seen.add(u)
for m in graph: dfs(m, [m])
print("cycles:", sorted({" -> ".join(c) for c in cycles}) or "none")
