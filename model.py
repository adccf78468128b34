"""The Label Studio ML-backend convention: the model class lives in `model.py` at the project's root.

AutoAnnotator composes setup / predict / fit in `backend/service.py`; this is the name Label Studio sees
(`model_class` in /health).
"""

from backend.service import AnnotationService


class AutoAnnotatorModel(AnnotationService):
    """setup / predict / fit for Label Studio: see `backend.service.AnnotationService`."""


__all__ = ["AutoAnnotatorModel"]
