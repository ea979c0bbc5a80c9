"""Ids are 26-character Crockford base32 strings that sort in creation order."""

from __future__ import annotations

import re
import threading
import time

from storage.ids import id_time_ms, new_id

CROCKFORD = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")


def test_ids_are_crockford_base32_with_a_millisecond_timestamp():
    before = time.time_ns() // 1_000_000
    value = new_id()
    after = time.time_ns() // 1_000_000
    assert CROCKFORD.fullmatch(value)
    assert before <= id_time_ms(value) <= after


def test_ids_made_in_a_burst_are_unique_and_increasing():
    values = [new_id() for _ in range(5000)]
    assert values == sorted(values)
    assert len(set(values)) == len(values)


def test_ids_from_many_threads_are_unique():
    made: list[list[str]] = [[] for _ in range(8)]

    def make(bucket: list[str]) -> None:
        bucket.extend(new_id() for _ in range(1000))

    threads = [threading.Thread(target=make, args=(bucket,)) for bucket in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [value for bucket in made for value in bucket]
    assert len(set(everything)) == len(everything)
    for bucket in made:
        assert bucket == sorted(bucket)
