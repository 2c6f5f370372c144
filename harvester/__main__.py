"""The `harvester` command (and `python -m harvester`): the CLI, without what it never uses."""

import sys


def main() -> None:
    # sqlite-utils imports pandas whenever it is installed (a third of a second and 60 MB
    # at every start) for features harvester does not use: the command goes without it.
    sys.modules.setdefault("pandas", None)  # type: ignore[arg-type]
    from harvester.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
