"""`python -m foundry.agents.local_runner <workdir> <command...>`: run a local agent and record its exit.

The local provider starts this wrapper instead of the command itself, so the
exit code lands in `<workdir>/exitcode` even when the operator that started
it is gone (written to a temp file and renamed, so a reader never sees half).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m foundry.agents.local_runner <workdir> <command...>", file=sys.stderr)
        return 2
    workdir = Path(argv[0])
    # The result JSON of docs/agent-contract.md goes to a file here, not /dev/termination-log.
    env = dict(os.environ, FOUNDRY_JOB_INPUT=str(workdir / "input.json"),
               FOUNDRY_RESULT_PATH=str(workdir / "result.json"))
    with open(workdir / "agent.log", "ab") as log:
        try:
            code = subprocess.call(argv[1:], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        except OSError as err:
            log.write(f"cannot start {argv[1]!r}: {err}\n".encode())
            code = 127
    tmp = workdir / "exitcode.tmp"
    tmp.write_text(str(code))
    os.replace(tmp, workdir / "exitcode")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
