"""Data-loader workers forked after OpenCV's thread pool has run in the parent must not hang."""

from __future__ import annotations

import os
import time

import cv2
import numpy as np
import pytest

from posesuite.data.datamodule import init_worker, stop_opencv_threads


def fork_and_wait(child, timeout: float = 5.0) -> bool:
    """Runs ``child`` in a forked process; True if it exited within ``timeout`` seconds."""
    pid = os.fork()
    if pid == 0:
        child()
        os._exit(0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished:
            return True
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return False


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork (the Linux worker start method)")
def test_workers_forked_after_opencv_ran_in_the_parent_start():
    # Without stop_opencv_threads about 1 fork in 4 hung here in init_worker's setNumThreads.
    image = np.random.default_rng(0).random((1024, 1024, 3), dtype=np.float32)
    try:
        for _ in range(20):
            cv2.setNumThreads(-1)  # the default pool, as the synthetic generator leaves it
            for _ in range(5):
                cv2.GaussianBlur(image, (0, 0), 2.0)
            stop_opencv_threads()
            assert fork_and_wait(lambda: init_worker(0))
    finally:
        cv2.setNumThreads(-1)
