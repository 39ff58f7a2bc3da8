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
