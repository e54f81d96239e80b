"""The database writer's CPU per mail, in-process: `python -m bench.pipeline [--mails N] [--profile]`.

The writer thread is maild's serial bottleneck, so this measures only what it does: the
pipeline (`deliveries_for` + `ingest_message`) and the commit, in batches of 8 mails run by
`IngestWriter._commit_batch` itself (in this thread), on a fresh SQLite database. Mails are
generated and parsed first, untimed. CPU time (`time.process_time`), not wall time: on a
shared machine wall time measures the neighbours.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from bench.desk import PROTECTION_TOML
from bench.loadgen import Mail, generate
from maild.config import load_config
from maild.domain.message import InboundMessage
from maild.ingest.committer import deliveries_for
from maild.ingest.parse import parse_message
from maild.ingest.pipeline import ingest_message
from maild.ingest.writer import IngestWriter
from maild.notify.samples import RECIPIENT_KINDS, TEMPLATE_KINDS, sample_context
from maild.runtime import Runtime, build_runtime
from maild.store.db import database_url, make_engine, make_sessionmaker, prepare_database
from tests.support.daemon import write_config

BATCH = 8  # mails per transaction


def _compile_templates(rt: Runtime) -> None:
    """Every template rendered once before the clock runs, as the daemon does at start: Jinja's
    compiling is a one-off, not a cost of each mail."""
    for kind in TEMPLATE_KINDS:
        for recipient_kind in RECIPIENT_KINDS:
            rt.renderer.render(kind, sample_context(rt.config, recipient_kind))


def _time_blob_writes(rt: Runtime) -> list[float]:
    """Counts the CPU of the blob stores' writes apart (fsync'd files, due to leave the writer
    thread), by wrapping the two stores' `put`; returns the running total in a one-item list."""
    spent = [0.0]
    for store in (rt.raw_store, rt.attachment_store):
        def put(data: bytes, sha256: str | None = None, _put: Callable[..., str] = store.put) -> str:
            c0 = time.process_time()
            try:
                return _put(data, sha256)
            finally:
                spent[0] += time.process_time() - c0
        store.put = put  # type: ignore[method-assign]
    return spent


@dataclass
class Run:
    """CPU seconds of one run: overall, per outcome (created / threaded), blob writes."""

    mails: int
    total: float
    by_kind: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    count: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    blobs_by_kind: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    blobs: list[float] = field(default_factory=lambda: [0.0])  # running total, kept by _time_blob_writes


def _job(rt: Runtime, m: Mail, msg: InboundMessage, run: Run) -> Callable[[Session], Any]:
    """The writer's job for one mail (as `Committer.submit` builds it), timed by outcome."""
    def job(session: Session) -> None:
        c0, b0 = time.process_time(), run.blobs[0]
        outcomes = [ingest_message(session, msg, d, rt) for d in deliveries_for(rt, [m.rcpt], m.mail_from, "smtp")]
        kind = outcomes[0].action if outcomes else "none"
        run.by_kind[kind] += time.process_time() - c0
        run.blobs_by_kind[kind] += run.blobs[0] - b0
        run.count[kind] += 1
    return job


def run_once(mails: int, prof: cProfile.Profile | None = None) -> Run:
    folder = Path(tempfile.mkdtemp(prefix="maild-pipeline-"))
    try:
        cfg_path = write_config(folder, db_url=f"sqlite:///{folder}/maild.db", outbound_url="smtp://127.0.0.1:1",
                                smtp_port=1, max_bytes=26_214_400, extra=PROTECTION_TOML)
        cfg = load_config(str(cfg_path))
        engine = make_engine(database_url(cfg))
        prepare_database(engine)
        sessions = make_sessionmaker(engine)
        rt = build_runtime(cfg)
        _compile_templates(rt)
        parsed = [(m, parse_message(m.raw)) for m in generate(mails, 42)]
        run = Run(mails=len(parsed), total=0.0)
        run.blobs = _time_blob_writes(rt)
        if prof:
            prof.enable()
        total0 = time.process_time()
        writer = IngestWriter(sessions)
        for i in range(0, len(parsed), BATCH):
            batch: list[tuple[Callable[[Session], Any], Future[Any]]] = [
                (_job(rt, m, msg, run), Future()) for m, msg in parsed[i:i + BATCH]]
            writer._commit_batch(batch)  # what the writer thread does with a batch, in this thread
            for _, fut in batch:
                fut.result()  # a mail that failed fails the benchmark
        run.total = time.process_time() - total0
        if prof:
            prof.disable()
        engine.dispose()
        return run
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def report(run: Run) -> None:
    n = run.mails
    commits = run.total - sum(run.by_kind.values())
    print(f"{n} mails, {BATCH} a transaction: {1000 * run.total / n:.2f} ms CPU per mail (pipeline + commit)")
    for kind in sorted(run.count):
        each, blobs = (1000 * x[kind] / run.count[kind] for x in (run.by_kind, run.blobs_by_kind))
        print(f"  {kind:<10} {run.count[kind]:>5} mails  {each:.2f} ms each in the pipeline, {each - blobs:.2f} "
              "without blob writes")
    print(f"  transactions          {1000 * commits / n:.2f} ms per mail (begin, SAVEPOINTs if any, commit)")
    print(f"  of the whole: blob writes (raw mail, attachments) {1000 * run.blobs[0] / n:.2f} ms per mail, "
          f"the rest {1000 * (run.total - run.blobs[0]) / n:.2f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__.split("\n\n")[0])
    ap.add_argument("--mails", type=int, default=1000)
    ap.add_argument("--profile", action="store_true", help="print a cProfile top-40 by cumulative time")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs; the one with the least CPU is reported (neighbours only ever add)")
    args = ap.parse_args()
    prof = cProfile.Profile() if args.profile else None
    runs = [run_once(args.mails, prof) for _ in range(max(1, args.repeat))]
    report(min(runs, key=lambda r: r.total))
    if prof:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(40)


if __name__ == "__main__":
    main()
