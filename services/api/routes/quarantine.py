"""/v1 quarantine routes."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
