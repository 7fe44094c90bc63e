"""The PDF documents we issue and number (billing/services/documents.py): driver receipts and credit notes
(`receipt.py`), BAP and CPO settlement statements (`statements.py`), all in one layout (`layout.py`)."""

from __future__ import annotations

from billing.documents.layout import Content, Issuer, render
from billing.documents.receipt import receipt_content
from billing.documents.statements import bap_statement_content, cpo_net_payable, cpo_statement_content

__all__ = [
    "Content",
    "Issuer",
    "bap_statement_content",
    "cpo_net_payable",
    "cpo_statement_content",
    "receipt_content",
    "render",
]
