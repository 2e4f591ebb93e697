"""fastsal.signals: the one owner of signal handlers (SIGTERM -> Terminated, handlers put back)."""
from __future__ import annotations

import signal
import threading

import pytest

from fastsal.errors import Terminated
from fastsal.signals import handled, install, kept, raise_terminated, sigterm_raises


def _mine(signum, frame):  # a handler someone else installed
    pass


def _sigterm() -> None:
    """What the interpreter does when SIGTERM arrives: call the Python handler in the main thread.

    Called directly rather than sent with os.kill: a real signal to the pytest process, which by
    now hosts the engines' native thread pools, can crash it (the subprocess tests in test_jobs,
    test_video_robustness and test_fuzz_cli send real ones)."""
    handler = signal.getsignal(signal.SIGTERM)
    assert callable(handler), handler
    handler(signal.SIGTERM, None)


@pytest.fixture
def own_sigterm():
    previous = signal.signal(signal.SIGTERM, _mine)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_sigterm_raises_terminated_and_restores_the_previous_handler(own_sigterm):
    with pytest.raises(Terminated) as caught:
        with sigterm_raises() as active:
            assert active
            _sigterm()
    assert caught.value.exit_code == 143 and caught.value.name == "SIGTERM"
    assert isinstance(caught.value, KeyboardInterrupt)  # unwinds like Ctrl-C
    assert signal.getsignal(signal.SIGTERM) is _mine


def test_a_second_sigterm_does_not_break_the_clean_up(own_sigterm):
    cleaned = False
    with pytest.raises(Terminated):
        with sigterm_raises():
            try:
                _sigterm()
            finally:
                _sigterm()  # ignored: the clean-up goes on
                cleaned = True
    assert cleaned
    assert signal.getsignal(signal.SIGTERM) is _mine


def test_every_sigterm_raises_unless_once(own_sigterm):
    raised = 0
    with sigterm_raises(once=False):
        for _ in range(2):
            try:
                _sigterm()
            except Terminated:
                raised += 1
    assert raised == 2


def test_install_returns_the_undo_and_a_c_level_handler_comes_back_as_default():
    previous = signal.getsignal(signal.SIGUSR1)
    try:
        restore = install(raise_terminated, (signal.SIGUSR1,))
        assert signal.getsignal(signal.SIGUSR1) is raise_terminated
        restore()
        assert signal.getsignal(signal.SIGUSR1) == previous
    finally:
        signal.signal(signal.SIGUSR1, previous)
    with handled(signal.SIG_IGN, (signal.SIGUSR1,)):
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN
    assert signal.getsignal(signal.SIGUSR1) == previous


def test_kept_undoes_what_the_block_did(own_sigterm):
    with kept((signal.SIGTERM,)):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as ray.init does
    assert signal.getsignal(signal.SIGTERM) is _mine


def test_off_the_main_thread_nothing_is_touched(own_sigterm):
    seen: dict[str, object] = {}

    def work():
        with sigterm_raises() as active:
            seen["active"] = active
            seen["inside"] = signal.getsignal(signal.SIGTERM)
        restore = install(raise_terminated)
        seen["after_install"] = signal.getsignal(signal.SIGTERM)
        restore()
        with kept((signal.SIGTERM,)):
            pass

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen == {"active": False, "inside": _mine, "after_install": _mine}
    assert signal.getsignal(signal.SIGTERM) is _mine
