"""Continual learning: corrections from Label Studio fine-tune the specialists in stages.

Issue #4 builds the queue, policy and gated promotion here. Today the webhook records every event
durably (backend/store.py) so nothing an annotator does before that lands is lost.
"""
