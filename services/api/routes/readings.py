"""/v1 readings routes."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
