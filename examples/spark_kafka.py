"""Submit a job to a Spark-like service, poll it with backoff and a timeout, publish the end.

Each request submits work to the outside service and starts a poll keyed by the request
id. The poll checks the service's status, waiting longer between checks as the job runs
on (backoff), and gives up at the request's timeout. However the poll ends (succeeded,
failed, timed out or cancelled) its terminal callback publishes one message to Kafka.

    python examples/spark_kafka.py

Messages go to an in-memory publisher unless KAFKA_BOOTSTRAP_SERVERS is set; then they
go to that Kafka cluster through aiokafka, which you install yourself
(`pip install aiokafka`): this example imports it only in that case.
"""

import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from fastapi_jobpoller import (
    Done,
    Failed,
    JobPoller,
    Pending,
    PollInfo,
    PollNotFoundError,
    mount_scheduler,
)

TOPIC = "spark-job-results"

# -- the outside service ---------------------------------------------------------------


@dataclass
class FakeSparkJob:
    stages: int
    fails: bool
    checks: int = 0


class FakeSparkService:
    """Stands in for a Spark submission API (Livy, a Spark operator, a vendor's REST API).

    A job runs for `stages` status checks, then succeeds, or fails if asked to; it is
    in-process and deterministic, so the example runs anywhere.
    """

    def __init__(self) -> None:
        self._jobs: dict[str, FakeSparkJob] = {}

    def submit(self, *, stages: int, fails: bool) -> str:
        spark_job_id = f"spark-{uuid.uuid4().hex[:12]}"
        self._jobs[spark_job_id] = FakeSparkJob(stages=stages, fails=fails)
        return spark_job_id

    def status(self, spark_job_id: str) -> dict[str, Any]:
        job = self._jobs[spark_job_id]  # a KeyError is a transient error to the poll
        job.checks += 1
        if job.checks < job.stages:
            return {"state": "RUNNING", "stage": job.checks, "stages": job.stages}
        if job.fails:
            return {"state": "FAILED", "message": "executor lost"}
        return {"state": "FINISHED", "output": f"s3://results/{spark_job_id}/"}


# -- where results go -------------------------------------------------------------------


class Publisher(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def publish(self, topic: str, key: str, value: dict[str, Any]) -> None: ...


@dataclass
class InMemoryPublisher:
    """Keeps the messages in a list: for development and tests."""

    messages: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def publish(self, topic: str, key: str, value: dict[str, Any]) -> None:
        self.messages.append((topic, key, value))


class KafkaPublisher:
    """Publishes to Kafka with aiokafka, imported only when this publisher starts."""

    def __init__(self, bootstrap_servers: str) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._producer: Any = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaProducer

        self._producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap_servers)
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def publish(self, topic: str, key: str, value: dict[str, Any]) -> None:
        await self._producer.send_and_wait(
            topic, key=key.encode(), value=json.dumps(value).encode()
        )


def make_publisher() -> Publisher:
    bootstrap_servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if bootstrap_servers:
        return KafkaPublisher(bootstrap_servers)
    return InMemoryPublisher()


# -- the poller -------------------------------------------------------------------------

spark = FakeSparkService()
publisher = make_publisher()
poller = JobPoller()  # reads the JOBPOLLER_* settings now


@poller.poll_function()
async def check_spark_job(spark_job_id: str) -> Pending | Done | Failed:
    # One status check. A real one would call the service's API with an async client;
    # an exception (a timeout, a 502) is a transient error and the poll goes on.
    status = spark.status(spark_job_id)
    if status["state"] == "FINISHED":
        return Done(result={"output": status["output"]})
    if status["state"] == "FAILED":
        return Failed(reason=status["message"])
    return Pending(progress={"stage": status["stage"], "of": status["stages"]})


@poller.callback()
async def publish_outcome(poll: PollInfo) -> None:
    # Called once the poll has ended, however it ended. Delivery is at least once (it is
    # called again if it raises or its process dies first), so the message is keyed by
    # the request id: consumers can drop a repeat.
    await publisher.publish(
        TOPIC,
        key=poll.id,
        value={
            "request_id": poll.id,
            "spark_job_id": poll.arguments["spark_job_id"],
            "state": poll.state.value,
            "result": poll.result,
            "error": poll.error,
            "checks": poll.attempts,
        },
    )


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # The host's lifespan wraps the poller's: the publisher is up before the first
    # callback and closes only after the poller has stopped.
    await publisher.start()
    try:
        yield
    finally:
        await publisher.stop()


app = FastAPI(title="Spark jobs", lifespan=lifespan)
mount_scheduler(app, poller)


class SparkJobRequest(BaseModel):
    stages: int = Field(default=3, ge=1, description="How long the fake job runs.")
    fails: bool = Field(default=False, description="Make the fake job fail.")
    timeout_seconds: float = Field(default=3600, gt=0, description="When to stop waiting.")


class SparkJobAccepted(BaseModel):
    request_id: str
    spark_job_id: str


@app.post("/spark-jobs", response_model=SparkJobAccepted, status_code=202)
async def submit_spark_job(request: SparkJobRequest) -> SparkJobAccepted:
    spark_job_id = spark.submit(stages=request.stages, fails=request.fails)
    request_id = uuid.uuid4().hex
    await poller.start_poll(
        "check_spark_job",
        {"spark_job_id": spark_job_id},
        poll_id=request_id,
        # First check at once, then after the default interval (30 s unless
        # JOBPOLLER_DEFAULT_POLL_INTERVAL says otherwise), doubling each time up to 5 min.
        backoff_factor=2,
        max_interval=300,
        timeout=request.timeout_seconds,
        callbacks=("publish_outcome",),
    )
    return SparkJobAccepted(request_id=request_id, spark_job_id=spark_job_id)


@app.get("/spark-jobs/{request_id}")
async def spark_job_status(request_id: str) -> dict[str, Any]:
    try:
        poll = await poller.get_poll(request_id)
    except PollNotFoundError:
        raise HTTPException(status_code=404, detail="unknown request id") from None
    return {"state": poll.state, "progress": poll.progress, "result": poll.result}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=8000)
