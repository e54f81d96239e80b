"""Moved to maild.sla_clocks: storage imports no rules (issue 22 §2), and the clocks need the
SLA arithmetic of rules.sla. Re-exported here only until ingest.pipeline and casework import
from maild.sla_clocks; then delete this module."""

from maild.sla_clocks import DONE_STAGES as DONE_STAGES
from maild.sla_clocks import apply_contract as apply_contract
from maild.sla_clocks import due_sla_events as due_sla_events
from maild.sla_clocks import follow_sla as follow_sla
from maild.sla_clocks import start_sla as start_sla
