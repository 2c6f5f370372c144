"""The two kinds of trouble that stop a command; the CLI gives each its message and exit code.

Each module raises its own exception (`NoHarvest`, `ImageHostFailing`, ...), made a kind of
one of these, so the CLI can tell them apart without loading the modules that raise them:
`harvester status` need not load what a harvest does.
"""


class UsageError(Exception):
    """The command cannot do what was asked of it here (no harvest in that folder, another
    process on it, a folder or database it cannot use): exit 2, and nothing was changed."""


class Stopped(Exception):
    """Work stopped part of the way, for a cause outside the command's hands (Flickr, the
    image host, a process that died, a file changed under it): exit 1. Everything done
    before it is kept, and resume continues."""
