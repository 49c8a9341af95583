"""A simulated disk for one node: files with durable and cached bytes, a journaled directory, latencies.

Owns what a power cut and a process crash do to bytes. A `SimFile` holds `durable` bytes
(fsynced: they survive anything) followed by `cached` bytes (written, in the page cache: they
survive a process crash, because the kernel keeps them, but not a power cut). Files are
append-only, as the WAL writes them.

A power cut (`SimDisk.power_loss`) keeps, per file, a random prefix of its cached bytes
(write-back may have flushed some of them), and may damage the end of what it kept: flip a
bit of the last kept byte (a torn sector), or extend the file with zeros or garbage where the
lost bytes were (the size reached the disk, the data did not). Damage never touches a
file's first `atomic_size` bytes: the WAL's 32-byte segment header is one write inside one
sector, which disks write whole. Directory operations (create, unlink) are journaled in
order: a directory fsync makes them all durable, a power cut keeps a random prefix of the
pending ones (ext4's metadata journal), so a segment created without a directory fsync may
vanish, and one unlinked without it may come back.

A process crash changes nothing here: the page cache and the directory belong to the kernel.

Latencies (fsync, write, directory fsync) are drawn from the run's PRNG through a
`DiskProfile`; a slow disk episode (`slow = True`) multiplies fsync latency. A disk that
lies (`fsync_lies`) acknowledges fsync without making anything durable: a fault no code can
survive, used to prove that the checker notices lost acknowledged writes.

Must never: keep bytes of a file beyond what was written to it, or lose durable bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .simclock import SimClock


@dataclass
class DiskProfile:
    """How fast the disk is and how a power cut damages it (all probabilities per file, per cut)."""

    fsync_s: tuple[float, float] = (0.0002, 0.003)
    slow_fsync_s: tuple[float, float] = (0.05, 1.5)  # while `slow` is set
    write_s_per_kib: float = 0.000002  # pwrite into the page cache
    dir_fsync_s: tuple[float, float] = (0.0001, 0.001)
    slow: bool = False
    torn_probability: float = 0.2  # flip a bit of the last kept byte
    zero_tail_probability: float = 0.1  # the lost bytes read back as zeros
    garbage_tail_probability: float = 0.05  # ... or as garbage
    fsync_lies: bool = False


@dataclass
class FileLoss:
    """What a power cut did to one file: `intact_size` bytes are exactly what was written."""

    name: str
    durable_before: int
    cached_before: int
    kept: int
    intact_size: int
    damage: str | None  # None, "torn", "zeros", "garbage"


@dataclass
class SimFile:
    name: str
    atomic_size: int = 0  # the first bytes are never damaged (see the module docstring)
    durable: bytearray = field(default_factory=bytearray)
    cached: bytearray = field(default_factory=bytearray)  # written, not yet fsynced

    @property
    def size(self) -> int:
        return len(self.durable) + len(self.cached)

    def read(self) -> bytes:
        """What a read() of the whole file returns (page cache included)."""
        return bytes(self.durable + self.cached)

    def write(self, offset: int, data: bytes) -> None:
        assert offset == self.size, f"{self.name}: writes are appends ({offset} != {self.size})"
        self.cached += data

    def fsync(self) -> None:
        self.durable += self.cached
        self.cached.clear()

    def truncate_and_sync(self, size: int) -> None:
        """ftruncate then fdatasync, as every truncation in the WAL shell is followed by one."""
        assert 0 <= size <= self.size
        if size >= len(self.durable):
            del self.cached[size - len(self.durable) :]
            self.fsync()
        else:
            del self.durable[size:]
            self.cached.clear()

    def lose_power(self, clock: SimClock, profile: DiskProfile) -> FileLoss:
        durable_before, cached_before = len(self.durable), len(self.cached)
        kept = clock.prng.randint(0, cached_before)  # write-back may have flushed a prefix
        self.durable += self.cached[:kept]
        intact = len(self.durable)
        damage = None
        lost = cached_before - kept
        if intact > self.atomic_size:
            if kept and clock.chance(profile.torn_probability):
                self.durable[-1] ^= 1 << clock.prng.randrange(8)
                intact -= 1
                damage = "torn"
            elif lost and clock.chance(profile.zero_tail_probability):
                self.durable += bytes(lost)
                damage = "zeros"
            elif lost and clock.chance(profile.garbage_tail_probability):
                self.durable += clock.prng.randbytes(lost)
                damage = "garbage"
            if damage in ("zeros", "garbage"):
                # Where the tail happens to read back as written (zeros written as zeros: a
                # record ending in zero fields), those bytes are intact too.
                written, tail = self.cached[kept:], self.durable[intact:]
                same = 0
                while same < lost and written[same] == tail[same]:
                    same += 1
                intact += same
        self.cached.clear()
        return FileLoss(self.name, durable_before, cached_before, kept, intact, damage)


class SimDisk:
    """One node's directory of SimFiles (flat: the WAL directory), with a journaled namespace."""

    def __init__(self, clock: SimClock, profile: DiskProfile | None = None) -> None:
        self.clock = clock
        self.profile = profile or DiskProfile()
        self._files: dict[str, SimFile] = {}  # the namespace as processes see it
        self._durable_files: dict[str, SimFile] = {}  # ... as of the last directory fsync
        self._dir_ops: list[tuple[str, str, SimFile]] = []  # ("create" | "unlink", name, file)
        self.fsync_count = 0
        self.power_loss_count = 0
        self.vanished: list[str] = []  # files the last power cut removed: created, entry never fsynced

    # -- the namespace ------------------------------------------------------------------
    def listdir(self) -> list[str]:
        return sorted(self._files)

    def open(self, name: str) -> SimFile:
        return self._files[name]

    def exists(self, name: str) -> bool:
        return name in self._files

    def create(self, name: str, *, atomic_size: int = 0) -> SimFile:
        assert name not in self._files, f"{name} exists (O_EXCL)"
        file = SimFile(name, atomic_size)
        self._files[name] = file
        self._dir_ops.append(("create", name, file))
        return file

    def unlink(self, name: str) -> None:
        file = self._files.pop(name)
        self._dir_ops.append(("unlink", name, file))

    def fsync_dir(self) -> None:
        self._dir_ops.clear()
        self._durable_files = dict(self._files)

    def fsync(self, file: SimFile) -> None:
        """fdatasync: the file's cached bytes become durable (unless the disk lies)."""
        self.fsync_count += 1
        if not self.profile.fsync_lies:
            file.fsync()

    # -- latencies ----------------------------------------------------------------------
    def fsync_latency(self) -> float:
        low, high = self.profile.slow_fsync_s if self.profile.slow else self.profile.fsync_s
        return self.clock.uniform(low, high)

    def write_latency(self, size: int) -> float:
        return self.profile.write_s_per_kib * (1 + size / 1024)

    def dir_fsync_latency(self) -> float:
        return self.clock.uniform(*self.profile.dir_fsync_s)

    # -- faults -------------------------------------------------------------------------
    def power_loss(self, *, dir_ops_kept: int | None = None) -> dict[str, FileLoss]:
        """Cut the power: pending directory ops keep a prefix (random, or `dir_ops_kept` for a
        targeted test), files keep a prefix of their cache.

        Returns what happened to each file that still exists afterwards, by name."""
        self.power_loss_count += 1
        files = dict(self._durable_files)
        kept_ops = self.clock.prng.randint(0, len(self._dir_ops)) if dir_ops_kept is None else dir_ops_kept
        for op, name, file in self._dir_ops[:kept_ops]:
            if op == "create":
                files[name] = file
            else:
                files.pop(name, None)
        self.vanished = []
        for op, name, file in self._dir_ops[kept_ops:]:
            if op == "create":
                file.durable.clear()  # never reachable again: its data went with the entry
                file.cached.clear()
                if self._files.get(name) is file:
                    self.vanished.append(name)
        self._dir_ops.clear()
        self._files = dict(sorted(files.items()))
        self._durable_files = dict(self._files)
        losses = {}
        for name, file in self._files.items():
            if file.cached:
                losses[name] = file.lose_power(self.clock, self.profile)
            else:
                losses[name] = FileLoss(name, len(file.durable), 0, 0, len(file.durable), None)
        return losses
