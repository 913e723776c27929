"""A local simulator of Ona's automation API (tasks, executions, events) for tests.

`run_simulator` serves it in-process; the `ona-simulator` command serves it as a
process. How executions behave follows `sim:` directives in the task's command (see
`commands`), and the control API under `/_simulator/` (see `control`, and the client in
`control_client`) lets tests reset it, seed tasks, move executions, replay old statuses,
inject faults and inspect the calls it received.
"""

from ona_simulator.commands import RunPlan, parse_command
from ona_simulator.core import Simulator
from ona_simulator.server import RunningSimulator, run_simulator

__all__ = ["RunPlan", "RunningSimulator", "Simulator", "parse_command", "run_simulator"]
