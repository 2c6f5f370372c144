"""`harvester demo`: the whole pipeline, offline, against the built-in Flickr stand-in."""

from __future__ import annotations

from pathlib import Path

import yaml

from harvester.config import load_config
from harvester.pipeline import Credentials, Outcome, harvest
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
    "flickr": {"licenses": [4, 5, 9, 10]},
}
DEMO_UNIVERSE = {"seed": 2026, "photos_per_tag": {"sunset": 2400, "forest": 2400, "ocean": 2400},
                 "overlap": 0.02}
DEMO_KEY = "demo-key"


def run_demo(folder: Path, sink: ProgressSink | None = None) -> Outcome:
    """Harvest the demo dataset into `folder`; running it again continues or re-exports it."""
    folder.mkdir(parents=True, exist_ok=True)
    config_path = folder / CONFIG_FILE
    if not config_path.exists():
        config_path.write_text(
            "# Written by `harvester demo`: the demo's config, against the offline stand-in.\n"
            + yaml.safe_dump(DEMO_CONFIG, sort_keys=False)
        )
    config = load_config(config_path)
    universe = Universe(**DEMO_UNIVERSE, api_key=DEMO_KEY)
    with StandIn(universe, port=_previous_port(folder)) as stand_in:
        # Image URLs recorded by an interrupted demo name the port it ran on.
        (folder / PORT_FILE).write_text(str(stand_in.port))
        credentials = Credentials(DEMO_KEY, "demo-secret", stand_in.rest_url)
        return harvest(config, credentials, command="run", sink=sink)


def _previous_port(folder: Path) -> int:
    try:
        port = int((folder / PORT_FILE).read_text())
    except (OSError, ValueError):
        return 0
    return port if _free(port) else 0


def _free(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
