"""The stored forms streams/keys.py names."""

from __future__ import annotations

import itertools

from streams import keys


def test_record_marks_tell_every_record_apart_and_are_plain_integers() -> None:
    partitions = (0, 1, 2, 511, 2**19 - 1)
    offsets = (0, 1, 2, 1023, 1024, 10**12)
    marks = [keys.record_mark(t, p, o) for t, p, o in itertools.product(keys.RECORD_TOPICS, partitions, offsets)]
    assert len(set(marks)) == len(marks)
    assert all(str(int(m)) == m for m in marks)  # canonical: Redis keeps it as an integer in a listpack


def test_a_record_mark_never_holds_the_separator_of_the_marks_list() -> None:
    assert "|" not in keys.record_mark("tickets", 7, 123456789)
