"""Human approval for actions beyond an agent's authority, run exactly once when approved (docs/approvals.md).

The public API: :class:`ApprovalDesk` (open, list, inspect, decide; run through an :class:`ActionRunner`),
:class:`ApprovalRequest`, the :class:`Approval` table and its :class:`ApprovalStatus`, and the views tools return.
"""

from server.approvals.desk import ActionRunner, ApprovalDesk, Execution
from server.approvals.models import Approval, ApprovalStatus
from server.approvals.store import ApprovalRequest, stored_arguments
from server.approvals.views import ApprovalDetail, ApprovalState, ApprovalSummary

__all__ = [
    "ActionRunner",
    "Approval",
    "ApprovalDesk",
    "ApprovalDetail",
    "ApprovalRequest",
    "ApprovalState",
    "ApprovalStatus",
    "ApprovalSummary",
    "Execution",
    "stored_arguments",
]
