"""`python -m bench [smtp|imap] …`: the command line; no subcommand runs both (what `make bench` does).

Exit codes: 0 when every message was taken and every acknowledgement arrived (or, for IMAP,
every message was stored and moved); 1 when the run did not complete that work, so its
figures would be meaningless; 2 when a needed server (Dovecot, PostgreSQL) is unavailable.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from bench.desk import postgres_problem
from bench.imap_bench import imap_problem, run_imap
from bench.report import machine, print_report, say, write_json
from bench.smtp_bench import run_smtp

SMTP_MESSAGES, SMTP_QUICK = 2000, 300
IMAP_MESSAGES, IMAP_QUICK = 2000, 300


def parse_args(argv: list[str]) -> argparse.Namespace:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quick", action="store_true", help="small sizes (~20 s): checks that it works")
    common.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    smtp_opts = argparse.ArgumentParser(add_help=False)
    smtp_opts.add_argument("--concurrency", type=int, default=8, help="SMTP connections at once (8)")
    smtp_opts.add_argument("--per-connection", type=int, default=20, help="messages per connection (20)")
    smtp_opts.add_argument("--postgres", action="store_true", help="also run maild on PostgreSQL")
    smtp_opts.add_argument("--seed", type=int, default=42, help="seed of the generated mail (42)")
    smtp_opts.add_argument("--preload", type=int, default=0, metavar="N",
                           help="also run maild on a database already holding N cases (3 messages each)")

    parser = argparse.ArgumentParser(prog="python -m bench", parents=[common, smtp_opts],
                                     description="maild's ingest benchmark: SMTP against a do-nothing "
                                                 "server, then an IMAP backlog drain")
    parser.add_argument("--smtp-messages", type=int, help=f"SMTP messages ({SMTP_MESSAGES}; quick {SMTP_QUICK})")
    parser.add_argument("--imap-messages", type=int, help=f"IMAP backlog ({IMAP_MESSAGES}; quick {IMAP_QUICK})")
    sub = parser.add_subparsers(dest="command")
    smtp = sub.add_parser("smtp", parents=[common, smtp_opts], help="SMTP: do-nothing server vs maild")
    smtp.add_argument("--messages", type=int, help=f"how many ({SMTP_MESSAGES}; quick {SMTP_QUICK})")
    imap = sub.add_parser("imap", parents=[common], help="IMAP: drain a Dovecot backlog")
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
    if args.concurrency < 1 or args.per_connection < 1:
        raise SystemExit("--concurrency and --per-connection must be positive")
    command = args.command or "all"
    do_smtp, do_imap = command in ("all", "smtp"), command in ("all", "imap")
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
        smtp = run_smtp(n, args.concurrency, args.per_connection, databases, seed=args.seed, preload=args.preload)
        results["smtp"] = smtp
        runs = [smtp["do_nothing"], *smtp["maild"].values()]
        if any(f.get("failed") or not f.get("all_acks_delivered", True) or "error" in f for f in runs):
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
