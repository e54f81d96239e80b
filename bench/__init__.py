"""maild's benchmark (`python -m bench`, `make bench`): what ingest costs next to the physical limit.

The SMTP part drives a do-nothing aiosmtpd and then `maild run` with the same generated mail,
so the ratio says how much of the machine's SMTP capacity maild's storage and outbox leave,
then maild again at half its top rate for the latency a carried load sees; the memory part
sends one mail with a 25 MB attachment and reads how far maild's RSS grows; the IMAP part
measures how fast a hosted mailbox's backlog drains. Loopback only, bounded in
count and time; dev tooling, so it reuses the test helpers in tests/support.
"""
