"""Ctrl-C at any moment, and a fork after a run: nothing stays locked, no update is applied
twice or in part, the helper threads stay in step, and a forked child runs plans.

Each case runs in a child process (a hang fails it by timeout instead of hanging the suite)
that sends itself SIGINT from a background thread, to the main thread and to the process
(which the kernel may hand to any thread: a helper, an OpenBLAS worker).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

COMMON = '''
import os, random, signal, sys, threading, time
import numpy as np
sys.path.insert(0, {examples!r})
import graphnet as gn
from mnist_cnn import seed_cnn

def network(seed):
    gn.manual_seed(seed)
    x = gn.placeholder("x", (None, 1, 28, 28))
    labels = gn.placeholder("labels", (None,), dtype="int64")
    model = seed_cnn()
    train = gn.compile(gn.losses.cross_entropy(model(x), labels), optimizer=gn.optim.Adam(lr=1e-3), seed=0)
    return model, train

def batch(step):
    rng = np.random.default_rng(step)
    return {{"x": rng.standard_normal((48, 1, 28, 28)).astype(np.float32), "labels": rng.integers(0, 10, 48)}}

def state(plan):
    return {{name: var.data.copy() for name, var in plan.variables.items()}}
'''


def _run(body: str, timeout: float = 240) -> str:
    from pathlib import Path

    examples = str(Path(__file__).resolve().parent.parent / "examples")
    source = COMMON.format(examples=examples) + textwrap.dedent(body)
    done = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_random_interrupts_leave_the_old_state_or_the_new_one_and_later_steps_exact():
    """SIGINT at random moments during 160 training steps of the seed CNN (split kernels on two
    threads): after each step every variable is exactly the state before it or exactly the
    state an uninterrupted twin reaches, and the run goes on (no lock held, helpers in step)."""
    out = _run('''
        gn.set_num_threads(2)
        _, plan = network(0)
        _, twin = network(0)
        main = threading.main_thread().ident
        sending = threading.Event()
        stop = threading.Event()
        rng = random.Random(7)

        def sender():
            while not stop.is_set():
                time.sleep(rng.uniform(0.0005, 0.004))
                if sending.is_set():
                    if rng.random() < 0.5:
                        signal.pthread_kill(main, signal.SIGINT)
                    else:
                        os.kill(os.getpid(), signal.SIGINT)  # to whichever thread the kernel picks

        threading.Thread(target=sender, daemon=True).start()
        interrupted = applied = 0
        for step in range(160):
            before = state(plan)
            try:
                sending.set()
                try:
                    plan.run(batch(step))
                finally:
                    sending.clear()
                    time.sleep(0.006)  # let a signal already on its way arrive here, not in the twin
            except KeyboardInterrupt:
                interrupted += 1
            after = state(plan)
            if plan.step_count == twin.step_count + 1:
                twin.run(batch(step))
                applied += 1
                expected = state(twin)
            else:
                assert plan.step_count == twin.step_count, (plan.step_count, twin.step_count)
                expected = before
            for name, value in after.items():
                assert np.array_equal(value, expected[name]), (step, name)
        stop.set()
        last = plan.run(batch(999))["loss"]
        assert np.array_equal(last, twin.run(batch(999))["loss"])
        print("interrupted", interrupted, "applied", applied)
    ''')
    interrupted = int(out.split()[1])
    assert interrupted >= 20, out  # the signals did land


def test_an_interrupted_wait_for_a_plans_locks_leaves_none_held():
    _run('''
        model, plan = network(0)
        # another run holds one of the variables: the second in the order runs take them, so
        # an interrupted run has already taken the first when the signal comes
        variable = sorted(plan.variables.values(), key=lambda v: v.id)[1]
        variable.lock.acquire()
        main = threading.main_thread().ident
        threading.Timer(0.3, lambda: signal.pthread_kill(main, signal.SIGINT)).start()
        try:
            plan.run(batch(0))
            raise SystemExit("the run did not wait for the lock")
        except KeyboardInterrupt:
            pass
        variable.lock.release()
        plan.run(batch(1))  # nothing left held: the next run goes through
        assert not plan._lock.locked() and not any(v.lock.locked() for v in plan.variables.values())
    ''', timeout=120)


def test_a_forked_child_runs_the_inherited_plan_and_new_ones():
    _run('''
        gn.set_num_threads(2)
        _, plan = network(0)
        plan.run(batch(0))  # the helper threads now exist in the parent
        pid = os.fork()
        if pid == 0:
            try:
                plan.run(batch(1))
                _, fresh = network(1)
                fresh.run(batch(2))
            except BaseException:
                os._exit(1)
            os._exit(0)
        deadline = time.time() + 60
        while time.time() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                assert os.waitstatus_to_exitcode(status) == 0, status
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
            raise SystemExit("the forked child hung")
        plan.run(batch(3))  # and the parent goes on
    ''', timeout=180)


def test_deferred_blocks_hold_sigint_back_and_allowed_stretches_let_it_through():
    import signal
    import threading

    from graphnet import interrupts

    main = threading.main_thread().ident
    with pytest.raises(KeyboardInterrupt):
        with interrupts.deferred():
            signal.pthread_kill(main, signal.SIGINT)
            for _ in range(1000):  # handlers run between bytecodes: it has run by now, and held
                pass
            assert interrupts.pending()
    assert not interrupts.pending()
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts.deferred():
            signal.pthread_kill(main, signal.SIGINT)
            for _ in range(1000):
                pass
            try:
                with interrupts.allowed():  # raises the held one on entry
                    reached.append("body")
            finally:
                reached.append("cleanup, still deferred")
                assert interrupts._depth[0] == 1
    assert reached == ["cleanup, still deferred"] and interrupts._depth[0] == 0
    calls = []
    previous = signal.signal(signal.SIGINT, lambda s, f: calls.append(s))  # a user's own handler
    try:
        with interrupts.deferred():
            signal.pthread_kill(main, signal.SIGINT)
            for _ in range(1000):
                pass
            assert calls == []
        assert calls == [signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, previous)
