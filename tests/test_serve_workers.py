"""``fastsal serve --workers N``: several processes on one socket, each answering with the
one-process server's maps and protections; a dead worker replaced; SIGTERM stops every process.
Also the settings behind it (``ServeConfig.workers``, ``device``) from Python."""
from __future__ import annotations

import concurrent.futures
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from serve_util import example_bytes, need_serve_extra, running_server

need_serve_extra()

from fastsal import defaults  # noqa: E402
from fastsal.cpu import available_cpus, max_threads  # noqa: E402
from fastsal.serve import ServeConfig, ServeError  # noqa: E402

KEY = "w" * 24


def _children(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (from /proc: Linux only, as the tests' CI)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(stat.parent.name)] = int(fields[1])
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        kids = {c for c, pp in parents.items() if pp == p} - found
        found |= kids
        todo += kids
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _predict(url: str, key: str | None = KEY) -> tuple[int, str, bytes]:
    """POST the example image for a PNG map; (status, answering PID, body)."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + example_bytes() + f"\r\n--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    if key:
        headers["X-API-Key"] = key
    req = urllib.request.Request(url + "v1/predict?output=png", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.headers["X-Fastsal-Worker"], r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["X-Fastsal-Worker"], exc.read()


def _start(args: list[str], key_file: Path) -> tuple[subprocess.Popen, str, list[int]]:
    cmd = [sys.executable, "-m", "fastsal", "serve", "--port", "0", "--threads", "1", "-q",
           "--api-key-file", str(key_file), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # blocks until the URL line or the process ends (bounded by its start timeout)
    m = re.search(r"serving (http://\S+/) .*workers, PIDs ([\d ]+);", line)
    if m is None:
        proc.kill()
        raise AssertionError(f"no serving line: {line!r} {proc.stderr.read()[-2000:]}")
    return proc, m.group(1), [int(p) for p in m.group(2).split()]


@pytest.fixture()
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "key"
    path.write_text(KEY + "\n")
    path.chmod(0o600)
    return path


def test_two_workers_answer_alike_replace_a_dead_one_and_stop_on_sigterm(key_file):
    with running_server("--api-key-file", str(key_file)) as url:
        status, _, single = _predict(url)
    assert status == 200 and single.startswith(b"\x89PNG")

    proc, url, pids = _start(["--workers", "2", "--header-timeout", "2"], key_file)
    started: set[int] = set(pids)
    try:
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "libtorch" not in maps and "openvino" not in maps  # the supervisor loads no engine (~280 MB)
        seen: dict[str, bytes] = {}
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            for _ in range(15):  # rounds of 4 concurrent requests until both workers answered
                for status, pid, body in pool.map(lambda _: _predict(url), range(4)):
                    assert status == 200
                    seen[pid] = body
                if len(seen) == 2:
                    break
            assert set(seen) == {str(p) for p in pids}, f"only {sorted(seen)} of {pids} answered"
            assert all(body == single for body in seen.values())  # each worker: the one-process map
            # the API key holds in every worker: keyless requests, spread over both, are all refused
            refused = list(pool.map(lambda _: _predict(url, key=None), range(8)))
            assert {status for status, _, _ in refused} == {401}
        # and the slow-client protection: connections that send no request head are closed
        host, port = url.split("//")[1].rstrip("/").split(":")
        idle = [socket.create_connection((host, int(port)), timeout=30) for _ in range(4)]
        try:
            assert all(s.recv(1) == b"" for s in idle)  # closed by the server after --header-timeout 2
        finally:
            for s in idle:
                s.close()

        started |= _children(proc.pid)
        os.kill(pids[0], signal.SIGKILL)  # a worker lost (OOM killer): another takes its place
        deadline, new = time.monotonic() + 180, None
        while new is None and time.monotonic() < deadline:
            status, pid, body = _predict(url)
            if status == 200 and int(pid) not in pids:
                new = int(pid)
                assert body == single
            time.sleep(0.2)
        assert new is not None, "no replacement worker answered within 180 s"
        started |= _children(proc.pid)

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0
        err = proc.stderr.read()
        assert f"worker PID {pids[0]} was killed by SIGKILL; starting another" in err
        assert "server stopped (SIGTERM)" in err
        deadline = time.monotonic() + 30
        while any(_alive(p) for p in started) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p for p in started if _alive(p)], "a worker outlived the server"
    finally:
        for pid in [proc.pid, *started]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()


def test_workers_stop_when_the_supervisor_is_killed(key_file):
    """SIGKILL leaves the supervisor no chance to stop its workers: Linux's parent-death signal
    does, so no worker is left holding the port."""
    proc, url, pids = _start(["--workers", "2"], key_file)
    started = _children(proc.pid)
    try:
        assert set(pids) <= started
        proc.kill()
        proc.wait(timeout=30)
        deadline = time.monotonic() + 60
        while any(_alive(p) for p in started) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p for p in started if _alive(p)], "a worker outlived its killed supervisor"
    finally:
        for pid in started:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.stdout.close()
        proc.stderr.close()


def test_a_worker_that_cannot_load_its_model_is_one_error_line(tmp_path, key_file):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    proc = subprocess.run([sys.executable, "-m", "fastsal", "serve", "--port", "0", "--workers", "2", "--threads",
                           "1", "-q", "--weights", str(bad)], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "serving" not in proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("fastsal: error:")]
    assert len(errors) == 1 and "broken.pt" in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_workers_setting_is_checked_and_shares_the_cpus():
    with pytest.raises(ServeError, match="workers"):
        ServeConfig(workers=0)
    with pytest.raises(ServeError, match="workers .* x threads"):
        ServeConfig(workers=2, threads=max_threads())
    assert ServeConfig().worker_threads is None  # one process: the engine's own choice
    assert ServeConfig(workers=2, threads=1).worker_threads == 1
    assert ServeConfig(workers=2).worker_threads == max(1, available_cpus() // 2)


def test_workers_need_a_picklable_loader():
    from fastsal.serve import serve

    with pytest.raises(ServeError, match="picklable"):
        serve(ServeConfig(port=0, workers=2), load=lambda source: None)


def test_create_app_passes_device_and_worker_threads_to_fastsal_load(monkeypatch):
    """create_app() from Python can choose the device (issue 21's review: it could not)."""
    import fastsal
    from fastsal.serve.app import default_loader

    calls = []
    monkeypatch.setattr(fastsal, "load", lambda source, **kw: calls.append((source, kw)))
    default_loader(ServeConfig(device="cuda:1", workers=2, threads=1, backend="torch"))("default")
    assert calls == [("default", {"backend": "torch", "precision": defaults.PRECISION, "device": "cuda:1", "threads": 1})]


def test_serve_help_names_workers():
    out = subprocess.run([sys.executable, "-m", "fastsal", "serve", "--help"], capture_output=True, text=True,
                         timeout=60).stdout
    assert "--workers N" in out and "--device" in out
