"""The one place a served app is wired: the HTTP face over the Label Studio model class (root `model.py`)."""

from __future__ import annotations

from flask import Flask

from backend.http.app import create_app
from backend.settings import Settings


def build_app(settings: Settings) -> Flask:
    from model import AutoAnnotatorModel

    return create_app(settings, AutoAnnotatorModel(settings))
