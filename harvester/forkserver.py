"""The fork server the worker processes are started from, and what it loads for them.

Imports nothing of harvester's own: the `harvester` command starts the server before it
loads the CLI (see `__main__`), so the two load at once, on two cores.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import signal
import threading

# Loaded once by the server, then shared by every worker it forks: the workers' code, and
# what their first photo would load otherwise: the DCT that imagehash's pHash imports (a
# quarter of a second in each worker), and the image formats Pillow's first open imports
# (Image.preinit). A module that is not there is skipped.
PRELOAD = ["harvester.workers", "scipy.fftpack", "PIL.BmpImagePlugin", "PIL.GifImagePlugin",
           "PIL.JpegImagePlugin", "PIL.PpmImagePlugin", "PIL.PngImagePlugin"]


def context() -> multiprocessing.context.ForkServerContext:
    """forkserver, not fork: workers inherit no open files (the run's lock) and no threads.

    Its server is started first, if it is not running (see `start`).
    """
    start()
    return multiprocessing.get_context("forkserver")  # type: ignore[return-value]


def start() -> None:
    """Start the server now, if it is not running, rather than with the first worker;
    returns without waiting for it to load `PRELOAD`.

    The server starts with Ctrl-C ignored, and so does every process it forks: a Ctrl-C
    reaches the whole process group, and the harvest's process decides what stops (a
    server still loading `PRELOAD` would die with a traceback). It is ignored here only
    while the server starts, and blocked meanwhile: a Ctrl-C then waits (Linux keeps a
    blocked signal even while it is ignored), and reaches this process once the server is up.
    """
    multiprocessing.get_context("forkserver").set_forkserver_preload(PRELOAD)
    if threading.current_thread() is not threading.main_thread():
        multiprocessing.forkserver.ensure_running()  # handlers are the main thread's to set
        return
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited by the server
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
