"""A helper process: what it returns, what it raises, and how it stops."""

import os
import signal
import time
from pathlib import Path

import pytest

from harvester.files import replacing
from harvester.helper import Helper, HelperFailed
from tests.conftest import watchdog


def test_a_helper_returns_what_its_function_returns_from_another_process():
    with Helper(os.getpid) as helper:
        assert helper.result() != os.getpid()
        assert helper.result() == helper.result()  # asked again, answered again


def test_a_file_error_in_a_helper_is_raised_here_as_itself(tmp_path):
    with Helper(os.listdir, str(tmp_path / "missing")) as helper, \
            pytest.raises(FileNotFoundError) as raised:
        helper.result()
    assert raised.value.filename == str(tmp_path / "missing")


def test_any_other_error_in_a_helper_stops_the_run_with_its_text():
    with Helper(int, "twelve") as helper, pytest.raises(HelperFailed, match=r"ValueError: "):
        helper.result()


def test_a_helper_that_dies_without_answering_is_reported():
    with Helper(os._exit, 3) as helper, pytest.raises(HelperFailed, match="exit code 3"):
        helper.result()


def write_slowly(target: str) -> None:
    """Start writing `target` and take a minute over it."""
    with replacing(Path(target)) as handle:
        handle.write(b"half")
        handle.flush()
        time.sleep(60)


def test_a_helper_left_by_an_error_stops_at_once_and_removes_its_partial_file(tmp_path):
    target = tmp_path / "document.json"
    with watchdog(30, "the helper was not stopped"), pytest.raises(KeyboardInterrupt), \
            Helper(write_slowly, str(target)):
        while not list(tmp_path.glob(".document.json.*.part")):
            time.sleep(0.01)
        raise KeyboardInterrupt  # as a Ctrl-C in this process would
    assert list(tmp_path.iterdir()) == []


def ctrl_c_handler() -> object:
    return signal.getsignal(signal.SIGINT)


def test_a_ctrl_c_reaches_this_process_but_not_the_fork_servers():
    # It reaches the whole process group: a fork server still loading its modules would die
    # with a traceback, and a helper would stop before this process decides to stop it.
    with Helper(ctrl_c_handler) as helper:
        assert helper.result() == signal.SIG_IGN
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
