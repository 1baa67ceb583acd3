"""The Celery application. Embedded default: kombu's filesystem transport (no server);
production: Redis. Settings come from the SYNGEO_* environment."""

from __future__ import annotations

from celery import Celery

from syngeo.settings import get_settings

QUEUE = "syngeo"


def make_celery() -> Celery:
    settings = get_settings()
    app = Celery("syngeo", broker=settings.resolved_broker_url, include=["syngeo.worker.tasks"])
    app.conf.update(
        task_default_queue=QUEUE,
        # A task whose worker dies is delivered again (and its run requeued at once by the
        # run's heartbeat process: Redis would redeliver only after its visibility timeout).
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=settings.task_soft_time_limit_s,
        task_time_limit=settings.task_hard_time_limit_s,
        task_ignore_result=True,  # status and results live in the database, not a backend
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    if app.conf.broker_url.startswith("filesystem"):
        folder = settings.broker_folder / "queue"
        folder.mkdir(parents=True, exist_ok=True)
        app.conf.broker_transport_options = {
            "data_folder_in": str(folder), "data_folder_out": str(folder),
            "control_folder": str(settings.broker_folder / "control"),
        }
        (settings.broker_folder / "control").mkdir(parents=True, exist_ok=True)
    return app


celery_app = make_celery()


def enqueue(run_id: str) -> None:
    """Send a run's task message. Sending one twice is harmless: the second is skipped."""
    celery_app.send_task("syngeo.run_experiment", args=[run_id])
