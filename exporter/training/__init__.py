"""Training machinery shared by the recovery passes (`distill`, `slim`); private to the exporter.

One run teaches a compressed student to match the original model (the teacher) on the user's data:
`settings` (what to train, as plain data), `data` (batches and the deterministic order and sharding),
`losses` (soft/hard/regression targets and the L1 scale penalty), `optim` (optimizer and schedule),
`evaluate` (agreement with the teacher), `checkpoint` (resume), `loop` (the epochs themselves, one
code path for one process and for each DistributedDataParallel rank), `syncbn` (batch statistics
shared across CPU processes), `ddp` + `worker` (running the loop under torchrun), and `recovery`
(what the passes call: before/after figures, in-process or distributed, the record).
"""

from exporter.training.recovery import RecoveryRun, run_recovery
from exporter.training.settings import Rendezvous, TrainSettings

__all__ = ["RecoveryRun", "Rendezvous", "TrainSettings", "run_recovery"]
