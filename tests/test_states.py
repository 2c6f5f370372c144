import itertools

import pytest
from sqlite_utils import Database

from harvester.db import open_database
from harvester.states import (
    TRANSITIONS,
    IllegalTransition,
    State,
    dataset_window,
    move,
    move_all,
    record_found,
)


def found(photo_id: str, order: int, class_: str = "cat", url: str | None = "https://x/1.jpg"):
    return {"photo_id": photo_id, "class_": class_, "found_order": order, "search_tags": class_,
            "url": url, "reason": None if url else "no_usable_size"}


@pytest.fixture
def db() -> Database:
    return open_database(None)


def state_of(db: Database, photo_id: str) -> str:
    return db.execute("SELECT state FROM photos WHERE photo_id = ?", [photo_id]).fetchone()[0]


def put_in_state(db: Database, photo_id: str, state: State) -> None:
    record_found(db, [found(photo_id, 1)])
    path = {State.FOUND: [], State.DOWNLOADED: [State.DOWNLOADED],
            State.RESIZED: [State.DOWNLOADED, State.RESIZED],
            State.ASSIGNED: [State.DOWNLOADED, State.RESIZED, State.ASSIGNED],
            State.FAILED: [State.FAILED], State.REJECTED: [State.REJECTED]}[state]
    current = State.FOUND
    for step in path:
        assert move(db, photo_id, current, step)
        current = step


# DESIGN.md's diagram, written out: every stage moves forward one step, or out to
# failed or rejected; assigned, failed and rejected are final.
F, D, R, A = State.FOUND, State.DOWNLOADED, State.RESIZED, State.ASSIGNED
LEGAL = [(F, D), (D, R), (R, A), (F, State.FAILED), (D, State.FAILED), (R, State.FAILED),
         (F, State.REJECTED), (D, State.REJECTED), (R, State.REJECTED)]
ILLEGAL = [pair for pair in itertools.product(State, State) if pair not in LEGAL]


@pytest.mark.parametrize(("source", "target"), LEGAL)
def test_every_legal_transition_moves_the_photo(db: Database, source: State, target: State):
    put_in_state(db, "1", source)
    assert move(db, "1", source, target)
    assert state_of(db, "1") == target


@pytest.mark.parametrize(("source", "target"), ILLEGAL)
def test_every_illegal_transition_is_refused(db: Database, source: State, target: State):
    put_in_state(db, "1", source)
    with pytest.raises(IllegalTransition):
        move(db, "1", source, target)
    assert state_of(db, "1") == source


def test_the_transition_table_is_exactly_the_designed_diagram():
    table = {(source, target) for source, targets in TRANSITIONS.items() for target in targets}
    assert table == set(LEGAL)


def test_a_move_from_the_wrong_state_changes_nothing(db: Database):
    put_in_state(db, "1", State.DOWNLOADED)
    assert not move(db, "1", State.FOUND, State.DOWNLOADED, source_path="x")
    row = db.execute("SELECT state, source_path FROM photos").fetchone()
    assert row == ("downloaded", None)


def test_a_move_sets_its_fields_and_refuses_unknown_columns(db: Database):
    put_in_state(db, "1", State.FOUND)
    assert move(db, "1", State.FOUND, State.FAILED, reason="http_404", attempts=3)
    assert db.execute("SELECT reason, attempts FROM photos").fetchone() == ("http_404", 3)
    put_in_state(db, "2", State.FOUND)
    with pytest.raises(IllegalTransition, match="cannot set class"):
        move(db, "2", State.FOUND, State.DOWNLOADED, **{"class": "dog"})


def test_moving_many_moves_only_those_in_the_source_state_and_counts_them(db: Database):
    for number in range(1200):  # over two of its 500-photo statements
        put_in_state(db, str(number), State.RESIZED if number % 3 else State.FAILED)
    moved = move_all(db, [str(number) for number in range(1200)], State.RESIZED,
                     State.ASSIGNED, split="test")
    assert moved == 800
    assert db.execute("SELECT state, split, count(*) FROM photos GROUP BY state, split "
                      "ORDER BY state").fetchall() == [("assigned", "test", 800),
                                                       ("failed", None, 400)]
    with pytest.raises(IllegalTransition):
        move_all(db, ["1"], State.ASSIGNED, State.RESIZED)
    with pytest.raises(IllegalTransition, match="cannot set class"):
        move_all(db, ["1"], State.RESIZED, State.FAILED, **{"class": "dog"})
    assert move_all(db, [], State.RESIZED, State.ASSIGNED, split="test") == 0


def test_schema_refuses_a_state_outside_the_machine(db: Database):
    put_in_state(db, "1", State.FOUND)
    with pytest.raises(Exception, match="CHECK constraint"):
        db.execute("UPDATE photos SET state = 'downloading'")


def test_a_photo_is_recorded_once_however_often_its_class_finds_it(db: Database):
    assert record_found(db, [found("1", 1), found("2", 2)]) == 2
    assert record_found(db, [found("2", 3), found("3", 4)]) == 1
    rows = db.execute("SELECT photo_id, state FROM photos ORDER BY photo_id").fetchall()
    assert rows == [("1", "found"), ("2", "found"), ("3", "found")]


def test_a_photo_found_for_two_classes_leaves_the_dataset_as_ambiguous(db: Database):
    record_found(db, [found("1", 1), found("2", 2)])
    move(db, "2", State.FOUND, State.DOWNLOADED)
    assert record_found(db, [found("1", 3, class_="dog"), found("2", 4, class_="dog")]) == 0
    rows = db.execute("SELECT photo_id, class, state, reason FROM photos").fetchall()
    assert rows == [("1", "cat", "rejected", "ambiguous"), ("2", "cat", "rejected", "ambiguous")]


def test_a_photo_without_a_usable_size_is_recorded_rejected(db: Database):
    record_found(db, [found("1", 1, url=None)])
    row = db.execute("SELECT state, reason FROM photos").fetchone()
    assert row == ("rejected", "no_usable_size")


def test_the_dataset_window_slides_past_lost_photos(db: Database):
    record_found(db, [found(str(n), n) for n in range(1, 6)])
    assert [p.photo_id for p in dataset_window(db, "cat", 3)] == ["1", "2", "3"]
    move(db, "2", State.FOUND, State.FAILED, reason="http_404")
    assert [p.photo_id for p in dataset_window(db, "cat", 3)] == ["1", "3", "4"]


def test_the_progress_view_counts_photos_by_class_and_state(db: Database):
    record_found(db, [found("1", 1), found("2", 2), found("3", 3, class_="dog")])
    move(db, "1", State.FOUND, State.DOWNLOADED)
    rows = [tuple(row.values()) for row in db.query("SELECT * FROM progress")]
    assert rows == [("cat", "downloaded", 1), ("cat", "found", 1), ("dog", "found", 1)]
