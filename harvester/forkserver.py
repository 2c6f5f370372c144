"""The fork server the worker processes are started from, and what it loads for them.

Imports nothing of harvester's own: the `harvester` command starts the server before it
loads the CLI (see `__main__`), so the two load at once, on two cores.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver

# Loaded once by the server, then shared by every worker it forks: the workers' code, and
# what their first photo would load otherwise: the DCT that imagehash's pHash imports (a
# quarter of a second in each worker), and the image formats Pillow's first open imports
# (Image.preinit). A module that is not there is skipped.
PRELOAD = ["harvester.workers", "scipy.fftpack", "PIL.BmpImagePlugin", "PIL.GifImagePlugin",
           "PIL.JpegImagePlugin", "PIL.PpmImagePlugin", "PIL.PngImagePlugin"]


def context() -> multiprocessing.context.ForkServerContext:
    """forkserver, not fork: workers inherit no open files (the run's lock) and no threads."""
    forkserver = multiprocessing.get_context("forkserver")
    forkserver.set_forkserver_preload(PRELOAD)
    return forkserver  # type: ignore[return-value]


def start() -> None:
    """Start the server now, rather than with the first worker; returns without waiting for
    it to load `PRELOAD`."""
    context()
    multiprocessing.forkserver.ensure_running()
