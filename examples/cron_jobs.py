"""Cron jobs: a nightly cleanup at 2:30 and a report at 9:00 on weekdays.

Both are declared in code with `declare_job`: at every start they are created if missing
and updated if the code changed, however many workers start at once, and each tick runs
in one worker only.

    JOBPOLLER_TIMEZONE=Europe/Paris python examples/cron_jobs.py

The triggers name no time zone, so they follow the `timezone` setting (UTC by default).
"""

from datetime import UTC, datetime, timedelta

import uvicorn
from fastapi import FastAPI

from fastapi_jobpoller import CronTrigger, JobPoller, mount_scheduler

# Stands in for the app's own data: log entries with their time, newest last.
log_entries: list[datetime] = []

poller = JobPoller()  # reads the JOBPOLLER_* settings now


@poller.job_function()
def cleanup_old_logs(older_than_days: int) -> int:
    """Delete log entries older than the given age; return how many went."""
    cutoff = datetime.now(UTC) - timedelta(days=older_than_days)
    kept = [entry for entry in log_entries if entry >= cutoff]
    deleted = len(log_entries) - len(kept)
    log_entries[:] = kept
    return deleted  # stored as the result of the run


@poller.job_function()
async def daily_report() -> dict[str, int]:
    """Summarise the logs; an `async def` job runs on the app's event loop."""
    return {"log_entries": len(log_entries)}


poller.declare_job(
    "daily_cleanup",
    "cleanup_old_logs",
    CronTrigger(hour=2, minute=30),
    arguments={"older_than_days": 30},
)
poller.declare_job(
    "daily_report",
    "daily_report",
    # Names, not numbers, for days: APScheduler counts Monday as 0, crontab Sunday.
    CronTrigger(day_of_week="mon-fri", hour=9, minute=0),
)

app = FastAPI(title="Cron jobs")
mount_scheduler(app, poller)  # the jobs exist once the app has started


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=8000)
