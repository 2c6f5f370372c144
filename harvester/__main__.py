"""The `harvester` command (and `python -m harvester`): the CLI, without what it never uses."""

import gc
import os
import signal
import sys

# The commands that start worker processes.
HARVESTING = {"run", "resume", "demo"}


def main() -> None:
    # A Ctrl-C while the CLI loads (half a second) would end the import with a traceback:
    # it waits, blocked, until the CLI can stop cleanly (cli.main unblocks it).
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    # sqlite-utils imports pandas whenever it is installed (a third of a second and 60 MB
    # at every start) for features harvester does not use: the command goes without it.
    sys.modules.setdefault("pandas", None)  # type: ignore[arg-type]
    # numpy and scipy each bring an OpenBLAS, which starts a thread per core when loaded,
    # and that thread spins for about 0.1 s of CPU before it sleeps: 0.11 s of every
    # command's CPU, and 0.25 s of a harvest's start, in the command and the fork server
    # (whose processes inherit this). harvester does no linear algebra: pHash's DCT is
    # pocketfft's, and OpenCV's resize has threads of its own (one, see images.py).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if HARVESTING & set(sys.argv[1:]) and "--help" not in sys.argv:
        # The workers' fork server loads their code on another core while this process
        # loads the CLI: the workers start about 0.4 s sooner.
        from harvester import forkserver

        forkserver.start()
    from harvester.cli import main as cli_main

    try:
        cli_main()
    finally:
        # What the command made goes with the process: the interpreter's last garbage
        # collection need not walk it all (about 0.07 s of every command's exit, measured).
        # atexit handlers still run, and every file harvester writes is closed by now.
        gc.freeze()


if __name__ == "__main__":
    main()
