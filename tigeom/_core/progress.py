"""One progress bar (rich) for the library's long loops: a context manager yielding ``advance``."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def progress_bar(enabled: bool, total: int, label: str):
    """``with progress_bar(on, n, "name") as advance: ... advance(description=None)``.
    Disabled, ``advance`` does nothing; the bar is closed however the block ends."""
    if not enabled:
        yield lambda description=None: None
        return
    from rich.progress import Progress

    bar = Progress(transient=False)
    bar.start()
    task = bar.add_task(label, total=total)

    def advance(description: str | None = None):
        if description is None:
            bar.update(task, advance=1)
        else:
            bar.update(task, advance=1, description=description)

    try:
        yield advance
    finally:
        bar.stop()
