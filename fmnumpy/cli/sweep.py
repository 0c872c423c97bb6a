"""``fmnumpy sweep SPEC.toml --out DIR``: a grid of train runs on Dask (fmnumpy/sweep/,
docs/sweeps.md); ``fmnumpy sweep --summary DIR`` remakes the summary from the run folders."""
from fmnumpy.cli.common import say
from fmnumpy.errors import FmnumpyError


def cmd_sweep(a, cli):
    """``cli``: ``sweep.spec.Cli`` of the command line (its parser, family rule, main)."""
    from fmnumpy.sweep import execute, summary
    from fmnumpy.sweep.spec import load_spec
    if a.summary:
        if a.spec or a.out:
            raise FmnumpyError("--summary DIR remakes a summary; give it alone")
        lines = summary.summarize(a.summary)
        print("\n".join(lines))
        return 0
    if not a.spec or not a.out:
        raise FmnumpyError("give a spec and an output folder: fmnumpy sweep SPEC.toml --out DIR "
                           "(or --summary DIR)")
    spec = load_spec(a.spec, cli)
    done, failed = execute.run_sweep(spec, a.out, cli.main, a.scheduler, a.workers,
                                     a.threads_per_run, say=say)
    lines = summary.summarize(a.out)
    print("\n".join(lines))
    say(f"{done} runs ended, {failed} failed; summary in {a.out}/summary.md")
    return 1 if failed else 0
