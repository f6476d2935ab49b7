"""Hostile flags (scripts/fuzz_flags.py): every generated command line runs or is refused in one line, exit 2; the
full run is the script's (2,000 lines, and more end to end), this a fixed-seed sample and six lines end to end."""

import importlib.util
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "fuzz_flags.py"


def load_script():
    spec = importlib.util.spec_from_file_location("fuzz_flags", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_flags"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


fuzz_flags = load_script()


def test_generated_command_lines_run_or_are_refused_in_one_line(tmp_path):
    """40 lines from a fixed seed: each ends in its command's work or one error line (run_in_process asserts it)."""
    outcomes, reasons = fuzz_flags.fuzz(40, seed=0, root=tmp_path)
    assert sum(outcomes.values()) == 40
    ran = sum(count for (_, outcome), count in outcomes.items() if outcome == "ran")
    assert 0 < ran < 40 and sum(reasons.values()) == 40 - ran
    assert len({command for command, _ in outcomes}) >= 5  # the draw reaches most commands


def test_a_failing_line_is_reported_not_hidden(tmp_path, monkeypatch):
    """The harness fails on a traceback and on a refusal of more than one line."""
    import ppl_vae.cli

    def broken(args):
        raise KeyError("boom")

    monkeypatch.setitem(ppl_vae.cli.HANDLERS, "train", broken)
    with pytest.raises(KeyError):
        fuzz_flags.run_in_process(["train"])
    with pytest.raises(AssertionError, match="stderr"):
        monkeypatch.setattr(ppl_vae.cli, "build_parser", lambda: _two_line_parser())
        fuzz_flags.run_in_process(["train"])


def _two_line_parser():
    import argparse

    parser = argparse.ArgumentParser(prog="ppl-vae")
    parser.add_argument("--never", required=True)
    return parser  # argparse's own error(): usage block plus the error line


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("fuzz") / "run"
    fuzz_flags.train_fixture_run(run_dir)
    return run_dir


def test_end_to_end_in_child_processes(tmp_path, trained_run):
    """Each command line of END_TO_END in its own ``python -m ppl_vae``, three at a time."""
    with ThreadPoolExecutor(max_workers=3) as pool:
        runs = [
            pool.submit(fuzz_flags.run_subprocess, argv, expected, tmp_path, trained_run, 120)
            for argv, expected in fuzz_flags.END_TO_END
        ]
        for run in runs:
            run.result()  # raises the AssertionError of a child that did not end in its one expected line
