"""helpdesk-triage: AI triage for the helpdesk you already run."""

__version__ = "0.1.0"
