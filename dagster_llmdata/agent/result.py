"""What one proposal run produced: its plan-and-verify rounds and the result the CLI, the report
and the `agent_proposals` asset show."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dagster_llmdata.agent.dry_run import DryRun
from dagster_llmdata.agent.planner import Finding
from dagster_llmdata.agent.profile import Profile


@dataclass
class Round:
    """One plan-and-verify round, as the report shows it."""

    round: int
    planner: str
    spec: Any = None
    notes: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    dry_run: DryRun | None = None
    raw_answer: str | None = None

    @property
    def failed(self) -> list[Finding]:
        return [f for f in self.findings if not f.passed]

    def to_dict(self) -> dict:
        return {"round": self.round, "planner": self.planner, "spec": self.spec, "notes": self.notes,
                "findings": [f.to_dict() for f in self.findings], "dry_run": self.dry_run.to_dict() if self.dry_run else None,
                "raw_answer": self.raw_answer[:4000] if self.raw_answer else None}


@dataclass
class ProposalResult:
    name: str
    status: str  # verified | rejected | failed
    reasons: list[str] = field(default_factory=list)
    intent: dict = field(default_factory=dict)
    goals: dict = field(default_factory=dict)
    profile: Profile | None = None
    rounds: list[Round] = field(default_factory=list)
    spec_path: str | None = None
    report_path: str | None = None
    dry_run_dir: str | None = None
    seconds: float = 0.0
    approved: dict | None = None

    @property
    def ledger(self) -> dict:
        last = self.rounds[-1].dry_run if self.rounds and self.rounds[-1].dry_run else None
        return last.ledger if last else {}

    def summary(self) -> dict:
        """What `llmdata agent propose` prints."""
        return {"name": self.name, "status": self.status, "reasons": self.reasons, "spec_path": self.spec_path,
                "report_path": self.report_path, "dry_run_dir": self.dry_run_dir, "ledger": self.ledger,
                "rounds": len(self.rounds), "seconds": round(self.seconds, 2), "approved": self.approved}

    def to_dict(self) -> dict:
        return {**self.summary(), "intent": self.intent, "goals": self.goals,
                "profile": self.profile.to_dict() if self.profile else None, "history": [r.to_dict() for r in self.rounds]}
