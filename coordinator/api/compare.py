"""Two devices, libraries or campaigns side by side (bnnbench.compare)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from bnnbench import compare as logic
from bnnbench.schemas import INT64_MAX, Endpoint
from coordinator import compare
from coordinator.api.deps import admin, get_ctx

router = APIRouter(tags=["results"], dependencies=[Depends(admin)])


@router.get(Endpoint.RESULTS_COMPARE)
def compare_results(
    request: Request,
    a: str = Query(..., description="selector of side A, e.g. device=3 or library=native"),
    b: str = Query(..., description="selector of side B, e.g. device=5 or library=lce"),
    alpha: float = Query(logic.ALPHA, gt=0, lt=1, description="significance level (Holm)"),
    resamples: int = Query(logic.RESAMPLES, ge=99, le=100_000),
    seed: int = Query(logic.SEED, ge=0, le=INT64_MAX),
) -> dict[str, Any]:
    """Per cell both sides match (arch, algorithm, threads, and device / library unless both
    selectors name one): both medians, their ratio B/A and the p-value of the difference
    from the raw samples (Mann-Whitney U, p-value by permutation; named in ``test``).
    Selector keys: device, library, model, jobs (an id range: a campaign), after, before."""
    return compare.compare(get_ctx(request).db, a, b, resamples=resamples, seed=seed, alpha=alpha)
