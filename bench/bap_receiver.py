"""A BAP's callback endpoint for the benchmarks: it answers every on_* with an ACK and records when each arrived
(`arrived`, by message_id) and what it was (`answered`: the action, and whether it carried an error; `bodies`: the
whole callback, when asked to keep them); and `SilentReceiver`, a BAP that never answers (a hung app)."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson

ACK = b'{"message":{"ack":{"status":"ACK"}}}'


class Receiver:
    def __init__(self, keep_bodies: bool = False) -> None:
        self.arrived: dict[str, float] = {}
        self.answered: dict[str, tuple[str, bool]] = {}
        self.bodies: dict[str, dict] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real BAP's server would
            # The status line and headers, then the body, went out as two small writes: with Nagle on, the second
            # waited for the sender's delayed ACK, 40 ms on Linux, and each callback took 44 ms to answer (our
            # worker waits for that answer). A real BAP's server writes its answer at once.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                at = time.perf_counter()
                try:
                    doc = orjson.loads(body)
                    context = doc["context"]
                    receiver.answered[context["message_id"]] = (context["action"], bool(doc.get("error")))
                    if keep_bodies:
                        receiver.bodies[context["message_id"]] = doc
                    receiver.arrived[context["message_id"]] = at
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    pass
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(ACK)))
                self.end_headers()
                self.wfile.write(ACK)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/beckn"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class SilentReceiver:
    """A BAP that accepts connections, reads what is sent and never answers (a hung app server): `heard` counts
    the connections it took. Each connection is held until the sender gives up and closes it."""

    def __init__(self) -> None:
        self.heard = 0
        self._socket = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}/beckn"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._socket.accept()
            except OSError:
                return
            self.heard += 1
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    @staticmethod
    def _hold(conn: socket.socket) -> None:
        with conn:
            try:
                while conn.recv(65536):
                    pass
            except OSError:
                pass

    def close(self) -> None:
        self._socket.close()
