"""Engine-build progress on the terminal: a ``tensorrt.IProgressMonitor`` drawing rich progress bars.

TensorRT (10.x) reports nested optimizer phases: ``phase_start(name, parent, num_steps)``,
``step_complete(name, step) -> bool`` (False cancels the build) and ``phase_finish(name)``, from
several threads.  Phases deeper than ``MAX_DEPTH`` are not drawn.  Ctrl-C inside a callback asks
TensorRT to stop at its next step instead of unwinding through C++.  Without rich, top-level phases
are printed one line each.
"""
from __future__ import annotations

import threading

MAX_DEPTH = 2


def make_monitor(trt, progress=None, log=print):
    """An IProgressMonitor for ``trt`` (the imported tensorrt module) drawing into ``progress``
    (a started ``rich.progress.Progress``), or printing top-level phases through ``log``."""

    class Monitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self._lock = threading.Lock()
            self._phases: dict[str, tuple[object, int]] = {}     # name -> (rich task id, depth)
            self.cancelled = False

        def phase_start(self, phase_name, parent_phase, num_steps):
            try:
                with self._lock:
                    depth = 0 if parent_phase is None else self._phases.get(parent_phase, (None, MAX_DEPTH))[1] + 1
                    if depth > MAX_DEPTH:
                        return
                    task = None
                    if progress is not None:
                        task = progress.add_task("  " * depth + phase_name, total=max(int(num_steps), 1))
                    elif depth == 0:
                        log(f"  {phase_name} ({num_steps} steps)")
                    self._phases[phase_name] = (task, depth)
            except KeyboardInterrupt:
                self.cancelled = True

        def step_complete(self, phase_name, step):
            try:
                with self._lock:
                    entry = self._phases.get(phase_name)
                    if entry is not None and entry[0] is not None:
                        progress.update(entry[0], completed=int(step) + 1)
            except KeyboardInterrupt:
                self.cancelled = True
            return not self.cancelled

        def phase_finish(self, phase_name):
            try:
                with self._lock:
                    entry = self._phases.pop(phase_name, None)
                    if entry is not None and entry[0] is not None:
                        progress.remove_task(entry[0])
            except KeyboardInterrupt:
                self.cancelled = True

    return Monitor()


def start_progress():
    """A started rich Progress (the caller stops it), or None without rich."""
    try:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    except ImportError:
        return None
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        transient=True)
    progress.start()
    return progress
