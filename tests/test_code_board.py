"""CodeBoard: waits for frames resolve exactly when the write that completes them lands."""

import asyncio

import numpy as np

from tokgen.generation.sampler import CodeBoard


def codes(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.int64)


def test_a_wait_resolves_when_its_range_is_complete_and_not_before():
    async def scenario():
        board = CodeBoard([codes(4), codes(0)], [16, 32])
        await board.wait_known(0, 0, 4)  # known from the start: no wait
        upper = asyncio.create_task(board.wait_known(0, 4, 12))
        other_level = asyncio.create_task(board.wait_known(1, 0, 8))
        await asyncio.sleep(0)
        await board.write(0, 4, codes(4))  # half of the range
        await asyncio.sleep(0)
        half = upper.done()
        await board.write(0, 8, codes(4))  # the rest
        await asyncio.sleep(0)
        return half, upper.done(), other_level.done()

    half, whole, other_done = asyncio.run(scenario())
    assert not half and whole
    assert not other_done  # writes to level 0 do not resolve a wait on level 1


def test_waits_in_any_order_and_cancelled_ones_are_dropped():
    async def scenario():
        board = CodeBoard([codes(0)], [12])
        late = asyncio.create_task(board.wait_known(0, 8, 12))
        early = asyncio.create_task(board.wait_known(0, 0, 4))
        gone = asyncio.create_task(board.wait_known(0, 0, 12))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.sleep(0)
        await board.write(0, 8, codes(4))  # written out of order, as parallel segments do
        await asyncio.sleep(0)
        first = (late.done(), early.done())
        await board.write(0, 0, codes(8))
        await asyncio.sleep(0)
        return first, early.done(), gone.cancelled(), board._waits[0]

    first, early_done, cancelled, left = asyncio.run(scenario())
    assert first == (True, False) and early_done and cancelled
    assert left == []  # nothing is kept waiting, the cancelled wait included


def test_the_primes_codes_given_as_placeholders_are_waited_for():
    """Prime codes given as -1 (a stream's lower levels, still being encoded) are not known
    until written; ``prime_codes`` waits for them at every level it is asked for."""

    async def scenario():
        board = CodeBoard([codes(2), np.full(4, -1)], [8, 16])
        top = await board.prime_codes(1)  # the top level's are there
        both = asyncio.create_task(board.prime_codes(2))
        await asyncio.sleep(0)
        before = (both.done(), list(board.known_frames))
        await board.write(1, 0, codes(4) + 10)
        return top, before, await both, board.known_frames

    top, before, both, after = asyncio.run(scenario())
    assert [t.tolist() for t in top] == [[0, 1]]
    assert before == (False, [2, 0])
    assert [b.tolist() for b in both] == [[0, 1], [10, 11, 12, 13]] and after == [2, 4]
