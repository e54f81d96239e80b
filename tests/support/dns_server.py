"""A tiny authoritative DNS server on loopback UDP answering TXT records we give it: how the
tests let maild look up a DKIM key without the internet."""

from __future__ import annotations

import socket
import threading

import dns.message
import dns.rdataclass
import dns.rdatatype
import dns.rrset


class TxtServer:
    def __init__(self, records: dict[str, str]):
        self.records = {k.rstrip(".").lower(): v for k, v in records.items()}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.queries: list[str] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            for q in query.question:
                name = q.name.to_text().rstrip(".").lower()
                self.queries.append(name)
                if q.rdtype == dns.rdatatype.TXT and name in self.records:
                    value = self.records[name]
                    chunks = " ".join(f'"{value[i:i + 250]}"' for i in range(0, len(value), 250))
                    response.answer.append(dns.rrset.from_text(q.name, 60, dns.rdataclass.IN, dns.rdatatype.TXT,
                                                               chunks))
            self.sock.sendto(response.to_wire(), peer)

    def stop(self) -> None:
        self.sock.close()
