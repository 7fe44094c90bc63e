"""Issued documents' PDFs (receipts, invoices: about 45 kB each) stored with lz4 on PostgreSQL. pglz tried to
compress every one and gave up (the PDF's streams are compressed already): 0.54 ms of the server's CPU a
receipt, stored whole; lz4 0.10 ms, 6 % smaller (docs/benchmarks.md; emsp/migration_ops.py says how)."""

from __future__ import annotations

from django.db import migrations

from emsp.migration_ops import CompressWithLz4


class Migration(migrations.Migration):
    dependencies = [("billing", "0012_ledger_search_path")]
    operations = [CompressWithLz4("IssuedDocument", ["pdf"])]
