"""Hard samples after the vote: triage between auto, LLM and people (inline), and the asynchronous review's jobs."""
