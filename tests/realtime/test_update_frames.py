"""One ``update`` frame is encoded once for every socket with the same batch."""

from __future__ import annotations

import json

from realtime.consumers import UpdateFrames


def test_the_same_task_states_are_encoded_once() -> None:
    frames = UpdateFrames()
    first, second = {"id": "a", "status": "running"}, {"id": "b", "status": "queued"}
    text = frames.encode([first, second])
    assert json.loads(text) == {"type": "update", "tasks": [first, second]}
    assert frames.encode([first, second]) is text  # reused, not re-encoded


def test_other_states_order_or_length_make_a_new_frame() -> None:
    frames = UpdateFrames()
    first, second = {"id": "a", "status": "running"}, {"id": "b", "status": "queued"}
    frames.encode([first, second])
    # Equal content in other objects: encoded anew (identity decides), same text.
    copy = frames.encode([dict(first), dict(second)])
    assert json.loads(copy)["tasks"] == [first, second]
    later = {"id": "a", "status": "succeeded"}
    assert json.loads(frames.encode([later, second]))["tasks"] == [later, second]
    assert json.loads(frames.encode([second, later]))["tasks"] == [second, later]
    assert json.loads(frames.encode([second]))["tasks"] == [second]
    assert json.loads(frames.encode([]))["tasks"] == []


def test_the_first_frame_is_encoded_even_for_an_empty_batch() -> None:
    assert json.loads(UpdateFrames().encode([])) == {"type": "update", "tasks": []}
