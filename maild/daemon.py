"""`maild run`: the SMTP receiver, the writer thread and the outbox worker on one event loop.

The long-running tasks (outbox, IMAP pollers, SLA timer) run under a Supervisor: each backs off
on failure, logs an incident once, and is started again if it ends anyway; their health is kept
in one `Health` object for /healthz."""

from __future__ import annotations

import asyncio
import functools
import gc
import os
import signal
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import structlog

from maild.config import keep_restart_only
from maild.config_checks import load_checked_config
from maild.domain.errors import ConfigError
from maild.ingest.committer import Committer
from maild.ingest.imap import ImapPoller
from maild.ingest.parse_pool import ParsePool, default_processes
from maild.ingest.smtp import (
    MaildHandler,
    SessionGate,
    SessionLimits,
    bind_smtp_sockets,
    clear_spool,
    refuse_waiting,
    replying,
    start_smtp_servers,
)
from maild.ingest.smtp_worker import SmtpInWorkers, parse_received
from maild.ingest.wire import ParsedMail
from maild.ingest.writer import IngestWriter
from maild.notify.outbox import OutboxWorker
from maild.notify.samples import render_all_templates
from maild.notify.transport import make_transport
from maild.runtime import Runtime, build_runtime
from maild.store.db import database_url, make_engine, make_sessionmaker, prepare_database
from maild.supervise import Health, Incident, Supervisor

log = structlog.get_logger("maild.daemon")


def sd_notify(state: str) -> None:
    """Tells systemd (Type=notify) we are ready, alive or stopping; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(address)
        s.sendall(state.encode())


async def watchdog_pings() -> None:
    usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
    if not usec:
        return
    while True:
        sd_notify("WATCHDOG=1")
        await asyncio.sleep(usec / 1_000_000 / 2)


async def poll_mailbox(poller: ImapPoller, supervisor: Supervisor) -> None:
    """Polls every poll_seconds; where the server offers IDLE, each cycle waits in IDLE until just
    before the next, so new mail arrives within seconds. A cycle never raises: it backs off and
    logs its own incidents (ImapPoller.cycle)."""
    every = poller.imap.poll_seconds
    loop = asyncio.get_running_loop()
    while not supervisor.stopping:
        started = loop.time()
        await asyncio.to_thread(poller.cycle, max(every - 1.0, 0.5))
        await supervisor.sleep(every - (loop.time() - started))


SLA_TIMER_SECONDS = 30


async def run_sla_timer(committer: Committer) -> None:
    """Escalations go through the writer thread, like mail: one writer, ordered commits."""
    from maild.casework import raise_due_sla_events

    rt = committer.runtime
    raised = await committer.writer.run(lambda session: raise_due_sla_events(session, rt))
    if raised:
        log.info("sla events raised", count=raised)


async def sla_timer(committer: Committer, supervisor: Supervisor, incident: Incident) -> None:
    """Every SLA_TIMER_SECONDS; while the database is away, backs off and the next run catches up."""
    while not supervisor.stopping:
        try:
            await run_sla_timer(committer)
        except Exception as e:
            delay = incident.failed(e)
        else:
            incident.succeeded()
            delay = SLA_TIMER_SECONDS
        await supervisor.sleep(delay)


def report_template_problems(rt: Runtime) -> None:
    """Renders every template once with sample data: compiled before a mail needs them, and a
    broken one is in the log now rather than at the first mail that needs it."""
    problems = render_all_templates(rt.config, rt.renderer)
    if problems:
        log.warning("template problems: mails that need these fail (maild outbox list) until the templates "
                    "are fixed and read again (SIGHUP or a restart)", problems=problems)


def settle(rt: Runtime) -> None:
    """Before the first mail: templates compiled, and what is loaded so far moved out of the
    garbage collector's way, so that its full passes stay short while mail waits for its 250."""
    report_template_problems(rt)
    gc.collect()
    gc.freeze()


async def serve(config_path: str | None) -> None:
    cfg = load_checked_config(config_path)
    engine = make_engine(database_url(cfg))
    prepare_database(engine)
    sessions = make_sessionmaker(engine)
    rt = build_runtime(cfg)
    loop = asyncio.get_running_loop()

    writer = IngestWriter(sessions)
    health = Health()  # every supervised task's state, for /healthz
    supervisor = Supervisor(health)
    outbox = OutboxWorker(sessions, make_transport(cfg), rt.clock, cfg.outbound.max_attempts,
                          send_timeout=cfg.outbound.timeout_seconds, health=health.task("outbox"),
                          journal_dir=Path(cfg.data_dir),
                          runtime=lambda: committer.runtime)  # the templates a reload swaps in
    writer.after_commit = lambda: loop.call_soon_threadsafe(outbox.wake.set)
    writer.start()
    processes = default_processes() if cfg.smtp.parse_processes is None else cfg.smtp.parse_processes
    spool = cfg.data_dir / "spool"
    listening = bind_smtp_sockets(cfg.smtp.listen)
    committer = Committer(rt, writer)
    commit = replying(committer.commit)  # the commit step of every SMTP handler, here or in a worker
    parser: ParsePool | None = None
    servers: list[asyncio.Server] = []
    protection = cfg.protection  # SPEC §11's limits, as they are at start (a reload keeps them)
    limits = SessionLimits(protection.max_smtp_sessions, protection.max_smtp_sessions_per_client,
                           protection.smtp_idle_timeout_seconds)

    async def parse_here(raw: bytes | Path | OSError) -> ParsedMail:
        """The workers' parse, in a thread of this process: SMTP without worker processes."""
        now = committer.runtime
        return await asyncio.to_thread(parse_received, raw, str(now.raw_store.root), str(now.attachment_store.root),
                                       now.config.protection.max_mime_parts)

    def accepted(base: str) -> bool:  # the workers' RCPT check, on the runtime a reload swaps in
        return base.lower() in committer.runtime.accepted_addresses

    async def serve_smtp_here(socks: list[socket.socket]) -> None:
        servers.extend(await start_smtp_servers(MaildHandler(accepted, parse_here, commit), socks,
                                                cfg.server.hostname, cfg.smtp.max_message_bytes, spool,
                                                gate=SessionGate(limits)))

    if processes > 0:  # the workers serve SMTP, parse, and hand the mail to this process to commit
        smtp = SmtpInWorkers(listening, cfg.server.hostname, cfg.smtp.max_message_bytes, str(spool),
                             rt.accepted_addresses, gate=SessionGate.shared(limits, processes))
        parser = ParsePool(processes, rt.raw_store.root, rt.attachment_store.root, smtp=smtp, commit=commit,
                           serve_here=serve_smtp_here, max_parts=protection.max_mime_parts)
    loop.set_default_executor(ThreadPoolExecutor(max_workers=64, thread_name_prefix="maild-io"))
    await asyncio.to_thread(settle, rt)
    clear_spool(spool)
    if parser is not None:
        await parser.start()
    supervisor.start("outbox", outbox.run)
    pollers = [ImapPoller(m, committer, sessions, rt.clock, parser) for m in cfg.mailboxes if m.imap is not None]
    for poller in pollers:
        health.tasks[poller.state_key] = poller.task_health
        supervisor.start(poller.state_key, functools.partial(poll_mailbox, poller, supervisor))
    sla_incident = Incident(health.task("sla-timer"), log, failing="sla timer failed",
                            recovered="sla timer works again")
    supervisor.start("sla-timer", lambda: sla_timer(committer, supervisor, sla_incident))
    housekeeping = [p.state_key for p in pollers] + ["sla-timer"]
    stop = asyncio.Event()

    def reload() -> None:
        """SIGHUP: the same checks as `check-config` (a file with a template that does not render
        is refused whole); what only a restart can change is logged as such and kept running."""
        running = committer.runtime.config
        try:
            new_cfg, needs_restart = keep_restart_only(running, load_checked_config(config_path))
            new_rt = build_runtime(new_cfg, rt.clock)
            problems = render_all_templates(new_cfg, new_rt.renderer)
            if problems:
                raise ConfigError(problems)
        except ConfigError as e:
            log.error("reload refused, running config kept", problems=e.problems)
            return
        except OSError as e:
            log.error("reload refused, running config kept", error=str(e))
            return
        committer.swap_runtime(new_rt)
        if parser is not None:
            parser.set_mailboxes(new_rt.accepted_addresses)
        if needs_restart:  # said apart, so nobody reads "reloaded" and thinks these took effect
            log.warning("config change needs a restart, running values kept", keys=needs_restart,
                        source=new_cfg.source)
            log.info("rest of the config and the templates reloaded", source=new_cfg.source)
        else:
            log.info("config reloaded", source=new_cfg.source)

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    if config_path is not None:
        loop.add_signal_handler(signal.SIGHUP, reload)
    if parser is not None:
        await parser.serve_smtp()
    else:
        await serve_smtp_here(listening)
    log.info("maild running", listen=cfg.smtp.listen, database=engine.url.render_as_string(),
             outbound=cfg.outbound.url, mailboxes=[m.address for m in cfg.mailboxes],
             config=cfg.source, data_dir=str(Path(cfg.data_dir)))
    sd_notify("READY=1")
    watchdog = asyncio.create_task(watchdog_pings(), name="watchdog")
    await stop.wait()
    sd_notify("STOPPING=1")
    watchdog.cancel()

    log.info("stopping: no new connections, finishing mail in flight")
    for s in servers:
        s.close()
    supervisor.stop()  # from here a supervised task that ends is not started again
    for poller in pollers:
        poller.stop()
    await supervisor.wait(housekeeping, timeout=30)
    for poller in pollers:
        await asyncio.to_thread(poller.close)
    for s in servers:
        await s.wait_closed()
    if parser is not None:
        await parser.close()  # workers serving SMTP finish their mail first
    for sock in listening:
        refuse_waiting(sock, cfg.server.hostname)  # queued since the workers stopped: 421, not a reset
        sock.close()
    await asyncio.to_thread(writer.stop)
    outbox.stop()  # the send in flight finishes (bounded by its timeout); claimed rows go back
    await supervisor.wait(["outbox"], timeout=cfg.outbound.timeout_seconds + 10)
    engine.dispose()
    log.info("stopped")
