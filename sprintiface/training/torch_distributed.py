"""Several RASR trainer processes as one training run: torch.distributed from the launcher's environment.

A site that runs N RASR nn-trainer processes, each on its own corpus partition
(RASR's ``corpus.partition`` / ``select-partition``), starts them with the
standard variables a launcher sets: ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT``. With ``WORLD_SIZE`` > 1 the torch trainer of each process
joins the others (gloo on CPU, NCCL on GPU) and trains one model with
DistributedDataParallel: gradients are all-reduced on every backward pass.

The partitions feed different numbers of segments. Within an epoch the
processes run under ``torch.distributed.algorithms.Join``: a process that has
run out shadows the others' collectives (contributing nothing), so none waits
forever, and gradients are averaged over the processes still training
(``divide_by_initial_world_size=False``), so none is weighted down. At the
epoch end the process that trained the most mini-batches, which therefore
holds every update, sends its parameters, buffers and optimizer state to the
others (:meth:`ProcessGroup.share_state`), and their parameters are checked to
be bit-identical; process 0 then writes the checkpoint and the export.

Every process goes through every epoch (the session starts and ends the
epochs a process is fed nothing of), so they meet at every epoch end. A
process that RASR feeds no segment at all never starts its trainer (RASR
calls init lazily). So the processes first meet at a rendezvous of their own
(a TCPStore served by process 0 at MASTER_ADDR:MASTER_PORT, where each
process records that it started): a process that waits there longer than
``distributed_timeout`` seconds for the others ends with a TrainerError naming
the processes that never came (process 0 tells the others whom it misses, so
that all of them say the same). The same timeout bounds every collective
after that (gloo / NCCL), so a process that hangs stops the others within
it; a process that dies breaks their connections at once. Only the wait for
process 0's files at an epoch end is not bounded by it (a large model's
export may take longer): the others wait as long as process 0 is there.
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import time
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch.distributed.algorithms.join import Join

from sprintiface.errors import ConfigError, TrainerError
from sprintiface.log import logger

#: Keys of the rendezvous store: each process's arrival, process 0's verdict, the others' receipt of it.
STARTED, MISSING, TOLD, OUTCOME = "sprintiface/started/", "sprintiface/missing", "sprintiface/told/", \
    "sprintiface/outcome/"
#: How often the rendezvous store is polled, and how long process 0 waits for the others to read its verdict.
POLL_SECONDS, VERDICT_SECONDS = 0.05, 10.0


def _integer_variable(name: str, minimum: int) -> int:
    value = os.environ.get(name)
    number: Optional[int]
    try:
        number = int(value or "")
    except ValueError:
        number = None
    if number is None or number < minimum:
        raise ConfigError(f"environment variable {name}: expected an integer >= {minimum} for a distributed "
                          f"torch trainer (WORLD_SIZE={os.environ.get('WORLD_SIZE')!r}); got {value!r}")
    return number


def parameter_digest(module: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer, in state_dict order: equal digests, equal models."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode("utf-8"))
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class ProcessGroup:
    """This process's place in a distributed run; :meth:`from_environment` makes one
    only when ``WORLD_SIZE`` > 1."""

    def __init__(self, rank: int, world_size: int, device: torch.device, store: Optional[dist.TCPStore] = None):
        self.rank = rank
        self.world_size = world_size
        self.device = device
        self.store = store
        #: The epoch's Join context, entered at begin_epoch and left at end_epoch.
        self._join: Optional[contextlib.ExitStack] = None
        self._outcomes = 0

    @classmethod
    def from_environment(cls, device: torch.device, timeout: float = 300.0) -> Optional[ProcessGroup]:
        """Join the run the launcher's variables describe (blocks until every process has
        joined, at most ``timeout`` seconds: then TrainerError naming the missing processes);
        None for a single process (WORLD_SIZE unset or 1)."""
        if os.environ.get("WORLD_SIZE", "").strip() in ("", "1"):
            return None
        world_size = _integer_variable("WORLD_SIZE", 1)
        rank = _integer_variable("RANK", 0)
        if rank >= world_size:
            raise ConfigError(f"environment variable RANK: expected a value below WORLD_SIZE={world_size}; "
                              f"got {rank}")
        for name in ("MASTER_ADDR", "MASTER_PORT"):
            if not os.environ.get(name):
                raise ConfigError(f"environment variable {name}: a distributed torch trainer (WORLD_SIZE="
                                  f"{world_size}) needs it (the address and port of process 0); it is not set")
        _integer_variable("MASTER_PORT", 1)
        backend = "nccl" if device.type == "cuda" else "gloo"
        address, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
        logger.info("torch trainer: process %d of %d joins %s:%s (%s), waiting at most %g s "
                    "(distributed_timeout) for the others", rank, world_size, address, port, backend, timeout)
        store = _Rendezvous(rank, world_size, address, port, timeout).meet()
        try:
            dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world_size,
                                    timeout=datetime.timedelta(seconds=timeout))
        except Exception as error:
            raise TrainerError(f"torch trainer process {rank} of {world_size} cannot join "
                               f"{address}:{port}: {error}") from error
        return cls(rank, world_size, device, store)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` in DistributedDataParallel (parameters broadcast from process 0 here)."""
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids)

    def begin_epoch(self, network: torch.nn.Module) -> None:
        """Enter the epoch's Join context (``network`` is the DistributedDataParallel module of :meth:`wrap`)."""
        from torch.nn.parallel import DistributedDataParallel

        if not isinstance(network, DistributedDataParallel):
            raise TypeError(f"begin_epoch: expected the module of wrap(), got {type(network).__name__}")
        join = contextlib.ExitStack()
        join.enter_context(Join([network], divide_by_initial_world_size=False))
        self._join = join

    def end_epoch(self) -> None:
        """Leave the epoch's Join context: wait, shadowing the others, until every process is done."""
        join, self._join = self._join, None
        if join is not None:
            join.close()

    def most_trained_rank(self, batches: int) -> int:
        """The process that trained the most mini-batches this epoch (the lowest such rank)."""
        counts: list[int] = [0] * self.world_size
        dist.all_gather_object(counts, batches)
        return max(range(self.world_size), key=lambda rank: (counts[rank], -rank))

    def share_state(self, state: Optional[Any], source: int) -> Any:
        """``state`` of process ``source`` (any picklable object of tensors), on every process."""
        box = [state if self.rank == source else None]
        dist.broadcast_object_list(box, src=source)
        return box[0]

    def check_identical(self, module: torch.nn.Module, epoch: int) -> str:
        """The parameter digest, after checking every process has the same one."""
        digest = parameter_digest(module)
        digests: list[str] = [""] * self.world_size
        dist.all_gather_object(digests, digest)
        if len(set(digests)) != 1:
            raise TrainerError(f"after epoch {epoch} the processes' models differ (parameter digests "
                               f"{', '.join(f'{rank}: {d[:12]}' for rank, d in enumerate(digests))})")
        return digest

    def outcome_of_main(self, failure: Optional[str]) -> Optional[str]:
        """Process 0's ``failure`` text (or None), on every process: the others wait until
        process 0 has written the epoch's files (or failed to), however long that takes,
        as long as process 0 is there (its store breaks when it ends)."""
        self._outcomes += 1
        key = f"{OUTCOME}{self._outcomes}"
        if self.store is None:
            shared: Optional[str] = self.share_state(failure, 0)
            return shared
        if self.is_main:
            self.store.set(key, "" if failure is None else "failed: " + failure)
            return failure
        waited, told = time.monotonic(), 0
        try:
            while not self.store.check([key]):
                time.sleep(POLL_SECONDS)
                if time.monotonic() - waited > 60 * (told + 1):
                    told += 1
                    logger.info("torch trainer: process %d waits for process 0 to write its files (%d min)",
                                self.rank, told)
            text: str = self.store.get(key).decode("utf-8")
        except Exception as error:
            raise TrainerError(f"torch trainer process {self.rank} of {self.world_size}: process 0 ended while "
                               f"it wrote the epoch's files (its store at {os.environ.get('MASTER_ADDR')}:"
                               f"{os.environ.get('MASTER_PORT')} is gone: {error}); see process 0's log") from None
        return text[len("failed: "):] if text else None

    def close(self) -> None:
        self._join = None
        if dist.is_initialized():
            dist.destroy_process_group()
        self.store = None


def _ranks(ranks: list[int]) -> str:
    return f"process{'es' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))}"


class _Rendezvous:
    """The processes' first meeting: every process records itself in process 0's TCPStore
    and waits, at most ``timeout`` seconds, for the others (see the module docstring)."""

    def __init__(self, rank: int, world_size: int, address: str, port: int, timeout: float):
        self.rank, self.world_size, self.address, self.port, self.timeout = rank, world_size, address, port, timeout
        self.where = f"{address}:{port}"

    def missing_text(self, missing: list[int]) -> str:
        whose = "its" if len(missing) == 1 else "their"
        return (f"torch trainer process {self.rank} of {self.world_size}: {_ranks(missing)} of {self.world_size} "
                f"did not start {whose} trainer within distributed_timeout {self.timeout:g} s. RASR starts a "
                f"trainer only with its process's first segment, so the corpus partition of {_ranks(missing)} "
                f"most likely has no segment. Give every process segments: a segment list or corpus that puts at "
                f"least one segment into every partition (corpus.partition = WORLD_SIZE = {self.world_size}, "
                f"corpus.select-partition = RANK), or fewer processes; if {_ranks(missing)} only starts late, "
                f"raise distributed_timeout")

    def meet(self) -> dist.TCPStore:
        deadline = time.monotonic() + self.timeout
        try:
            store = dist.TCPStore(self.address, self.port, self.world_size, is_master=self.rank == 0,
                                  timeout=datetime.timedelta(seconds=self.timeout), wait_for_workers=False)
        except Exception as error:
            if self.rank == 0:
                raise TrainerError(f"torch trainer process 0 of {self.world_size} cannot serve the processes' "
                                   f"rendezvous at {self.where} (MASTER_ADDR, MASTER_PORT): {error}") from None
            raise TrainerError(self.missing_text([0]) + f" (or MASTER_ADDR:MASTER_PORT {self.where}, where "
                               f"process 0 serves the rendezvous, does not reach it: {error})") from None
        keys = [f"{STARTED}{rank}" for rank in range(self.world_size)]
        try:
            store.set(keys[self.rank], str(os.getpid()))
            while True:
                if self.rank != 0 and store.check([MISSING]):  # process 0's verdict
                    missing = [int(rank) for rank in store.get(MISSING).decode("ascii").split(",")]
                    store.set(f"{TOLD}{self.rank}", "1")
                    raise TrainerError(self.missing_text(missing))
                if store.check(keys):
                    break
                if time.monotonic() >= deadline:
                    missing = [rank for rank in range(self.world_size) if not store.check([keys[rank]])]
                    if self.rank == 0:
                        self._tell(store, keys, missing)
                    raise TrainerError(self.missing_text(missing))
                time.sleep(POLL_SECONDS)
        except TrainerError:
            raise
        except Exception as error:  # the store went away: process 0 ended
            raise TrainerError(f"torch trainer process {self.rank} of {self.world_size}: the rendezvous at "
                               f"{self.where} ended while this process waited for the others (process 0 ended: "
                               f"see its log): {error}") from None
        logger.info("torch trainer: all %d processes started", self.world_size)
        return store

    def _tell(self, store: dist.TCPStore, keys: list[str], missing: list[int]) -> None:
        """Process 0: publish whom it misses, and wait a little for the others to read it
        (the store ends with this process)."""
        store.set(MISSING, ",".join(map(str, missing)))
        present = [rank for rank in range(1, self.world_size) if rank not in missing]
        until = time.monotonic() + VERDICT_SECONDS
        while present and time.monotonic() < until:
            if store.check([f"{TOLD}{rank}" for rank in present]):
                return
            time.sleep(POLL_SECONDS)
