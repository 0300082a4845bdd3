"""The order in which `make test`'s two xdist workers take the test modules (tests/support/pytest_groups.py)."""

from __future__ import annotations

from tests.support.pytest_groups import module_order


def test_real_node_modules_alternate_with_slow_ones_and_the_rest_come_last_in_their_order():
    ranks = {"a_node": 0, "b": 2, "c_slow": 1, "d_node": 0, "e_slow": 1, "f_slow": 1, "g": 2, "h_node": 0}
    assert module_order(ranks) == ["a_node", "c_slow", "d_node", "e_slow", "h_node", "f_slow", "b", "g"]


def test_every_module_is_taken_once_whatever_the_mix():
    for ranks in ({}, {"x": 0}, {"x": 1, "y": 1}, {"x": 2, "y": 0, "z": 0, "w": 0}):
        order = module_order(ranks)
        assert sorted(order) == sorted(ranks)
        assert [ranks[m] for m in order if ranks[m] == 2] == [r for r in (ranks[m] for m in order) if r == 2]
        assert all(ranks[m] < 2 for m in order[: sum(1 for r in ranks.values() if r < 2)])


def test_under_two_workers_each_module_runs_whole_on_one_worker(tmp_path):
    # Run for real: two xdist workers, four small modules of six tests each, every test noting its
    # worker. Before the fix the plugin looked at `dist` on the workers (where xdist has set it to
    # "no"), marked nothing, and the tests of one module were spread over both workers.
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    log = tmp_path / "seen.jsonl"
    for m in "abcd":
        (tmp_path / f"test_mod_{m}.py").write_text(
            "import json, os, time\n"
            + "".join(f"def test_{i}():\n    time.sleep(0.05)\n"
                      f"    with open({str(log)!r}, 'a') as f:\n"
                      f"        f.write(json.dumps(['{m}', os.environ['PYTEST_XDIST_WORKER']]) + '\\n')\n"
                      for i in range(6)))
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                           "-c", os.devnull, "-p", "tests.support.pytest_groups", "-n", "2", "--dist", "loadgroup",
                           str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seen: dict[str, set[str]] = {}
    for line in log.read_text().splitlines():
        module, worker = json.loads(line)
        seen.setdefault(module, set()).add(worker)
    assert sorted(seen) == list("abcd")
    assert all(len(workers) == 1 for workers in seen.values()), seen
