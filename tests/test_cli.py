"""The command line as a user drives it: messages and exit codes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harvester import pipeline
from harvester.db import open_database
from tests.conftest import KEYS, write_config


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return write_config(tmp_path)


def test_run_builds_the_dataset_and_says_where(cli, config_path, flickr):
    result = cli("run", "-c", str(config_path))
    assert result.exit_code == 0, result.output
    assert "Dataset ready in" in result.stdout and "30 photos (cat 20, dog 10)" in result.stdout
    assert ("Flickr API calls this run: 3 (flickr.photos.licenses.getInfo 1, "
            "flickr.photos.search 2)") in result.stdout
    assert (config_path.parent / "outputs" / "dataset.tgz").exists()


def test_secrets_never_reach_the_database_logs_or_artifacts(cli, config_path, flickr):
    secrets = {"API_KEY": "KEY-5f3a9c1e77", "API_SECRET": "SECRET-0b2d4e6f88"}
    flickr.fail_api(times=2)  # a retry, logged with -v
    result = cli("-v", "run", "-c", str(config_path), env={**KEYS, **secrets})
    assert result.exit_code == 0 and "retry" in result.output
    written = [path for path in (config_path.parent / "outputs").rglob("*") if path.is_file()]
    assert any(path.name == "harvest.db" for path in written)
    for secret in secrets.values():
        assert secret not in result.output
        for path in written:
            assert secret.encode() not in path.read_bytes(), path


def test_a_config_error_exits_2_naming_the_key_and_writes_nothing(cli, tmp_path, flickr):
    path = write_config(tmp_path, classes=[{"name": "../escape", "count": 5}])
    result = cli("run", "-c", str(path))
    assert result.exit_code == 2
    assert "config error: classes[0].name:" in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "outputs").exists() and flickr.api_calls.total() == 0


def test_a_missing_config_file_exits_2(cli, tmp_path):
    result = cli("run", "-c", str(tmp_path / "absent.yaml"))
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_missing_credentials_exit_2_and_say_which(cli, config_path, flickr):
    result = cli("run", "-c", str(config_path), env={"API_KEY": "", "API_SECRET": "x"})
    assert result.exit_code == 2
    assert "API_KEY not set" in result.stderr
    assert not (config_path.parent / "outputs").exists()


def test_flickr_down_exits_1_and_tells_how_to_continue(cli, config_path, flickr):
    flickr.fail_api(times=6, code=None, status=503)
    result = cli("run", "-c", str(config_path))
    assert result.exit_code == 1
    assert "stopped: flickr.photos.licenses.getInfo failed 6 times" in result.stderr
    assert f"harvester resume -c {config_path}" in result.stderr
    assert "Traceback" not in result.output
    resumed = cli("resume", "-c", str(config_path))
    assert resumed.exit_code == 0 and "30 photos" in resumed.stdout


def test_a_bad_key_exits_1_saying_what_to_fix(cli, config_path, flickr):
    flickr.api_faults.append((200, {"stat": "fail", "code": 100, "message": "Invalid API Key"}))
    result = cli("run", "-c", str(config_path))
    assert result.exit_code == 1 and "check API_KEY and API_SECRET" in result.stderr


def test_ctrl_c_stops_cleanly_with_exit_130(cli, config_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "complete_stages", interrupted)
    result = cli("run", "-c", str(config_path))
    assert result.exit_code == 130
    assert "interrupted." in result.stderr and "harvester resume" in result.stderr


def test_resume_with_nothing_to_resume_exits_2(cli, config_path):
    result = cli("resume", "-c", str(config_path))
    assert result.exit_code == 2 and "no harvest to resume" in result.stderr


def test_status_reports_every_state_per_class_as_a_table_or_json(cli, config_path, flickr):
    assert cli("status", "-c", str(config_path)).exit_code == 2  # no harvest yet
    cli("run", "-c", str(config_path))
    table = cli("status", "-c", str(config_path))
    assert table.exit_code == 0 and "cat" in table.stdout and "dog" in table.stdout
    report = json.loads(cli("status", "-c", str(config_path), "--json").stdout)
    cat = report["classes"]["cat"]
    assert cat["wanted"] == 20 and cat["in_dataset"] == 20 and cat["left"] == 0
    assert cat["states"]["assigned"] == 20 and set(cat["states"]) == {
        "found", "downloaded", "resized", "assigned", "failed", "rejected"}
    assert report["api_calls"] == {"flickr.photos.licenses.getInfo": 1,
                                   "flickr.photos.search": 2}
    assert [(run["command"], run["outcome"], run["api_calls"]) for run in report["runs"]] == [
        ("run", "complete", report["api_calls"])]
    assert report["quota"] == {"calls_per_hour": 3600, "calls_last_hour": 3}
    cli("run", "-c", str(config_path))  # nothing left to do: no calls
    table = cli("status", "-c", str(config_path))
    assert "run 1 (run, " in table.stdout and "complete): flickr.photos.licenses.getInfo 1, " \
        "flickr.photos.search 2" in table.stdout
    assert "complete): no calls" in table.stdout
    assert "Quota: 3 of 3600 calls used in the last hour" in table.stdout
    summary = (config_path.parent / "outputs" / "summary.txt").read_text()
    assert "run 1 (run, " in summary and "run 2 (run, " in summary
    assert "complete): no calls" in summary


def test_export_rebuilds_artifacts_without_the_network(cli, config_path, flickr):
    assert cli("export", "-c", str(config_path)).exit_code == 2
    cli("run", "-c", str(config_path))
    split = config_path.parent / "outputs" / "train_test_split.json"
    split.unlink()
    calls = flickr.api_calls.total() + flickr.image_requests.total()
    result = cli("export", "-c", str(config_path), env={})
    assert result.exit_code == 0 and split.exists()
    assert flickr.api_calls.total() + flickr.image_requests.total() == calls


def test_every_command_and_option_has_help(cli):
    for command in ("run", "resume", "status", "export"):
        result = cli(command, "--help")
        assert result.exit_code == 0 and "--config" in result.stdout
    assert "--json" in cli("status", "--help").stdout


def test_an_unreachable_image_host_exits_1_and_tells_how_to_continue(
    cli, config_path, flickr, universe
):
    for photo_id in universe.photo_ids("cat") + universe.photo_ids("dog"):
        flickr.image_faults[photo_id] = (503, b"down")
    result = cli("run", "-c", str(config_path))
    assert result.exit_code == 1
    assert "downloads failed one after another" in result.stderr
    assert "harvester resume" in result.stderr and "Traceback" not in result.output


def test_a_second_run_on_a_busy_folder_exits_2(cli, config_path, flickr):
    from harvester.files import exclusive

    with exclusive(config_path.parent / "outputs" / "harvest.lock"):
        result = cli("run", "-c", str(config_path))
    assert result.exit_code == 2 and "another harvester is already working" in result.stderr


@pytest.mark.parametrize("command", ["run", "resume", "status", "export"])
def test_a_database_harvester_cannot_read_exits_2_and_is_left_alone(cli, config_path, command):
    database = config_path.parent / "outputs" / "harvest.db"
    database.parent.mkdir()
    database.write_bytes(b"not a database at all, " * 100)
    result = cli(command, "-c", str(config_path))
    assert result.exit_code == 2, result.output
    assert "is not a harvest database" in result.stderr and "Traceback" not in result.output
    assert database.read_bytes() == b"not a database at all, " * 100


def test_a_database_of_another_layout_is_refused_not_misread(cli, config_path):
    import sqlite3

    database = config_path.parent / "outputs" / "harvest.db"
    database.parent.mkdir()
    with sqlite3.connect(database) as old:
        old.execute("CREATE TABLE photos (photo_id TEXT PRIMARY KEY)")
    result = cli("run", "-c", str(config_path))
    assert result.exit_code == 2
    assert "made by another version of harvester" in result.stderr
    assert "set a new output_dir" in result.stderr


def test_status_and_help_load_none_of_what_harvests(tmp_path):
    # Users run `harvester status` again and again while a harvest runs: it starts in half
    # the time when requests, flickrapi, Pillow and the worker code stay unloaded.
    config = write_config(tmp_path)
    open_database(tmp_path / "outputs" / "harvest.db").close()  # an empty harvest
    harvesting = ["requests", "flickrapi", "PIL", "imagehash", "cv2", "harvester.pipeline",
                  "harvester.workers", "harvester.export"]
    script = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from harvester.cli import app\n"
        "for args in sys.argv[1:]:\n"
        "    result = CliRunner().invoke(app, args.split('|'))\n"
        "    assert result.exit_code == 0, result.output\n"
        f"print(sorted(name for name in {harvesting!r} if name in sys.modules))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script, f"status|-c|{config}", "--help", "status|--help"],
        capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "['harvester.export']"  # for the runs' lines, only in status


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")
def test_the_command_leaves_no_idle_thread_spinning(tmp_path):
    # numpy's OpenBLAS would start a thread per core, which spins a tenth of a second of
    # CPU before it sleeps: a third of what `harvester status` costs the machine.
    config = write_config(tmp_path)
    open_database(tmp_path / "outputs" / "harvest.db").close()
    script = (
        "import os, sys\n"
        "from harvester.__main__ import main\n"
        f"sys.argv = ['harvester', 'status', '-c', {str(config)!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as end:\n"
        "    assert not end.code, end.code\n"
        "print(len(os.listdir('/proc/self/task')), 'numpy' in sys.modules)\n"
    )
    env = {name: value for name, value in os.environ.items()
           if name not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    threads, numpy = subprocess.run([sys.executable, "-c", script], capture_output=True,
                                    text=True, check=True, env=env).stdout.split()[-2:]
    assert numpy == "True"  # sqlite-utils loads it
    assert threads == "1"
