"""Checkpoints of ``rank_layers``: the running sums and how far through the stream of images they reach.

Progress is counted in samples of the loader's stream, not in batches, so a run
resumed with other batch sizes picks up at the right image. A fingerprint of
every sample before that point guards against resuming with other images, also
when the checkpoint is finished (the loader is then read once more, without
any attribution). The run's identity, a digest of the model's weights and of the
functions it was given (a callable target, output or loss: their code and the values they close over), guards
against resuming with other weights of the same architecture or another function of the same name. A digest of
the file's whole content guards against a file edited or damaged after it was written.
Under ``torch.distributed`` every process keeps its own file
(``name.rank0-of-2.json``, ...) and a resumed run must have as many processes
and the same batches, since they decide which process scored what.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

from torch import Tensor

from macattr.accumulators import ScoreSum
from macattr.files import write_text_atomic
from macattr.ranking.batches import fingerprint
from macattr.records import differences


@dataclass
class Progress:
    """samples: stream position up to which the work is done; digest: fingerprint of those samples;
    batches: the loader's batches those samples came in.

    Examples:
        >>> Progress()
        Progress(samples=0, digest='', complete=False, batches=0)
    """

    samples: int = 0
    digest: str = ""
    complete: bool = False
    batches: int = 0


class StreamCursor:
    """Walks the stream sample by sample, fingerprinting it, and checks it against a checkpoint's record.

    Examples:
        >>> import torch
        >>> cursor = StreamCursor(Progress())
        >>> cursor.advance(torch.rand(3, 2)), cursor.position  # nothing was done before: no sample to skip
        (0, 3)
    """

    def __init__(self, resume: Progress, same_batches: bool = False) -> None:
        self.resume, self.same_batches = resume, same_batches
        self.position, self.batches, self.digest = 0, 0, ""

    def advance(self, x: Tensor) -> int:
        """Take the batch ``x`` (B, ...); return how many of its leading samples were done before the checkpoint.

        With ``same_batches`` (several processes), the checkpoint's samples must also come in its batches.
        """
        done = min(max(self.resume.samples - self.position, 0), x.shape[0])
        self.batches += 1
        for sample in x:
            self.digest = fingerprint(self.digest, sample)
            self.position += 1
            if self.position == self.resume.samples and self.digest != self.resume.digest:
                raise ValueError(
                    f"the loader yields other images than the checkpoint was written with (the first "
                    f"{self.resume.samples} samples differ); pass the same data in the same order, "
                    "or another checkpoint"
                )
            if self.resume.complete and self.position > self.resume.samples:
                raise ValueError(
                    f"the loader yields more images than the {self.resume.samples} of the finished checkpoint it "
                    "resumes; pass the same data, or another checkpoint"
                )
            if self.position == self.resume.samples and self.same_batches and self.batches != self.resume.batches:
                raise ValueError(
                    f"resuming under torch.distributed needs the batches of the interrupted run: its first "
                    f"{self.resume.samples} samples came in {self.resume.batches} batches, here in {self.batches}"
                )
        return done

    def finish(self) -> None:
        """Refuse a stream that ended before the checkpoint's position."""
        if self.position < self.resume.samples:
            raise ValueError(
                f"the loader yields {self.position} samples, fewer than the {self.resume.samples} the checkpoint "
                "has already analysed; pass the same data, or another checkpoint"
            )


def process_path(path: Path, rank: int, world: int) -> Path:
    """The file of process ``rank`` of ``world`` for the checkpoint path the user gave (the path itself for one
    process).

    Examples:
        >>> process_path(Path("ck.json"), 1, 2).name, process_path(Path("ck.json"), 0, 1).name
        ('ck.rank1-of-2.json', 'ck.json')
    """
    path = Path(path)
    return path if world == 1 else path.with_name(f"{path.stem}.rank{rank}-of-{world}{path.suffix}")


@dataclass
class Checkpoint:
    """A JSON file holding the settings, the running sums and the progress; written atomically.

    Examples:
        >>> import tempfile, torch
        >>> record = Checkpoint(Path(tempfile.mkdtemp()) / "run.json", "mac", {"n_steps": 8})
        >>> total = ScoreSum(["a"])
        >>> record.load(total)  # no file yet: nothing done
        Progress(samples=0, digest='', complete=False, batches=0)
        >>> total.update(torch.tensor([[2.0]]))
        >>> record.save(total, Progress(1, "abc"))
        >>> again = ScoreSum(["a"])
        >>> record.load(again), again.compute()
        (Progress(samples=1, digest='abc', complete=False, batches=0), {'a': 2.0})
    """

    path: Path
    method: str
    config: Dict[str, Any]
    world: int = 1
    identity: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_process(cls, path: Path, method: str, config: Dict[str, Any], rank: int, world: int,
                    identity: Optional[Dict[str, Any]] = None) -> Checkpoint:  # fmt: skip
        """Process ``rank`` of ``world``'s checkpoint for the path the user gave; refuses files of another
        number of processes."""
        path = Path(path)
        mine = process_path(path, rank, world)
        name = re.compile(re.escape(path.stem) + r"\.rank\d+-of-(\d+)" + re.escape(path.suffix))
        found = {match.group(1) for p in path.parent.glob("*") if (match := name.fullmatch(p.name))}
        others = sorted(found - {str(world)})
        if world > 1 and path.exists():
            others.append("1")
        if others:
            raise ValueError(
                f"checkpoint {path} was written by {others[0]} process(es), this run has {world}; resume with "
                f"{others[0]} (torchrun --nproc_per_node={others[0]}), or delete its files to start again"
            )
        return cls(mine, method, config, world, identity or {})

    def load(self, total: ScoreSum) -> Progress:
        """The progress recorded in the file (nothing done if there is none); loads its sums into ``total``."""
        if not self.path.exists():
            return Progress()
        try:
            state = json.loads(self.path.read_text(encoding="utf-8"))
            recorded = state.pop("content_sha256")
            progress = Progress(int(state["samples"]), str(state["digest"]), bool(state["complete"]),
                                int(state.get("batches", 0)))  # fmt: skip
            method, config, scores = state["method"], state["config"], state["scores"]
            identity = state.get("identity")
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            raise ValueError(
                f"checkpoint {self.path} is not a rank_layers checkpoint (of macattr 0.3 or later); delete it or "
                "pass another path"
            ) from None
        if recorded != _content_digest(state):
            raise ValueError(
                f"checkpoint {self.path} was changed after macattr wrote it (its content does not match its "
                "content_sha256); its sums cannot be trusted: delete it to start again"
            )
        if method != self.method or config != self.config:
            changed = "; ".join(differences({"method": method, **config}, {"method": self.method, **self.config}))
            raise ValueError(
                f"checkpoint {self.path} was written by another run (method or settings differ: {changed}); "
                "delete it or pass another checkpoint path"
            )
        if identity != self.identity:
            changed = ("it was written without a record of the weights (by an older macattr)" if identity is None
                       else "; ".join(differences(identity, self.identity)))  # fmt: skip
            raise ValueError(
                f"checkpoint {self.path} was written for other weights or functions ({changed}); its sums belong "
                "to that model: delete it or pass another checkpoint path"
            )
        total.load_state_dict(scores)
        return progress

    def save(self, total: ScoreSum, progress: Progress) -> None:
        document = {
            "method": self.method,
            "config": self.config,
            "scores": total.state_dict(),
            "samples": progress.samples,
            "digest": progress.digest,
            "complete": progress.complete,
            "batches": progress.batches,
            "world": self.world,
            "identity": self.identity,
        }
        document["content_sha256"] = _content_digest(document)
        write_text_atomic(self.path, json.dumps(document) + "\n")


def _content_digest(document: Dict[str, Any]) -> str:
    """SHA-256 of a checkpoint's content (every field but the digest itself), in a canonical JSON form."""
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


__all__ = [
    "Checkpoint",
    "Progress",
    "StreamCursor",
    "process_path",
]
