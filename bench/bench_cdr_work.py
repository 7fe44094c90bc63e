"""Benchmark: the bulk worker's CPU for one CDR, in one process: the processing (audit, driver's receipt, ledger,
booking) and the numbered PDF receipt, each timed apart.

Usage: .venv/bin/python bench/bench_cdr_work.py [--cdrs 200] [--rounds 3] [--profile process|receipt]

The soak's CDRs (bench/bench_soak.py: one of our tokens at the soak CPO's EVSE, one charging period, the CPO's
tariff) are POSTed to the OCPI CDRs endpoint through emsp.wsgi, then handed to what the bulk worker's two tasks
run: `billing.services.audit.cdr_process` and `billing.tasks.issue_receipt`. Printed per round:
CPU (time.process_time, the client side of the database calls included), wall time and SQL statements per CDR
for each, and the PostgreSQL backend's CPU (/proc). `--profile` prints cProfile (process CPU as its clock) of
one of the two over the last round.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import time
from datetime import UTC, datetime, timedelta

from bench_ocpi_calls import backend_cpu, environ
from django_env import machine, setup


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cdrs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", choices=("process", "receipt"))
    args = parser.parse_args()
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/9")  # the CDR POST queues its processing there
    setup(fresh=True, name="emsp_bench_cdr")
    import bench_soak
    from django.db import connection

    from billing.models import Cdr, DriverReceipt
    from billing.services import ledger
    from billing.services.audit import cdr_process
    from billing.tasks import issue_receipt
    from emsp.wsgi import application

    ledger.remember_accounts_for_this_process()  # as billing/tasks.py does in each worker process
    data = bench_soak.seed(200, 200)
    statements = [0]

    def counted(execute, sql, params, many, context):  # counts without Django's debug cursor (it mogrifies)
        statements[0] += 1
        return execute(sql, params, many, context)

    tokens = data["tokens"]

    def post(n: int) -> int:
        cdr_id = f"BENCH-{n:07d}"
        body = bench_soak.cdr_body(cdr_id, tokens[n % len(tokens)], f"L{(n % 100) * 2 + 1:05d}", 1 + n % 30,
                                   datetime.now(UTC) - timedelta(minutes=10))  # fmt: skip
        request = environ("POST", "/ocpi/emsp/2.2.1/cdrs", body)
        request["HTTP_AUTHORIZATION"] = bench_soak.OCPI_HEADERS["Authorization"]  # the soak CPO's token
        statuses: list[str] = []
        answer = application(request, lambda status, headers, exc_info=None: statuses.append(status))
        b"".join(answer)
        getattr(answer, "close", lambda: None)()
        if not statuses[0].startswith("201") and not statuses[0].startswith("200"):
            raise SystemExit(f"CDR POST answered {statuses[0]}")
        return Cdr.objects.get(cdr_id=cdr_id).pk

    print(machine())
    print(f"{args.cdrs} soak-shaped CDRs a round, {args.rounds} rounds (the first warms caches and is not printed)")
    n = 0
    for round_ in range(args.rounds + 1):
        ids = []
        for _ in range(args.cdrs):
            ids.append(post(n))
            n += 1
        figures = {}
        receipts: list[int] = []
        for stage in ("process", "receipt"):
            if stage == "receipt":  # the receipts the processing made, as the tasks it queued name them
                receipts = list(DriverReceipt.objects.filter(cdr_id__in=ids).values_list("pk", flat=True))
                if len(receipts) != len(ids):
                    raise SystemExit(f"{len(ids) - len(receipts)} CDRs have no driver's receipt")
            profile = cProfile.Profile(time.process_time) if args.profile == stage and round_ == args.rounds else None
            pg = backend_cpu()  # its own query, outside the count and the clocks
            statements[0] = 0
            with connection.execute_wrapper(counted):
                wall, cpu = time.perf_counter(), time.process_time()
                if profile:
                    profile.enable()
                for pk in ids if stage == "process" else receipts:
                    if stage == "process":
                        cdr_process(pk)
                    else:
                        issue_receipt(pk)  # the task's own body, run here
                if profile:
                    profile.disable()
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            pg = backend_cpu() - pg
            figures[stage] = (cpu, wall, pg, statements[0])
            if profile:
                out = io.StringIO()
                pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(45)
                print(out.getvalue())
        if round_ == 0:
            continue
        per = lambda x: x * 1000 / args.cdrs  # noqa: E731
        print(f"round {round_}: " + "; ".join(
            f"{stage} CPU {per(cpu):.2f} ms, wall {per(wall):.2f} ms, PostgreSQL {per(pg):.2f} ms, "
            f"{count / args.cdrs:.1f} statements" for stage, (cpu, wall, pg, count) in figures.items()
        ) + " a CDR")  # fmt: skip


if __name__ == "__main__":
    main()
