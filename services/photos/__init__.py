"""The `photos` worker (CPU, image extras "server,faces"): the face check of uploads (checks.py), the
pose of pose photos (poses.py), erasure of a user (erasure.py) and the retention sweep
(retention.py). Imports no other service and no ML stack (.importlinter)."""
