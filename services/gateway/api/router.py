"""Every /v1 router. A service's routes are added here, one line each.

The order is the order FastAPI tries them in: the routes polled most (job status, the account) come
first, so a status request does not walk every other router's patterns first. Prefixes do not
overlap, so the order changes nothing else."""

from fastapi import APIRouter

from services.gateway.api.routes import auth, jobs, likenesses, me, photos, portraits, poses, system

api_router = APIRouter(prefix="/v1")
api_router.include_router(jobs.router)
api_router.include_router(me.router)
api_router.include_router(auth.router)
api_router.include_router(photos.router)
api_router.include_router(system.router)
api_router.include_router(likenesses.router)
api_router.include_router(poses.router)
api_router.include_router(portraits.router)
api_router.include_router(portraits.styles_router)
