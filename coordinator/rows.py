"""Rows by id, filtered listings and counts of changed rows: what the routers and the queue
ask the database, with one "not found" message."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import CursorResult, Executable, Select, inspect, select
from sqlalchemy.orm import Session

from coordinator.errors import NotFound
from coordinator.models import Base

T = TypeVar("T", bound=Base)


def get_row(s: Session, cls: type[T], row_id: int) -> T:
    """The row, or 404 "<model|artifact|job|device> <id> not found"."""
    row = s.get(cls, row_id)
    if row is None:
        raise NotFound(f"{cls.__name__.lower()} {row_id} not found")
    return row


def listing(cls: type[T], **equal: Any) -> Select[T]:
    """Rows of ``cls`` in id order where each named column equals its value; a None value
    is no filter (an optional query parameter left out)."""
    q = select(cls).order_by(*inspect(cls).primary_key)
    for column, value in equal.items():
        if value is not None:
            q = q.where(getattr(cls, column) == value)
    return q


def changed(s: Session, statement: Executable) -> int:
    """Execute an UPDATE (a compare-and-set) and say how many rows it changed."""
    result = s.execute(statement)
    # a DML statement answers a CursorResult; Session.execute is typed for SELECTs
    assert isinstance(result, CursorResult)
    return result.rowcount
