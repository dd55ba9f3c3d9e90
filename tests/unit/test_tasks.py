"""``spawn()`` keeps its tasks and logs their failures; ``Batcher`` flushes what arrives together
(issue 21, item 5). The four batchers' own behaviour is in test_chat_writer.py,
test_publish_batching.py, test_open_batching.py and test_token_fast_path.py."""
import ast
import asyncio
import gc
import json
import logging
import pathlib

import pytest

from tornado_app.logs import json_formatter
from tornado_app.tasks import SWEEP_SLICE, Batcher, running_tasks, sliced, spawn

ROOT = pathlib.Path(__file__).resolve().parents[2]


class Records(logging.Handler):
    """Collects the records of one logger, formatted as the server's JSON lines."""

    def __init__(self):
        super().__init__()
        self.lines = []
        self.setFormatter(json_formatter())

    def emit(self, record):
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def task_log():
    records = Records()
    logger = logging.getLogger("squall.tasks")
    logger.addHandler(records)
    yield records.lines
    logger.removeHandler(records)


# spawn() ------------------------------------------------------------------------------------

@pytest.mark.gen_test(timeout=10)
async def test_spawn_keeps_its_task_until_it_is_done(task_log):
    gate = asyncio.get_running_loop().create_future()
    done = []

    async def work():
        await gate
        done.append(True)

    spawn(work(), name="test.kept")
    gc.collect()  # nothing else holds the task: only spawn's set keeps it alive
    assert [t.get_name() for t in running_tasks()].count("test.kept") == 1
    gate.set_result(None)
    for _ in range(5):
        await asyncio.sleep(0)
    assert done == [True]
    assert "test.kept" not in [t.get_name() for t in running_tasks()]
    assert task_log == []


@pytest.mark.gen_test(timeout=10)
async def test_spawn_logs_a_failure_at_once_without_its_message(task_log):
    secret = "-".join(("hunter2", "secret", "token and the message text"))  # not on the raising line

    async def work():
        raise ValueError(secret)

    task = spawn(work(), name="test.fails")
    with pytest.raises(ValueError):
        await task
    assert task not in running_tasks()
    (line,) = task_log
    assert line["level"] == "ERROR" and line["logger"] == "squall.tasks"
    assert line["task"] == "test.fails" and line["error"] == "ValueError"
    assert "ValueError: <message withheld>" in line["exc_info"]
    assert "hunter2" not in json.dumps(line) and "message text" not in json.dumps(line)


@pytest.mark.gen_test(timeout=10)
async def test_a_done_callback_takes_the_outcome_and_its_own_failure_is_logged(task_log):
    seen = []

    async def work():
        raise KeyError("not logged: done handles it")

    task = spawn(work(), name="test.done", done=seen.append)
    with pytest.raises(KeyError):
        await task
    await asyncio.sleep(0)
    assert seen == [task] and task not in running_tasks() and task_log == []

    def broken(_task):
        raise RuntimeError("the callback failed")

    task = spawn(asyncio.sleep(0), name="test.done-fails", done=broken)
    await task
    await asyncio.sleep(0)
    assert task not in running_tasks()
    (line,) = task_log
    assert line["task"] == "test.done-fails" and line["error"] == "RuntimeError"


@pytest.mark.gen_test(timeout=10)
async def test_a_cancelled_task_is_not_logged(task_log):
    task = spawn(asyncio.sleep(30), name="test.cancelled")
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task not in running_tasks()
    assert task_log == []


def test_no_task_is_started_outside_spawn():
    """Every task of the server is kept and watched: ``ensure_future``, ``create_task``,
    ``spawn_callback`` and ``add_callback`` of a coroutine appear only in tornado_app/tasks.py."""
    paths = sorted((ROOT / "tornado_app").rglob("*.py")) + sorted((ROOT / "handlers").rglob("*.py"))
    paths.append(ROOT / "run.py")
    trees = {path: ast.parse(path.read_text()) for path in paths}
    coroutines = {n.name for tree in trees.values() for n in ast.walk(tree) if isinstance(n, ast.AsyncFunctionDef)}
    found = []
    for path, tree in trees.items():
        if path == ROOT / "tornado_app" / "tasks.py":
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            name = node.func.attr
            if name in ("ensure_future", "create_task", "spawn_callback"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
            elif name in ("add_callback", "call_soon", "call_later", "call_at") and node.args:
                first = node.args[1] if name in ("call_later", "call_at") and len(node.args) > 1 else node.args[0]
                if isinstance(first, ast.Attribute) and isinstance(first.value, ast.Name) \
                        and first.value.id == "self" and first.attr in coroutines:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name} of coroutine {first.attr}")
    assert found == [], "\n".join(found)


# Batcher ------------------------------------------------------------------------------------

def recording_batcher(**kwargs):
    """A Batcher whose flush doubles numbers, fails on "bad", raises on "boom", and records its batches."""
    batches = []
    running = [0, 0]  # now, most at once

    async def flush(items):
        running[0] += 1
        running[1] = max(running[1], running[0])
        batches.append(list(items))
        await asyncio.sleep(0.01)
        running[0] -= 1
        if "boom" in items:
            raise RuntimeError("the whole batch failed")
        return [ValueError(f"bad item {i}") if item == "bad" else item * 2 for i, item in enumerate(items)]
    return Batcher(flush, name="test.batcher", **kwargs), batches, running


@pytest.mark.gen_test(timeout=10)
async def test_the_submits_of_one_turn_share_one_flush_in_order():
    batcher, batches, _ = recording_batcher()
    results = await asyncio.gather(*(batcher.submit(i) for i in range(50)))
    assert results == [i * 2 for i in range(50)]
    assert batches == [list(range(50))]
    assert batcher.flushes == 1


@pytest.mark.gen_test(timeout=10)
async def test_what_arrives_during_a_flush_goes_into_the_next_one_and_flushes_never_overlap():
    batcher, batches, running = recording_batcher()
    first = [asyncio.ensure_future(batcher.submit(i)) for i in range(3)]
    while not batches:
        await asyncio.sleep(0)
    second = [asyncio.ensure_future(batcher.submit(i)) for i in range(3, 8)]
    await asyncio.sleep(0)
    third = asyncio.ensure_future(batcher.submit(8))
    assert await asyncio.gather(*first, *second, third) == [i * 2 for i in range(9)]
    assert batches == [[0, 1, 2], [3, 4, 5, 6, 7, 8]]
    assert running[1] == 1  # one flush at a time


@pytest.mark.gen_test(timeout=10)
async def test_an_item_fails_alone_and_a_failed_batch_fails_only_its_items():
    batcher, batches, _ = recording_batcher()
    results = await asyncio.gather(batcher.submit(1), batcher.submit("bad"), batcher.submit(3),
                                   return_exceptions=True)
    assert results[0] == 2 and results[2] == 6
    assert isinstance(results[1], ValueError) and str(results[1]) == "bad item 1"
    first = [asyncio.ensure_future(batcher.submit(x)) for x in (1, "boom")]
    while len(batches) < 2:
        await asyncio.sleep(0)
    later = asyncio.ensure_future(batcher.submit(5))  # into the batch after the failing one
    outcome = await asyncio.gather(*first, later, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in outcome[:2])
    assert outcome[2] == 10
    assert batches[1:] == [[1, "boom"], [5]]


@pytest.mark.gen_test(timeout=10)
async def test_max_batch_caps_each_flush():
    batcher, batches, _ = recording_batcher(max_batch=4)
    assert await asyncio.gather(*(batcher.submit(i) for i in range(10))) == [i * 2 for i in range(10)]
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


@pytest.mark.gen_test(timeout=10)
async def test_with_a_weight_max_batch_caps_the_sum_and_a_heavy_item_goes_alone():
    batcher, batches, _ = recording_batcher(max_batch=10, weight=lambda item: item)
    items = [3, 3, 4, 1, 12, 5, 5, 2]  # at 10 exactly, then just past it; 12 alone is past it too
    assert await asyncio.gather(*(batcher.submit(i) for i in items)) == [i * 2 for i in items]
    assert batches == [[3, 3, 4], [1], [12], [5, 5], [2]]


@pytest.mark.gen_test(timeout=10)
async def test_after_runs_once_the_waiters_have_their_results_and_before_the_next_flush(task_log):
    seen = []

    async def flush(items):
        seen.append(("flush", list(items)))
        return list(items)

    async def after(items, results):
        await asyncio.sleep(0)  # the waiters answered by this batch run first
        seen.append(("after", list(items)))
        if items == [1]:
            raise RuntimeError("publishing failed")

    async def wait(item):
        result = await batcher.submit(item)
        seen.append(("answered", item))
        return result

    batcher = Batcher(flush, name="test.after", after=after)
    first = asyncio.ensure_future(wait(1))
    while not seen:
        await asyncio.sleep(0)
    second = asyncio.ensure_future(wait(2))  # during the first flush: into the next batch
    assert await asyncio.gather(first, second) == [1, 2]
    await batcher.drain()
    assert seen == [("flush", [1]), ("answered", 1), ("after", [1]),
                    ("flush", [2]), ("answered", 2), ("after", [2])]
    (line,) = task_log  # the failure of after is logged; the waiters were answered already
    assert "test.after" in line["event"] and "<message withheld>" in line["exc_info"]


@pytest.mark.gen_test(timeout=10)
async def test_drain_waits_for_everything_queued_and_a_cancelled_waiter_leaves_the_batch_whole():
    batcher, batches, _ = recording_batcher()
    waiters = [asyncio.ensure_future(batcher.submit(i)) for i in range(4)]
    await asyncio.sleep(0)
    waiters[1].cancel()
    await batcher.drain()
    assert batches == [[0, 1, 2, 3]]  # the cancelled waiter's item was still flushed
    assert [w.result() for w in (waiters[0], waiters[2], waiters[3])] == [0, 4, 6]
    assert waiters[1].cancelled()
    await batcher.drain()  # idle: returns at once
    assert len(batcher) == 0


@pytest.mark.gen_test(timeout=10)
async def test_a_sweep_in_slices_gives_the_loop_a_turn_between_slices_and_keeps_the_order():
    # what the ping, heartbeat and pong sweeps use: another task runs between the slices
    seen: list = []

    async def other() -> None:
        while len(seen) < 10:
            seen.append("turn")
            await asyncio.sleep(0)

    task = asyncio.ensure_future(other())
    out = await sliced(list(range(10)), lambda n: seen.append(n) or n * 2, per_turn=4)
    task.cancel()
    assert out == [n * 2 for n in range(10)]
    numbers = [x for x in seen if x != "turn"]
    assert numbers == list(range(10))
    # no turn inside a slice of 4, and at least one turn between consecutive slices
    for start in (0, 4, 8):
        block = seen[seen.index(start):seen.index(min(start + 3, 9)) + 1]
        assert "turn" not in block
    assert seen.index("turn", seen.index(3)) < seen.index(4)
    assert seen.index("turn", seen.index(7)) < seen.index(8)


@pytest.mark.gen_test(timeout=10)
async def test_a_sweep_of_no_more_than_one_slice_takes_no_turn():
    assert await sliced([1, 2, 3], lambda n: n + 1, per_turn=3) == [2, 3, 4]
    assert await sliced([], lambda n: n) == []
    assert SWEEP_SLICE == 500
