"""List the compiled functions of fmnumpy/ (njit, cuda.jit, vectorize, or passed to
such a decorator as ``njit(...)(f)``) with their parameter counts, widest first.

    python tools/signatures.py [--max N]     exit 1 if any takes more than N parameters
"""
import argparse
import ast
import pathlib
import sys

DECORATORS = {"njit", "jit", "vectorize", "guvectorize"}


def _is_compiler(node):
    """True for njit, njit(...), cuda.jit, cuda.jit(...), dev (a cuda.jit alias), ..."""
    if isinstance(node, ast.Call):
        return _is_compiler(node.func)
    if isinstance(node, ast.Attribute):
        return node.attr in DECORATORS
    return isinstance(node, ast.Name) and node.id in DECORATORS


def compiled_functions(root):
    """[(n_params, "path:line name")] of every compiled function under ``root``."""
    out = []
    root = pathlib.Path(root).resolve()
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        defs = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        wrapped = set()
        for n in ast.walk(tree):        # njit(...)(f) and dev(f) where dev = cuda.jit(...)
            if isinstance(n, ast.Call) and n.args and isinstance(n.args[0], ast.Name):
                if _is_compiler(n.func) or (isinstance(n.func, ast.Name)
                                            and n.func.id in ("dev", "dev_fn")):
                    wrapped.add(n.args[0].id)
        for name, fn in defs.items():
            if name in wrapped or any(_is_compiler(d) for d in fn.decorator_list):
                a = fn.args
                n = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs)
                out.append((n, f"{path.relative_to(root.parent)}:{fn.lineno} {name}"))
    return sorted(out, key=lambda r: (-r[0], r[1]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", nargs="?", default=str(pathlib.Path(__file__).parents[1] / "fmnumpy"))
    p.add_argument("--max", type=int, default=0, help="fail when a function takes more")
    p.add_argument("--top", type=int, default=0, help="print only the N widest")
    args = p.parse_args(argv)
    rows = compiled_functions(args.root)
    for n, where in rows[:args.top or None]:
        print(f"{n:3d}  {where}")
    print(f"{len(rows)} compiled functions; widest takes {rows[0][0] if rows else 0}")
    if args.max and rows and rows[0][0] > args.max:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
