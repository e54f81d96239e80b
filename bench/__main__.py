"""`python -m bench [smtp|memory|imap] …`: the command line; no subcommand runs all three
(what `make bench` does).

Exit codes: 0 when every message was taken and every acknowledgement arrived (or, for IMAP,
every message was stored and moved); 1 when a run did not complete that work, so its
figures would be meaningless; 2 when a needed server (Dovecot, PostgreSQL) is unavailable.
A missed target (p99, memory growth) is a figure, not an error: it does not change the code.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from bench.desk import postgres_problem
from bench.imap_bench import imap_problem, run_imap
from bench.memory_bench import ATTACHMENT_MB, ATTACHMENT_QUICK_MB, run_memory
from bench.report import YARDSTICKS, machine, print_report, say, write_json
from bench.smtp_bench import run_smtp

SMTP_MESSAGES, SMTP_QUICK = 2000, 300
IMAP_MESSAGES, IMAP_QUICK = 2000, 300


def _shared_options(defaults: bool) -> tuple[argparse.ArgumentParser, ...]:
    """The options of the whole run and of its parts. A part's copy has no defaults, so that an
    option given before the part's name (`--preload N smtp`) is not overwritten by it."""
    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quick", action="store_true", default=default(False),
                        help="small sizes (~20 s): checks that it works")
    common.add_argument("--json", metavar="FILE", default=default(None), help="also write the figures as JSON")
    memory_opts = argparse.ArgumentParser(add_help=False)
    memory_opts.add_argument("--attachment-mb", type=float, default=default(None),
                             help=f"memory: attachment size in MB ({ATTACHMENT_MB:g}; quick {ATTACHMENT_QUICK_MB:g})")
    smtp_opts = argparse.ArgumentParser(add_help=False)
    smtp_opts.add_argument("--concurrency", type=int, default=default(8), help="SMTP connections at once (8)")
    smtp_opts.add_argument("--per-connection", type=int, default=default(20), help="messages per connection (20)")
    smtp_opts.add_argument("--postgres", action="store_true", default=default(False),
                           help="also run maild on PostgreSQL")
    smtp_opts.add_argument("--seed", type=int, default=default(42), help="seed of the generated mail (42)")
    smtp_opts.add_argument("--preload", type=int, default=default(0), metavar="N",
                           help="also run maild on a database already holding N cases (3 messages each)")
    return common, smtp_opts, memory_opts


def parse_args(argv: list[str]) -> argparse.Namespace:
    common, smtp_opts, memory_opts = _shared_options(defaults=True)
    part_common, part_smtp, part_memory = _shared_options(defaults=False)

    parser = argparse.ArgumentParser(prog="python -m bench", parents=[common, smtp_opts, memory_opts],
                                     description="maild's ingest benchmark: SMTP against a do-nothing "
                                                 "server, a large attachment's memory, an IMAP backlog drain")
    parser.add_argument("--smtp-messages", type=int, help=f"SMTP messages ({SMTP_MESSAGES}; quick {SMTP_QUICK})")
    parser.add_argument("--imap-messages", type=int, help=f"IMAP backlog ({IMAP_MESSAGES}; quick {IMAP_QUICK})")
    sub = parser.add_subparsers(dest="command")
    smtp = sub.add_parser("smtp", parents=[part_common, part_smtp], help="SMTP: do-nothing server vs maild")
    smtp.add_argument("--messages", type=int, help=f"how many ({SMTP_MESSAGES}; quick {SMTP_QUICK})")
    smtp.add_argument("--rate", type=float, metavar="R",
                      help="only maild, paced at R msgs/s (default: full speed, then half the rate reached)")
    sub.add_parser("memory", parents=[part_common, part_memory],
                   help="memory: maild's RSS growth for one mail with a large attachment")
    imap = sub.add_parser("imap", parents=[part_common], help="IMAP: drain a Dovecot backlog")
    imap.add_argument("--messages", type=int, help=f"backlog size ({IMAP_MESSAGES}; quick {IMAP_QUICK})")
    return parser.parse_args(argv)


def _size(given: int | None, quick: bool, full: int, small: int) -> int:
    if given is not None:
        if given < 1:
            raise SystemExit("the number of messages must be positive")
        return given
    return small if quick else full


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    command = args.command or "all"
    do_smtp, do_memory, do_imap = (command in ("all", name) for name in ("smtp", "memory", "imap"))
    if do_smtp and (args.concurrency < 1 or args.per_connection < 1):
        raise SystemExit("--concurrency and --per-connection must be positive")
    rate = getattr(args, "rate", None)
    if rate is not None and rate <= 0:
        raise SystemExit("--rate must be positive")
    attachment_mb = getattr(args, "attachment_mb", None)
    if attachment_mb is not None and attachment_mb <= 0:
        raise SystemExit("--attachment-mb must be positive")
    results: dict[str, Any] = {"machine": machine()}
    status = 0
    started = time.perf_counter()

    if do_smtp and args.postgres and (problem := postgres_problem()):
        print(f"bench: cannot run on PostgreSQL: {problem}", file=sys.stderr)
        return 2
    imap_skip = imap_problem() if do_imap else None
    if imap_skip and command == "imap":
        print(f"bench: cannot run the IMAP benchmark: {imap_skip}", file=sys.stderr)
        return 2

    if do_smtp:
        n = _size(args.messages if command == "smtp" else args.smtp_messages, args.quick, SMTP_MESSAGES, SMTP_QUICK)
        databases = ["sqlite", "postgresql"] if args.postgres else ["sqlite"]
        smtp = run_smtp(n, args.concurrency, args.per_connection, databases, seed=args.seed, preload=args.preload,
                        rate=rate)
        results["smtp"] = smtp
        runs = [*(smtp[k] for k in YARDSTICKS if k in smtp),
                *smtp["maild"].values(), *smtp["paced"].values()]
        if any(f.get("failed") or not f.get("all_acks_delivered", True) or "error" in f for f in runs):
            status = 1
    if do_memory:
        if attachment_mb is None:
            attachment_mb = ATTACHMENT_QUICK_MB if args.quick else ATTACHMENT_MB
        try:
            results["memory"] = run_memory(attachment_mb)
        except Exception as e:  # keep the other figures; say what broke
            results["memory"] = {"error": f"{type(e).__name__}: {e}"[-3000:]}
        if not results["memory"].get("complete"):
            status = 1
    if do_imap:
        if imap_skip:
            results["imap"] = {"skipped": imap_skip}
        else:
            n = _size(args.messages if command == "imap" else args.imap_messages, args.quick,
                      IMAP_MESSAGES, IMAP_QUICK)
            try:
                results["imap"] = run_imap(n)
            except Exception as e:  # keep the SMTP figures; say what broke
                results["imap"] = {"error": f"{type(e).__name__}: {e}"[-3000:]}
            if not results["imap"].get("all_drained"):
                status = 1

    results["total_s"] = round(time.perf_counter() - started, 1)
    print_report(results)
    say(f"done in {results['total_s']} s")
    if args.json:
        write_json(args.json, results)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
