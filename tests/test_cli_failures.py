"""Every failure of the ``uqdyn`` command ends in one clear line, never a traceback.

Each test checks the exit code, that stderr is exactly one line naming the problem, that no
traceback is printed, and that no temporary ``.partial`` output directory is left behind.
Most run :func:`uqdyn.cli.main` in-process (the errors come before any compute); the
console-level ones (exit codes of the real process, SIGINT, SIGTERM) run ``python -m
uqdyn.cli`` in a subprocess.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from uqdyn.cli import main
from uqdyn.study.runner import PARTIAL_MARKER, clean_stale_partials, git_unignored

ROOT = Path(__file__).resolve().parents[1]


def _one_error_line(err: str, *needles: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("uqdyn: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, err)
    return lines[0]


def _no_partial(*dirs: Path) -> None:
    for d in dirs:
        if d.is_dir():
            assert not list(d.glob(".*.partial")), sorted(p.name for p in d.iterdir())


def _study(out: Path, *extra: str) -> list[str]:
    return ["study", "pendulum", "--quick", "--device", "cpu", "--quiet", "--out", str(out), *extra]


def _run_cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("UQDYN_TRACEBACK", None)
    return subprocess.run(
        [sys.executable, "-m", "uqdyn.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


# ----------------------------------------------------------------------------- output directory
def _read_only_dir(tmp_path: Path) -> Path:
    """A directory this process cannot create anything in."""
    if os.geteuid() == 0:  # root writes through file modes: use a directory of /proc instead
        if not Path("/proc/self").is_dir():
            pytest.skip("needs /proc as root")
        return Path("/proc") / f"uqdyn-test-{os.getpid()}"
    ro = tmp_path / "read-only"
    ro.mkdir()
    ro.chmod(0o500)
    return ro


def test_out_with_a_read_only_parent(tmp_path: Path, capsys) -> None:
    parent = _read_only_dir(tmp_path)
    try:
        assert main(_study(parent / "out")) == 1
        _one_error_line(capsys.readouterr().err, str(parent))
    finally:
        if parent.is_relative_to(tmp_path):
            parent.chmod(0o700)
    _no_partial(tmp_path, parent)


def test_out_with_a_missing_parent_that_cannot_be_created(tmp_path: Path, capsys) -> None:
    parent = _read_only_dir(tmp_path)
    try:
        assert main(_study(parent / "missing" / "deeper" / "out")) == 1
        _one_error_line(capsys.readouterr().err, "out=")
    finally:
        if parent.is_relative_to(tmp_path):
            parent.chmod(0o700)
    assert not (parent / "missing").exists()


def test_out_under_an_existing_file(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "notes.txt"
    blocker.write_text("not a directory")
    assert main(_study(blocker / "out")) == 1
    _one_error_line(capsys.readouterr().err, "notes.txt", "is a file")
    assert main(_study(blocker / "a" / "b")) == 1
    _one_error_line(capsys.readouterr().err, "notes.txt")
    _no_partial(tmp_path)


def test_out_is_an_existing_file(tmp_path: Path, capsys) -> None:
    target = tmp_path / "scores.csv"
    target.write_text("x")
    assert main(_study(target)) == 2
    _one_error_line(capsys.readouterr().err, "scores.csv", "not a directory")
    assert target.read_text() == "x"
    _no_partial(tmp_path)


def test_out_non_empty_without_overwrite(tmp_path: Path, capsys) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    assert main(_study(out)) == 2
    _one_error_line(capsys.readouterr().err, "not empty", "--overwrite")
    assert (out / "mine.txt").read_text() == "keep"
    _no_partial(tmp_path)


# ----------------------------------------------------------------------------- devices
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_demo_on_cuda_without_cuda_is_one_line(capsys) -> None:
    assert main(["demo", "--device", "cuda"]) == 2
    captured = capsys.readouterr()
    _one_error_line(captured.err, "CUDA is not available", "device='cuda'")
    assert captured.out == ""  # nothing ran


def test_bad_device_is_one_line(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--device", "tpu"])
    assert exc.value.code == 2
    _one_error_line(capsys.readouterr().err, "--device", "'tpu'")
    with pytest.raises(SystemExit) as exc:
        main(_study(tmp_path / "o", "--device", "gpu"))
    assert exc.value.code == 2
    _one_error_line(capsys.readouterr().err, "--device", "'gpu'")
    _no_partial(tmp_path)


# ----------------------------------------------------------------------------- configuration
@pytest.mark.parametrize(
    ("setting", "needles"),
    [
        ("model.cnp.stepz=3", ("model.cnp.stepz", "model.cnp.steps")),
        ("data.n_test=0", ("data.n_test", "an int >= 1")),
        ("data.n_train=many", ("data.n_train", "is a str", "expected an int")),
        ("model.cnp.lr=-0.1", ("model.cnp.lr", "a float > 0")),
        ("steps", ("KEY=VALUE", "evaluation.n_boot=200")),
    ],
)
def test_bad_set_is_one_line(tmp_path: Path, capsys, setting: str, needles: tuple[str]) -> None:
    assert main(_study(tmp_path / "o", "--set", setting)) == 2
    _one_error_line(capsys.readouterr().err, *needles)
    assert not (tmp_path / "o").exists()
    _no_partial(tmp_path)


def test_missing_data_file_is_one_line(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "gauge.csv"
    args = ["study", "forecast", "--quiet", "--data", str(missing), "--out", str(tmp_path / "o")]
    assert main(args) == 2
    _one_error_line(capsys.readouterr().err, "data.source", "gauge.csv", "no such file")
    assert main(["study", "forecast", "--quiet", "--out", str(tmp_path / "o")]) == 2
    _one_error_line(capsys.readouterr().err, "data.source", "--data FILE")
    _no_partial(tmp_path)


def test_console_script_failure_has_exit_code_and_no_traceback(tmp_path: Path) -> None:
    result = _run_cli(*_study(tmp_path / "o", "--set", "data.n_valid=0"), cwd=tmp_path)
    assert result.returncode == 2
    _one_error_line(result.stderr, "data.n_valid")
    _no_partial(tmp_path)


# ----------------------------------------------------------------------------- signals
def _interrupt(tmp_path: Path, signum: int) -> subprocess.CompletedProcess[str]:
    """Start a quick study, wait for its ``.partial`` directory, send ``signum``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "uqdyn.cli", *_study(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=env,
        # a shell's background job ignores SIGINT; give the child the default disposition
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(f".out.*.partial/{PARTIAL_MARKER}")):
            if proc.poll() is not None or time.monotonic() > deadline:
                _, err = proc.communicate()
                pytest.fail(f"the study never started (rc {proc.returncode}): {err}")
            time.sleep(0.05)
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not out.exists()
    _no_partial(tmp_path)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_sigint_says_interrupted_and_cleans_up(tmp_path: Path) -> None:
    result = _interrupt(tmp_path, signal.SIGINT)
    assert result.returncode == 130
    assert _one_error_line(result.stderr) == "uqdyn: error: interrupted"


def test_sigterm_exits_143_and_cleans_up(tmp_path: Path) -> None:
    result = _interrupt(tmp_path, signal.SIGTERM)
    assert result.returncode == 143
    _one_error_line(result.stderr, "terminated", "SIGTERM")


def test_stale_partials_of_dead_runs_are_removed(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()

    def partial(name: str, owner: dict[str, object] | None) -> Path:
        path = tmp_path / f".{name}.x1.partial"
        path.mkdir()
        if owner is not None:
            (path / PARTIAL_MARKER).write_text(json.dumps(owner))
        return path

    stale = partial("a", {"pid": dead.pid, "host": host})
    alive = partial("b", {"pid": os.getppid(), "host": host})  # a live process
    elsewhere = partial("c", {"pid": dead.pid, "host": host + "-other"})
    foreign = partial("d", None)  # not made by uqdyn
    assert clean_stale_partials(tmp_path) == [stale]
    assert not stale.exists()
    assert alive.is_dir() and elsewhere.is_dir() and foreign.is_dir()


# ----------------------------------------------------------------------------- git warning
def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_git_warning_only_for_unignored_paths_in_a_work_tree(tmp_path: Path, monkeypatch) -> None:
    outside = tmp_path / "plain"
    outside.mkdir()
    assert git_unignored(outside / "uqdyn-out" / "study") is None
    try:
        _git("init", "-q", cwd=tmp_path / "plain")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git is not available")
    repo = outside
    (repo / ".gitignore").write_text("uqdyn-out/\n")
    assert git_unignored(repo / "uqdyn-out" / "study") is None
    assert git_unignored(repo / "results" / "study") == repo.resolve()
    monkeypatch.setenv("PATH", str(tmp_path / "no-such-bin"))  # git missing: never fails
    assert git_unignored(repo / "results" / "study") is None


def test_a_swallowed_interruption_stops_the_study_at_its_next_stage() -> None:
    from uqdyn.predictive import Normal
    from uqdyn.study import _interrupt
    from uqdyn.study.base import forecast_models

    normal = Normal(torch.zeros(1), torch.ones(1))
    ran: list[str] = []

    def swallowing() -> tuple[Normal, Normal, str]:
        ran.append("first")
        try:  # library code that clears every error, as C extensions may
            _interrupt.raise_interruption(KeyboardInterrupt)
        except BaseException:
            pass
        return normal, normal, ""

    def second() -> tuple[Normal, Normal, str]:
        ran.append("second")
        return normal, normal, ""

    try:
        with pytest.raises(KeyboardInterrupt):
            forecast_models(["a", "b"], {"a": swallowing, "b": second}, cases="", progress=False)
    finally:
        _interrupt.clear()
    assert ran == ["first"]
    _interrupt.checkpoint()  # cleared: nothing pending
