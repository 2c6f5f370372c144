"""`harvester demo`: the whole pipeline, offline, against the built-in Flickr stand-in."""

from __future__ import annotations

import socket
from pathlib import Path

import yaml

from harvester.config import load_config
from harvester.errors import UsageError
from harvester.pipeline import Credentials, Outcome, harvest_locked, only_run
from harvester.progress import ProgressSink
from harvester.standin import StandIn, Universe

CONFIG_FILE = "config.yaml"
PORT_FILE = ".standin-port"
# Three classes the stand-in draws in well-separated hues, so the demo dataset is learnable.
DEMO_CONFIG = {
    "output_dir": ".",
    "classes": [
        {"name": "sunset", "count": 300, "tags": ["sunset"]},
        {"name": "forest", "count": 300, "tags": ["forest"]},
        {"name": "ocean", "count": 300, "tags": ["ocean"]},
    ],
    "train_test_split": {"seed": 42, "type": "proportional", "test_size": 0.1},
    "flickr": {"license": [4, 5, 9, 10]},
}
DEMO_UNIVERSE = {"seed": 2026, "photos_per_tag": {"sunset": 2400, "forest": 2400, "ocean": 2400},
                 "overlap": 0.02}
DEMO_KEY = "demo-key"


class DemoFolderUnusable(UsageError):
    """The folder given for the demo cannot hold it without harming what is there."""


def run_demo(folder: Path, sink: ProgressSink) -> Outcome:
    """Harvest the demo dataset into `folder`; running it again continues or re-exports it."""
    config_path = prepare_folder(folder)
    config = load_config(config_path)
    with only_run(config):
        universe = Universe(**DEMO_UNIVERSE, api_key=DEMO_KEY)
        with StandIn(universe, port=saved_port(folder)) as stand_in:
            # Photo URLs that an interrupted demo recorded name this port: keep it for next time.
            (folder / PORT_FILE).write_text(str(stand_in.port))
            credentials = Credentials(DEMO_KEY, "demo-secret", stand_in.rest_url)
            return harvest_locked(config, credentials, "run", sink)


def prepare_folder(folder: Path) -> Path:
    """The demo's config in `folder`, written if new. Refuses a folder holding anything else."""
    config_path = folder / CONFIG_FILE
    if folder.exists() and not folder.is_dir():
        raise DemoFolderUnusable(f"{folder} is a file, not a folder")
    if config_path.exists():
        try:
            mine = yaml.safe_load(config_path.read_text()) == DEMO_CONFIG
        except (OSError, yaml.YAMLError):
            mine = False
        if not mine:
            raise DemoFolderUnusable(
                f"{config_path} is not the demo's config: give the demo a folder of its own"
            )
        return config_path
    if folder.exists() and any(folder.iterdir()):
        raise DemoFolderUnusable(f"{folder} is not empty: give the demo a folder of its own")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        config_path.write_text(
            "# Written by `harvester demo`: the demo's config, against the offline stand-in.\n"
            + yaml.safe_dump(DEMO_CONFIG, sort_keys=False)
        )
    except OSError as error:
        raise DemoFolderUnusable(f"cannot write the demo into {folder}: {error}") from None
    return config_path


def saved_port(folder: Path) -> int:
    """The port an earlier demo in `folder` served on (its photo URLs name it), or 0 for any."""
    try:
        port = int((folder / PORT_FILE).read_text())
    except (OSError, ValueError):
        return 0
    with socket.socket() as probe:
        # As the stand-in's server does: the old connections' TIME_WAIT must not count as use.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise DemoFolderUnusable(
                f"port {port}, which the unfinished demo in {folder} recorded its photo URLs "
                "with, is in use: free it, or give the demo a new folder"
            ) from None
    return port
