"""The progress bar of long training runs (an edge module: tqdm is imported here
only, by the API and the CLI, never by the core)."""


class TqdmBar:
    """``train.run``'s bar: update(k, loss, rate) shows step k of ``total``, the
    recent mean loss and the rate in steps per second."""

    def __init__(self, total, initial):
        from tqdm.auto import tqdm
        self.k = int(initial)
        self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                        smoothing=0.1, mininterval=0.5)

    def update(self, k, loss, rate):
        self.bar.update(k - self.k)
        self.k = k
        self.bar.set_postfix_str(f"loss {loss:.4f}, {rate:,.0f} steps/s", refresh=False)

    def close(self):
        self.bar.close()


def bar_factory(progress):
    """``train.run``'s ``progress`` argument from fit's: True -> a tqdm bar, False or
    None -> no bar, a callable(total, initial) -> itself."""
    if callable(progress):
        return progress
    return TqdmBar if progress else None
