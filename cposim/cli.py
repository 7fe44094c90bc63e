"""Process lifecycle: start the simulator, print READY, handle SIGTERM/SIGINT, shut down cleanly."""

from __future__ import annotations

import signal
import sys
import threading
from typing import TextIO

from .common import log
from .config import SimConfig, build_parser, config_from_options
from .server import Simulator


def run(cfg: SimConfig, out: TextIO | None = None) -> int:
    """Run until SIGTERM/SIGINT; prints `TOKEN_A <token>` then `READY <versions url>` on stdout."""
    out = out or sys.stdout
    stop = threading.Event()
    sim = Simulator(cfg)
    base = sim.start()

    def on_signal(signum: int, _frame: object) -> None:
        log(f"signal {signum}: shutting down")
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    counts = sim.store.counts()
    log(
        f"{cfg.name} {cfg.country_code}/{cfg.party_id} profile {cfg.tariff_profile}: "
        f"{counts['locations']} locations, {counts['evses']} EVSEs, {counts['tariffs']} tariffs"
    )
    if cfg.hub:
        log(f"a hub fronting {', '.join(f'{cc}*{pid}' for cc, pid in cfg.hub)}: the catalogue is dealt out to them")
    out.write(f"TOKEN_A {sim.store.token_a}\n")
    out.write(f"READY {base}/ocpi/versions\n")
    out.flush()
    if cfg.register_with:
        if not cfg.register_token:
            log("--register-with needs --register-token (the eMSP's Token A)")
        else:

            def done() -> None:
                out.write(f"REGISTERED {cfg.register_with}\n")
                out.flush()

            sim.register_in_background(cfg.register_with, cfg.register_token, done)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    sim.stop()
    log("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m cposim`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = config_from_options(vars(args))
    except ValueError as exc:
        parser.error(str(exc))
    return run(cfg)
