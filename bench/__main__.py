"""``python -m bench {cpu,gpu,gpu-sweep,quality} [options]``: one entry for the benchmarks."""
import importlib
import sys

COMMANDS = {
    "cpu": ("bench.cpu", "fmnumpy vs PyTorch on the CPU, 1 and 2 threads"),
    "gpu": ("bench.gpu", "fmnumpy CUDA vs PyTorch on a GPU"),
    "gpu-sweep": ("bench.gpu_sweep", "CUDA launch-setting variants; winners for gpu --best-from"),
    "quality": ("bench.quality", "sample quality: W2 against the data floor"),
}


def usage():
    lines = ["usage: python -m bench COMMAND [options]   (COMMAND --help for its options)", ""]
    lines += [f"  {name:10s} {doc}" for name, (_, doc) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] not in COMMANDS:
        print(f"unknown command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name = COMMANDS[argv[0]][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        print(f"{module_name} is not available in this checkout", file=sys.stderr)
        return 2
    out = module.main(argv[1:])
    return out if isinstance(out, int) else 0


if __name__ == "__main__":
    sys.exit(main())
