"""Console pages for settlement (finance): periods per CPO, reconciliation and exports."""

from __future__ import annotations
