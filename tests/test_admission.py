"""Admission: bounded slots and queue, priority order without starvation, cancellation."""

from __future__ import annotations

import asyncio

import pytest

from tokgen.serve.admission import Admission, Busy, due_time


def test_due_time_puts_high_first_but_an_old_low_call_ahead_of_a_new_high_one():
    assert due_time("high", 100.0) < due_time("normal", 100.0) < due_time("low", 100.0)
    assert due_time("low", 0.0) < due_time("high", 21.0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def hold(admission: Admission, priority, order: list, name: str, release: asyncio.Event):
    async with admission.slot(priority):
        order.append(name)
        await release.wait()


def test_slots_then_queue_then_busy_and_waiters_served_by_due_time():
    async def scenario():
        clock = FakeClock()
        admission = Admission(max_active=1, max_queued=3, clock=clock)
        order: list[str] = []
        gates = {name: asyncio.Event() for name in ("first", "low", "normal", "high")}
        tasks = [asyncio.create_task(hold(admission, "normal", order, "first", gates["first"]))]
        await asyncio.sleep(0)
        for name in ("low", "normal", "high"):  # arrive in this order, 1 s apart
            clock.now += 1
            tasks.append(asyncio.create_task(hold(admission, name, order, name, gates[name])))
            await asyncio.sleep(0)
        assert (admission.active, admission.waiting) == (1, 3)
        with pytest.raises(Busy):
            async with admission.slot("high"):
                pass
        for name in ("first", "high", "normal", "low"):
            gates[name].set()
            await asyncio.sleep(0.01)
        await asyncio.gather(*tasks)
        assert order == ["first", "high", "normal", "low"]
        assert (admission.active, admission.waiting) == (0, 0)

    asyncio.run(scenario())


def test_a_cancelled_waiter_leaves_the_queue_and_a_cancelled_holder_frees_its_slot():
    async def scenario():
        admission = Admission(max_active=1, max_queued=1)
        order: list[str] = []
        release = asyncio.Event()
        holder = asyncio.create_task(hold(admission, "normal", order, "holder", release))
        await asyncio.sleep(0)
        waiter = asyncio.create_task(hold(admission, "normal", order, "waiter", release))
        await asyncio.sleep(0)
        assert admission.waiting == 1
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        assert admission.waiting == 0 and admission.active == 1
        holder.cancel()
        await asyncio.gather(holder, return_exceptions=True)
        assert admission.active == 0
        async with admission.slot():  # free again
            assert admission.active == 1
        assert order == ["holder"]

    asyncio.run(scenario())


def test_a_slot_handed_to_a_waiter_that_is_cancelled_at_once_passes_on():
    async def scenario():
        admission = Admission(max_active=1, max_queued=2)
        order: list[str] = []
        release = asyncio.Event()
        holder = asyncio.create_task(hold(admission, "normal", order, "holder", release))
        await asyncio.sleep(0)
        second = asyncio.create_task(hold(admission, "normal", order, "second", release))
        third = asyncio.create_task(hold(admission, "normal", order, "third", release))
        await asyncio.sleep(0)
        release.set()
        await asyncio.sleep(0)  # the holder leaves: the slot is handed to "second" ...
        second.cancel()  # ... which is cancelled before it runs
        await asyncio.gather(holder, second, third, return_exceptions=True)
        assert order == ["holder", "third"] and admission.active == 0 and admission.waiting == 0

    asyncio.run(scenario())
