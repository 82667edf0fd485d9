"""Every /v1 router. A service's routes are added here, one line each."""

from fastapi import APIRouter

from services.gateway.api.routes import auth, jobs, likenesses, me, photos, portraits, poses, system

api_router = APIRouter(prefix="/v1")
api_router.include_router(auth.router)
api_router.include_router(me.router)
api_router.include_router(photos.router)
api_router.include_router(jobs.router)
api_router.include_router(system.router)
api_router.include_router(likenesses.router)
api_router.include_router(poses.router)
api_router.include_router(portraits.router)
api_router.include_router(portraits.styles_router)
