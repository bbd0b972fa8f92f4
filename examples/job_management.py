"""Manage scheduled jobs at runtime: add, read, pause, resume, reschedule, list, remove.

    python examples/job_management.py

Each step prints what the job looks like afterwards. The management API does the same
over HTTP (`POST /jobpoller/jobs`, `POST /jobpoller/jobs/{id}/pause`, ...), and every
change made through one process is seen by all the others, since jobs live in the
database.
"""

import asyncio

from fastapi_jobpoller import IntervalTrigger, JobInfo, JobNotFoundError, JobPoller

poller = JobPoller()  # reads the JOBPOLLER_* settings now


@poller.job_function()
def refresh_exchange_rates(currency: str) -> str:
    return f"rates for {currency} refreshed"


def show(step: str, job: JobInfo) -> None:
    trigger = job.trigger
    every = f"{trigger.period_seconds:g} s" if isinstance(trigger, IntervalTrigger) else trigger
    when = job.next_run_at.isoformat(timespec="seconds") if job.next_run_at else "never"
    print(
        f"{step:<11} {job.id}: every {every} with {job.arguments}, "
        f"paused={job.paused}, next run {when}"
    )


async def main() -> None:
    async with poller:
        # Add: the id is yours; replace_existing overwrites a job stored under it.
        job = await poller.add_job(
            "refresh_exchange_rates",
            IntervalTrigger(minutes=1),
            arguments={"currency": "EUR"},
            job_id="rates-eur",
            replace_existing=True,
        )
        show("added", job)

        # Read: our own model, with the trigger as it is stored.
        job = await poller.get_job("rates-eur")
        show("read", job)

        # Pause: the job stays stored, with no next run, until it is resumed.
        show("paused", await poller.pause_job("rates-eur"))

        # Resume: it goes on from its next tick after now; missed ticks are not run.
        show("resumed", await poller.resume_job("rates-eur"))

        # Reschedule: a new trigger restarts the schedule from now.
        show("rescheduled", await poller.reschedule_job("rates-eur", IntervalTrigger(minutes=2)))

        # Change other fields: the arguments, the limits.
        show("modified", await poller.modify_job("rates-eur", arguments={"currency": "USD"}))

        # List: every stored job, ordered by id, a page at a time.
        for listed in await poller.list_jobs(limit=100):
            show("listed", listed)

        # Remove: the job goes; the record of its past runs stays.
        await poller.remove_job("rates-eur")
        try:
            await poller.get_job("rates-eur")
        except JobNotFoundError as error:
            print(f"removed     {error}")


if __name__ == "__main__":
    asyncio.run(main())
