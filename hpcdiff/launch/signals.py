"""Stop requests: SLURM's time-limit warning (``--signal=USR2@90``, submitit's choice; USR1 is accepted
too) or a preemption's SIGTERM sets a flag that the training loop polls at step boundaries; the loop
then checkpoints and returns."""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)


class StopFlag:
    """Callable flag, true once one of ``signals`` arrived. ``previous`` keeps the handlers it replaced
    (submitit's requeue handler, for instance) so they can be invoked once the checkpoint is safe."""

    def __init__(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> None:
        self.received: signal.Signals | None = None
        self.previous: dict[signal.Signals, Any] = {}
        for sig in signals:
            self.previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signal.Signals(signum)

    def __call__(self) -> bool:
        return self.received is not None

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def forward(self) -> None:
        """Call the handler that was installed before ours for the received signal, if any."""
        handler: Callable[[int, FrameType | None], Any] | Any = self.previous.get(self.received)
        if self.received is not None and callable(handler):
            handler(int(self.received), None)
