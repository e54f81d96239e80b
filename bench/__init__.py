"""maild's benchmark (`python -m bench`, `make bench`): what ingest costs next to the physical limit.

The SMTP part drives a do-nothing aiosmtpd and then `maild run` with the same generated mail,
so the ratio says how much of the machine's SMTP capacity maild's storage and outbox leave;
the IMAP part measures how fast a hosted mailbox's backlog drains. Loopback only, bounded in
count and time; dev tooling, so it reuses the test helpers in tests/support.
"""
