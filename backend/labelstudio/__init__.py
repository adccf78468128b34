"""Label Studio: its label config (what a project asks for) and its API (pushing predictions, webhooks)."""
