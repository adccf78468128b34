"""LLM review of hard samples (issue #3): prompt, strict answer parsing, cache, and the concurrent reviewer.

Imports the openai client: keep it out of the pure decision core (backend.decision).
"""

from .cache import CachedAnswer, LRUCache, SqlCache, TieredCache, cache_key, create_cache_table
from .parse import ParsedAnswer, parse_answer
from .prompt import PROMPT_VERSION, build_messages, response_schema
from .reviewer import Reviewer, ReviewerConfig, ReviewItem, ReviewResult, forget_endpoint_capabilities

__all__ = [
    "PROMPT_VERSION",
    "CachedAnswer",
    "LRUCache",
    "ParsedAnswer",
    "ReviewItem",
    "ReviewResult",
    "Reviewer",
    "ReviewerConfig",
    "SqlCache",
    "TieredCache",
    "build_messages",
    "cache_key",
    "create_cache_table",
    "forget_endpoint_capabilities",
    "parse_answer",
    "response_schema",
]
