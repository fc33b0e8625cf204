"""agent-dispatcher: the global dispatcher for fleets of long-running LLM agents."""

__version__ = "0.1.0"
